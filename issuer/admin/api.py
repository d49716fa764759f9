"""The admin REST API, ``/admin/v1``: a thin HTTP face over :class:`AdminService`.

Each route is one entry of :data:`ROUTES`, which also feeds the OpenAPI
document, so a route cannot exist without its description. Requests carry
``Authorization: Bearer <admin key>``; ``auditor`` keys may call the routes
marked ``read``, ``admin`` keys every route. Bodies are strict JSON
(:mod:`.inputs`) validated by the pydantic models of :mod:`.schemas`; semantic
errors come from the service layer, exactly as the CLI gets them. The path and
the query are checked for NUL and lone surrogates before the key is looked up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, request, stream_with_context
from pydantic import BaseModel

from ..errors import (
    AdminForbidden,
    AdminUnauthorized,
    ConfigurationError,
    InvalidRequest,
    UnknownObject,
    admin_error,
)
from ..request_rules import bad_characters
from ..responses import error_response, json_response
from . import schemas as m
from .credentials import AdminIdentity, SignInGuard
from .inputs import json_body
from .service import AUDIT_FILTERS, AdminService, parse_time

__all__ = ["MAX_VERSION", "PREFIX", "ROUTES", "Route", "admin_blueprint"]

PREFIX = "/admin/v1"
#: Policy documents are larger than token requests.
MAX_ADMIN_BODY = 1024 * 1024
MAX_VERSION = 2**31 - 1
_MAX_ID = 2**62
_BEARER = re.compile(r"^Bearer ([!-~]{1,200})$", re.IGNORECASE)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  #: OpenAPI style: /tools/{name}
    summary: str
    handler: Callable[..., Response]
    write: bool = False  #: admin role only
    body: type[BaseModel] | None = None
    response: str | type[BaseModel] | None = None  #: model, "ndjson", or None for a list/ad-hoc schema
    status: int = 200
    query: tuple[str, ...] = ()
    list_of: tuple[str, type[BaseModel]] | None = None  #: (key, item model) for {"key": [item, ...]}
    extra_errors: tuple[int, ...] = ()


def _service() -> AdminService:
    ctx = current_app.extensions["issuer"]
    ident: AdminIdentity = g.admin
    return AdminService(ctx.db, ctx.keys, ctx.settings, actor=ident.actor, request_id=g.get("request_id"))


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,18}", raw) or not lo <= int(raw) <= hi:
        raise InvalidRequest(f"{name}: an integer between {lo} and {hi}")
    return int(raw)


def _time_arg(name: str) -> datetime | None:
    return parse_time(request.args.get(name), name)


def _audit_filters() -> dict[str, str | None]:
    filters = {k: request.args.get(k) for k in AUDIT_FILTERS}
    if filters["decision"] not in (None, "granted", "denied"):
        raise InvalidRequest("decision: granted or denied")
    return filters


def _page(rows: list[dict[str, Any]], limit: int) -> int | None:
    return rows[-1]["id"] if len(rows) == limit else None


# ----------------------------------------------------------------------------- handlers


def list_idps() -> Response:
    return json_response({"idps": _service().list_idps()})


def add_idp() -> Response:
    b = json_body(m.IdpCreate)
    return json_response(_service().add_idp(**b.model_dump()), 201)


def get_idp(name: str) -> Response:
    return json_response(_service().get_idp(name))


def _patch(name: str, body: Any, update: Callable[..., Any], set_enabled: Callable[[str, bool], Any]) -> Response:
    """A PATCH of a registration: its fields, and ``enabled``, each only when given."""
    fields = body.model_dump(exclude={"enabled"})
    if body.enabled is None and all(v is None for v in fields.values()):
        raise ConfigurationError("give at least one field to change")
    result = update(name, **fields) if any(v is not None for v in fields.values()) else None
    if body.enabled is not None:
        result = set_enabled(name, body.enabled)
    return json_response(result)


def update_idp(name: str) -> Response:
    service = _service()
    return _patch(name, json_body(m.IdpUpdate), service.update_idp, service.set_idp_enabled)


def list_tools() -> Response:
    return json_response({"tools": _service().list_tools()})


def add_tool() -> Response:
    b = json_body(m.ToolCreate)
    return json_response(_service().add_tool(**b.model_dump()), 201)


def get_tool(name: str) -> Response:
    return json_response(_service().get_tool(name))


def update_tool(name: str) -> Response:
    service = _service()
    return _patch(name, json_body(m.ToolUpdate), service.update_tool, service.set_tool_enabled)


def overview() -> Response:
    return json_response(_service().overview())


def list_clients() -> Response:
    return json_response({"clients": _service().list_clients()})


def add_client() -> Response:
    b = json_body(m.ClientCreate)
    client, secret = _service().add_client(**b.model_dump())
    return json_response({"client": client, "client_secret": secret}, 201)


def get_client(client_id: str) -> Response:
    return json_response(_service().get_client(client_id))


def update_client(client_id: str) -> Response:
    b = json_body(m.ClientUpdate)
    service = _service()
    if b.enabled is None and b.dpop_required is None:
        raise ConfigurationError("give enabled, dpop_required or both")
    client = service.get_client(client_id)
    if b.enabled is not None:
        client = service.set_client_enabled(client_id, b.enabled)
    if b.dpop_required is not None:
        client = service.set_client_dpop_required(client_id, b.dpop_required)
    return json_response(client)


def rotate_secret(client_id: str) -> Response:
    return json_response({"client_id": client_id, "client_secret": _service().rotate_client_secret(client_id)})


def show_policy() -> Response:
    return json_response(_service().show_policy())


def apply_policy() -> Response:
    b = json_body(m.PolicyApply)
    return json_response({"version": _service().apply_policy(b.document, source=b.source)}, 201)


def list_policy_versions() -> Response:
    return json_response({"versions": _service().list_policy_versions()})


def show_policy_version(version: int) -> Response:
    if not 1 <= version <= MAX_VERSION:  # beyond what the database column holds
        raise UnknownObject(f"no policy version {version}")
    return json_response(_service().show_policy(version))


def diff_policy() -> Response:
    service = _service()
    old = _int_arg("from", 0, 1, MAX_VERSION)
    if old == 0:
        raise InvalidRequest("from: the older version is required")
    new = _int_arg("to", 0, 1, MAX_VERSION) or service.show_policy()["version"]
    return json_response(service.diff_policy(old, new))


def test_policy() -> Response:
    b = json_body(m.PolicyTest)
    return json_response(_service().test_policy(**b.model_dump()))


def list_keys() -> Response:
    return json_response({"keys": _service().list_keys()})


def rotate_keys() -> Response:
    b = json_body(m.KeyRotate)
    return json_response(_service().rotate_keys(b.alg, force=b.force))


def query_audit() -> Response:
    limit = _int_arg("limit", 100, 1, 1000)
    rows = _service().query_audit(_audit_filters(), since=_time_arg("since"), until=_time_arg("until"),
                                  after_id=_int_arg("after_id", 0, 0, _MAX_ID), limit=limit)
    return json_response({"events": rows, "next_after_id": _page(rows, limit)})


def export_audit() -> Response:
    service, filters, since, until = _service(), _audit_filters(), _time_arg("since"), _time_arg("until")

    def lines() -> Iterator[str]:
        for row in service.export_audit(filters, since=since, until=until):
            yield json.dumps(row, sort_keys=True) + "\n"

    return Response(stream_with_context(lines()), mimetype="application/x-ndjson",
                    headers={"Cache-Control": "no-store"})


def verify_audit() -> Response:
    return json_response(_service().verify_audit())


def list_changes() -> Response:
    limit = _int_arg("limit", 100, 1, 1000)
    rows = _service().list_changes(after_id=_int_arg("after_id", 0, 0, _MAX_ID), limit=limit)
    return json_response({"changes": rows, "next_after_id": _page(rows, limit)})


def revoke_jti() -> Response:
    return json_response(_service().revoke_jti(json_body(m.RevokeJti).jti))


def revoke_subject() -> Response:
    return json_response(_service().revoke_subject(json_body(m.RevokeSubject).sub))


def revoke_client() -> Response:
    return json_response(_service().revoke_client(json_body(m.RevokeClient).client_id))


def count_live() -> Response:
    args = {k: request.args.get(k) for k in ("jti", "sub", "client_id")}
    return json_response({"live": _service().count_live(**args)})


def list_admin_keys() -> Response:
    return json_response({"admin_keys": _service().list_admin_keys()})


def create_admin_key() -> Response:
    b = json_body(m.AdminKeyCreate)
    info, key = _service().create_admin_key(name=b.name, role=b.role)
    return json_response({"admin_key": info, "key": key}, 201)


def revoke_admin_key(key_id: str) -> Response:
    return json_response(_service().revoke_admin_key(key_id))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/idps", "List trusted identity providers", list_idps, list_of=("idps", m.Idp)),
    Route("POST", "/idps", "Trust an identity provider", add_idp, write=True, body=m.IdpCreate, response=m.Idp,
          status=201, extra_errors=(409,)),
    Route("GET", "/idps/{name}", "One identity provider", get_idp, response=m.Idp),
    Route("PATCH", "/idps/{name}", "Edit or disable an identity provider (name, issuer and namespace stay)",
          update_idp, write=True, body=m.IdpUpdate, response=m.Idp),
    Route("GET", "/tools", "List tools and their scopes", list_tools, list_of=("tools", m.Tool)),
    Route("POST", "/tools", "Register a tool (reachable by nobody until policy grants it)", add_tool, write=True,
          body=m.ToolCreate, response=m.Tool, status=201, extra_errors=(409,)),
    Route("GET", "/tools/{name}", "One tool", get_tool, response=m.Tool),
    Route("PATCH", "/tools/{name}", "Edit or disable a tool, or add scopes (name and resource URI stay)", update_tool,
          write=True, body=m.ToolUpdate, response=m.Tool),
    Route("GET", "/clients", "List MCP-server clients (never their secrets)", list_clients,
          list_of=("clients", m.Client)),
    Route("POST", "/clients", "Register an MCP-server client; its secret is in this answer only", add_client,
          write=True, body=m.ClientCreate, response=m.ClientCreated, status=201, extra_errors=(409,)),
    Route("GET", "/clients/{client_id}", "One client", get_client, response=m.Client),
    Route("PATCH", "/clients/{client_id}", "Enable or disable a client, or require DPoP of it", update_client,
          write=True,
          body=m.ClientUpdate, response=m.Client),
    Route("POST", "/clients/{client_id}/secret", "Rotate a client's secret (the old one stops working)",
          rotate_secret, write=True, response=m.ClientSecret),
    Route("GET", "/policy", "The active policy", show_policy, response=m.PolicyDocument),
    Route("POST", "/policy", "Validate a policy document and make it the next active version", apply_policy,
          write=True, body=m.PolicyApply, response=m.PolicyApplied, status=201),
    Route("GET", "/policy/versions", "Applied policy versions, newest first", list_policy_versions,
          list_of=("versions", m.PolicyVersion)),
    Route("GET", "/policy/versions/{version}", "One policy version", show_policy_version,
          response=m.PolicyDocument),
    Route("GET", "/policy/diff", "Unified diff between two policy versions", diff_policy, response=m.PolicyDiff,
          query=("from", "to")),
    Route("POST", "/policy/test", "What the active policy decides for one request (no token, no audit row)",
          test_policy, body=m.PolicyTest, response=m.PolicyDecision),
    Route("GET", "/overview", "Readiness, policy, keys, the last hour's decisions and the audit chain", overview,
          response=m.Overview),
    Route("GET", "/keys", "Capability signing keys (next, active, retired)", list_keys,
          list_of=("keys", m.SigningKey)),
    Route("POST", "/keys/rotate", "Start signing with the pre-published next key", rotate_keys, write=True,
          body=m.KeyRotate, response=m.KeyRotated),
    Route("GET", "/audit", "Query the audit trail, oldest first, in pages", query_audit, response=m.AuditPage,
          query=(*AUDIT_FILTERS, "since", "until", "after_id", "limit")),
    Route("GET", "/audit/export", "Every matching audit record as JSON lines", export_audit, response="ndjson",
          query=(*AUDIT_FILTERS, "since", "until")),
    Route("GET", "/audit/verify", "Check every audit record's tag, every sealed range and the admin change log",
          verify_audit, response=m.AuditVerification),
    Route("GET", "/changes", "The admin change log: who changed what, before and after", list_changes,
          response=m.ChangePage, query=("after_id", "limit")),
    Route("POST", "/revocations/jti", "Revoke one capability by its jti", revoke_jti, write=True,
          body=m.RevokeJti, response=m.Revoked),
    Route("POST", "/revocations/subject", "Revoke every capability of a user issued until now", revoke_subject,
          write=True, body=m.RevokeSubject, response=m.Revoked),
    Route("POST", "/revocations/client", "Revoke every capability with this client anywhere in its act chain",
          revoke_client, write=True, body=m.RevokeClient, response=m.Revoked),
    Route("GET", "/revocations/count", "How many live capabilities revoking this jti, sub or client_id would void",
          count_live, response=m.LiveCount, query=("jti", "sub", "client_id")),
    Route("GET", "/admin-keys", "Admin keys (never the keys themselves)", list_admin_keys,
          list_of=("admin_keys", m.AdminKey)),
    Route("POST", "/admin-keys", "Create an admin key; the key is in this answer only", create_admin_key,
          write=True, body=m.AdminKeyCreate, response=m.AdminKeyCreated, status=201),
    Route("DELETE", "/admin-keys/{key_id}", "Revoke an admin key", revoke_admin_key, write=True,
          response=m.AdminKey),
)


def _flask_path(path: str) -> str:
    return re.sub(r"\{(version)\}", r"<int:\1>", re.sub(r"\{(?!version)(\w+)\}", r"<\1>", path))


def admin_blueprint() -> Blueprint:
    bp = Blueprint("admin", __name__, url_prefix=PREFIX)
    writes = {(r.method, _flask_path(r.path)) for r in ROUTES if r.write}

    @bp.before_request
    def _authenticate() -> None:
        # Shape first, before the key is looked up: a NUL must never reach the database, not even a lookup.
        problem = bad_characters()
        if problem is not None:
            raise InvalidRequest(problem)
        if "access_token" in request.args:
            raise InvalidRequest("credentials are never accepted in the URL")
        ctx = current_app.extensions["issuer"]
        header = request.headers.get("Authorization", "")
        match = _BEARER.match(header)
        guard = SignInGuard(ctx.exchanger.limiter, ctx.metrics, "api")  # any key presented is logged and counted
        ident = guard.authenticate(ctx.db, ctx.keys.pepper(), match.group(1) if match else "",
                                   request.remote_addr or "") if header else None
        if ident is None:
            raise AdminUnauthorized()
        rule = request.url_rule.rule[len(PREFIX):] if request.url_rule else ""
        if (request.method, rule) in writes and not ident.may_write:
            raise AdminForbidden(f"the {ident.role} role may not {request.method} {PREFIX}{rule}")
        g.admin = ident
        request.max_content_length = MAX_ADMIN_BODY

    @bp.errorhandler(ConfigurationError)
    def _admin_input(e: ConfigurationError) -> Response:
        return error_response(admin_error(e))

    for r in ROUTES:
        bp.add_url_rule(_flask_path(r.path), endpoint=r.handler.__name__, view_func=r.handler, methods=[r.method])
    return bp
