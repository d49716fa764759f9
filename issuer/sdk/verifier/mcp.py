"""MCP Python SDK (``mcp`` 2.x) integration: an MCP server that is itself an upstream tool.

The server's bearer middleware calls :meth:`CapabilityTokenVerifier.verify_token`
for every request; a valid capability becomes an ``AccessToken`` (client_id,
scopes, expires_at, resource = this tool's audience, subject = the real user,
claims).  Scopes listed in ``AuthSettings.required_scopes`` are enforced by the
SDK.  Tool handlers then authorize the call itself - action and arguments,
and the single use of a call-bound capability - with :meth:`authorize_call`::

    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer
    from issuer.sdk.verifier.mcp import CapabilityTokenVerifier

    capabilities = CapabilityTokenVerifier(verifier)
    server = MCPServer(
        "files",
        token_verifier=capabilities,
        auth=AuthSettings(issuer_url=verifier.issuer, resource_server_url=verifier.audience,
                          required_scopes=["files:read"], validate_token_resource=True),
    )

    @server.tool()
    async def read_file(path: str) -> str:
        cap = await capabilities.authorize_call(action="read_file", arguments={"path": path})
        return open_for(cap.sub, path)

A refused token makes ``verify_token`` return None (the SDK answers 401);
:meth:`authorize_call` raises a ``ToolError`` naming the refusal (for example
``insufficient_scope: ...``), which the SDK reports to the caller as a tool error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import PrivateAttr

from ._capability import Capability, thaw
from ._verifier import CapabilityVerifier
from .asgi import ASGIApp, Receive, Scope, Send, request_url, send_refusal
from .errors import CapabilityError, MissingToken

if TYPE_CHECKING:
    from ..client import ExchangeClient, IssuedCapability

__all__ = ["CapabilityAccessToken", "CapabilityTokenVerifier", "DPoPFront", "current_capability",
           "exchange_upstream", "verified_by_front"]

log = logging.getLogger("issuer.sdk.verifier")


class CapabilityAccessToken(AccessToken):
    """The SDK's ``AccessToken``, carrying the verified :class:`Capability` as well."""

    _capability: Capability | None = PrivateAttr(default=None)

    @property
    def capability(self) -> Capability:
        if self._capability is None:
            raise MissingToken("no verified capability")
        return self._capability

    @classmethod
    def from_capability(cls, token: str, cap: Capability) -> CapabilityAccessToken:
        access = cls(
            token=token,
            client_id=cap.client_id,
            scopes=sorted(cap.scopes),
            expires_at=cap.expires_at,
            resource=cap.audience,
            subject=cap.sub,
            claims=thaw(cap.claims),
        )
        access._capability = cap
        return access


def current_capability() -> Capability | None:
    """The capability of the request being handled, or None outside an authenticated request."""
    access = get_access_token()
    return access.capability if isinstance(access, CapabilityAccessToken) else None


#: The request's capability as verified, with its DPoP proof, by :class:`DPoPFront`.
_VERIFIED: ContextVar[tuple[str, Capability] | None] = ContextVar("issuer_sdk_mcp_verified", default=None)


def verified_by_front(token: str) -> Capability | None:
    """The capability :class:`DPoPFront` verified for this request, if ``token`` is the one it verified."""
    verified = _VERIFIED.get()
    return verified[1] if verified is not None and verified[0] == token else None


