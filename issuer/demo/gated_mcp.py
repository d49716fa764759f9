"""The helpdesk as an MCP server that holds its data itself, built with the official ``mcp`` SDK, behind the gateway.

This is the MCP server the gateway protects: it has no client registration
of its own and never talks to the issuer except to fetch its keys. It
accepts capabilities only (one line: ``token_verifier=CapabilityTokenVerifier(verifier)``),
so it learns the real user from ``sub`` and the gateway from ``act``, and
each tool re-checks the call against its capability (defence in depth: a
request that bypassed the gateway would need a capability bound to exactly
these arguments).

:attr:`GatedHelpdesk.seen` records every call a tool ran (who, acting
through whom, what) and :attr:`GatedHelpdesk.bearer_digests` the SHA-256 of
every bearer token that reached the server, so the demo and the tests can
prove the server never received a user's own token.
"""

from __future__ import annotations

import hashlib
import posixpath
import threading
from dataclasses import dataclass
from typing import Any, Final

from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.applications import Starlette

from ..sdk.verifier import CapabilityVerifier
from ..sdk.verifier.mcp import CapabilityTokenVerifier
from .world import FILES, GATED_RESOURCE, TICKETS

__all__ = ["GATED_PATH", "GATED_RESOURCE", "GatedHelpdesk", "SeenCall"]

GATED_PATH: Final = "/mcp"


@dataclass(frozen=True)
class SeenCall:
    tool: str
    sub: str
    actor: str
    arguments: dict[str, Any]
    call_bound: bool


class GatedHelpdesk:
    """The MCP server (:attr:`server`) and its Starlette app (:meth:`app`)."""

    def __init__(self, issuer: str, resource: str = GATED_RESOURCE) -> None:
        self.verifier = CapabilityVerifier(issuer=issuer, audience=resource, allow_insecure_loopback=True)
        self.capabilities = CapabilityTokenVerifier(self.verifier)
        self.seen: list[SeenCall] = []
        self.bearer_digests: set[str] = set()
        self.requests = 0  #: HTTP requests that reached the server, whatever their outcome
        self._lock = threading.Lock()
        self.server = MCPServer(
            "helpdesk-tools",
            instructions="Helpdesk tools; every call runs as the user the capability names.",
            token_verifier=self.capabilities,
            auth=AuthSettings.model_validate({"issuer_url": issuer, "resource_server_url": resource,
                                              "validate_token_resource": True}),
            log_level="WARNING",
        )
        self._register()

    def close(self) -> None:
        self.verifier.close()

    async def _authorize(self, tool: str, arguments: dict[str, Any]) -> None:
        cap = await self.capabilities.authorize_call(action=tool, arguments=arguments)
        with self._lock:
            self.seen.append(SeenCall(tool, cap.sub, cap.client_id, dict(arguments), cap.call_bound))

    def _register(self) -> None:
        server = self.server

        @server.tool()
        async def list_tickets(project: str) -> dict[str, Any]:
            """List the tickets of one project."""
            await self._authorize("list_tickets", {"project": project})
            rows = [{"id": t.id, "title": t.title} for t in TICKETS if t.project == project]
            return {"project": project, "tickets": rows}

        @server.tool()
        async def read_file(path: str) -> dict[str, Any]:
            """Read one file of the share by its absolute path."""
            await self._authorize("read_file", {"path": path})
            resolved = posixpath.normpath(path)  # naive on purpose: the capability is what keeps .. out
            if resolved not in FILES:
                raise ToolError(f"no such file: {path}")
            return {"path": path, "content": FILES[resolved]}

        @server.tool()
        async def delete_ticket(ticket_id: int) -> dict[str, Any]:
            """Delete a ticket (granted to nobody by the demo's policy)."""
            await self._authorize("delete_ticket", {"ticket_id": ticket_id})
            return {"deleted": ticket_id}

    def app(self, *, json_response: bool = False) -> Any:
        """The Streamable HTTP app, wrapped to remember a digest of every bearer token that arrives."""
        inner: Starlette = self.server.streamable_http_app(streamable_http_path=GATED_PATH,
                                                           json_response=json_response)
        seen = self.bearer_digests

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.requests += 1
                for name, value in scope.get("headers", ()):
                    if name.lower() == b"authorization":
                        token = value.decode("latin-1").partition(" ")[2]
                        seen.add(hashlib.sha256(token.encode()).hexdigest())
            await inner(scope, receive, send)

        return recording
