"""The upstream the MCP server acts on: a tickets API and a file share, one Flask app, two tools.

It trusts nothing but capabilities, checked by the verifier SDK
(:class:`~issuer.sdk.verifier.flask.CapabilityProtect`) against the issuer's
JWKS fetched over HTTP: the audience of its own tool, the scope, the action,
and the call's arguments against the capability's constraints or call
binding. It is deliberately naive otherwise: the file share resolves ``..``
the way a filesystem would, so without the capability's constraint a
request for ``/home/alice/../bob/salary.txt`` would return bob's salary.

Every request that reaches it is remembered (:attr:`UpstreamApi.seen`), so
the demo can prove that a request refused at the issuer never arrived here.
"""

from __future__ import annotations

import posixpath
import threading
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, jsonify, request

from ..sdk.verifier import Capability, CapabilityVerifier
from ..sdk.verifier.flask import CapabilityProtect
from .world import FILES, FILES_RESOURCE, TICKETS, TICKETS_RESOURCE

__all__ = ["SeenRequest", "UpstreamApi"]


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    status: int


class UpstreamApi:
    """The Flask app (:attr:`app`) and one verifier per tool, each for its own audience."""

    def __init__(self, issuer: str) -> None:
        self.tickets_verifier = CapabilityVerifier(issuer=issuer, audience=TICKETS_RESOURCE,
                                                   allow_insecure_loopback=True)
        self.files_verifier = CapabilityVerifier(issuer=issuer, audience=FILES_RESOURCE,
                                                 allow_insecure_loopback=True)
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self.app = self._build()

    def close(self) -> None:
        self.tickets_verifier.close()
        self.files_verifier.close()

    def _build(self) -> Flask:
        app = Flask("issuer-demo-upstream")
        tickets = CapabilityProtect(self.tickets_verifier)
        files = CapabilityProtect(self.files_verifier)

        @app.after_request
        def remember(resp: Response) -> Response:
            if request.path != "/healthz":
                with self._lock:
                    self.seen.append(SeenRequest(request.method, request.path, resp.status_code))
            return resp

        @app.get("/healthz")
        def healthz() -> Response:
            return jsonify(status="ok")

        @app.get("/tickets")
        @tickets("tickets:read", action="list", arguments=lambda: {"project": request.args.get("project")})
        def list_tickets() -> Response:
            project = request.args["project"]
            rows = [{"id": t.id, "title": t.title} for t in TICKETS if t.project == project]
            return jsonify(project=project, tickets=rows, served_to=_principal(g.capability))

        @app.post("/files/read")
        @files("files:read", action="read", arguments=lambda: {"path": _json_body().get("path")})
        def read_file() -> Response | tuple[Response, int]:
            path = _json_body()["path"]
            resolved = posixpath.normpath(path)  # what a filesystem does with "..": the danger in one line
            if resolved not in FILES:
                return jsonify(error="not_found", error_description=f"no file {path}"), 404
            return jsonify(path=path, content=FILES[resolved], served_to=_principal(g.capability))

        return app


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _principal(cap: Capability) -> dict[str, Any]:
    """Who the capability says the call is for: the upstream authorizes the user, not the MCP server."""
    return {"sub": cap.sub, "actor": cap.client_id, "scopes": sorted(cap.scopes), "policy_version": cap.policy_version}