class DPoPFront:
    """ASGI middleware in front of an MCP framework's auth: ``Authorization: DPoP`` with its proof (RFC 9449).

    The frameworks' bearer middleware reads only ``Authorization: Bearer`` and
    hands the verifier the token alone, so a DPoP-bound capability could never
    show its proof. This front verifies a DPoP request whole - both headers,
    the method and the URL - answers a refusal itself (401, ``WWW-Authenticate:
    DPoP error=...``), and passes an admitted one on as ``Bearer`` with the
    verified capability in a context variable, where the token verifier finds
    it. Bearer requests pass untouched (a bound capability sent as Bearer is
    then refused by the verifier).
    """

    def __init__(self, app: ASGIApp, verifier: CapabilityVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", ()))
        values = [v.decode("latin-1") for k, v in headers if k.lower() == b"authorization"]
        scheme, _, token = values[0].strip().partition(" ") if len(values) == 1 else ("", "", "")
        if scheme.lower() != "dpop":
            await self.app(scope, receive, send)
            return
        try:
            cap = await anyio.to_thread.run_sync(functools.partial(
                self.verifier.verify_request, authorization=values,
                dpop=[v.decode("latin-1") for k, v in headers if k.lower() == b"dpop"],
                method=scope.get("method", "GET"), url=request_url(scope)))
        except CapabilityError as e:
            log.info("capability refused: %s", e.description)
            await send_refusal(scope, send, e)
            return
        token = token.strip()
        rewritten = [(k, v) for k, v in headers if k.lower() != b"authorization"]
        rewritten.append((b"authorization", f"Bearer {token}".encode("latin-1")))
        reset = _VERIFIED.set((token, cap))
        try:
            await self.app({**scope, "headers": rewritten}, receive, send)
        finally:
            _VERIFIED.reset(reset)


class CapabilityTokenVerifier:
    """A ``mcp.server.auth.provider.TokenVerifier`` backed by a :class:`CapabilityVerifier`.

    The SDK's server builds its bearer middleware itself and reads only
    ``Authorization: Bearer``. To accept DPoP-bound capabilities too, serve
    the app through :meth:`protect`: ``app = capabilities.protect(server.streamable_http_app())``.
    """

    def __init__(self, verifier: CapabilityVerifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        """The capability as an ``AccessToken``, or None when it is refused (the SDK then answers 401)."""
        cap = verified_by_front(token)  # a DPoP request, its proof checked by protect()
        if cap is not None:
            return CapabilityAccessToken.from_capability(token, cap)
        try:
            cap = await anyio.to_thread.run_sync(self.verifier.verify, token)
        except CapabilityError as e:
            log.info("capability refused: %s", e.description)
            return None
        return CapabilityAccessToken.from_capability(token, cap)

    def protect(self, app: ASGIApp) -> ASGIApp:
        """The SDK's app, admitting ``Authorization: DPoP`` capabilities with their proofs (:class:`DPoPFront`)."""
        return DPoPFront(app, self.verifier)

    async def authorize_call(
        self,
        *,
        action: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        scope: str | None = None,
    ) -> Capability:
        """Authorize this tool call against the current request's capability and return it.

        Runs :meth:`CapabilityVerifier.authorize` (in a worker thread: a shared
        replay cache is a network call). A refusal is raised as the MCP SDK's
        ``ToolError`` carrying the RFC 6750 code and description, because any
        other exception reaches the model only as an opaque "Error executing
        tool"; the typed refusal is kept as ``__cause__``.
        """
        try:
            cap = current_capability()
            if cap is None:
                raise MissingToken()
            await anyio.to_thread.run_sync(
                functools.partial(self.verifier.authorize, cap, scope=scope, action=action, arguments=arguments)
            )
        except CapabilityError as e:
            raise ToolError(f"{e.error}: {e.description}") from e
        return cap


# ----------------------------------------------------------------------------- calling upstream as the same user


async def exchange_upstream(
    client: ExchangeClient,
    *,
    tool: str | None = None,
    audience: str | None = None,
    scope: str | Sequence[str] | None = None,
    actions: Sequence[str] | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> IssuedCapability:
    """Exchange the capability this request arrived with for one addressed to an upstream tool, in one call.

    The incoming token (from the SDK's request context) is the subject token,
    so the upstream capability names the same user, this server as actor and
    nests whoever called it (the gateway); this server must be registered at
    the issuer with ``--may-chain``. A refusal raises ``ToolError`` naming the
    issuer's answer, never carrying a token.
    """
    from ..client import ExchangeError

    access = get_access_token()
    if access is None:
        raise ToolError("no authenticated request to act for")
    try:
        return await anyio.to_thread.run_sync(functools.partial(
            client.exchange, access.token, tool=tool, audience=audience, scope=scope, actions=actions,
            arguments=arguments))
    except ExchangeError as e:
        raise ToolError(f"refused by the issuer: {e}") from None


if TYPE_CHECKING:  # mypy proves the class satisfies the SDK's protocol

    def _conforms(verifier: CapabilityTokenVerifier) -> TokenVerifier:
        return verifier
