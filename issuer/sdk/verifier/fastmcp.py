"""FastMCP (``fastmcp`` 3.x/4.x) integration: a FastMCP server that accepts capabilities, in one line.

::

    from fastmcp import FastMCP
    from issuer.sdk.verifier import CapabilityVerifier
    from issuer.sdk.verifier.fastmcp import CapabilityAuth, exchange_upstream

    verifier = CapabilityVerifier(issuer="https://issuer.example", audience="https://files-mcp.example")
    mcp = FastMCP("files", auth=CapabilityAuth(verifier))          # the one line

    @mcp.tool
    async def read_file(path: str) -> str:
        cap = await mcp.auth.authorize_call(action="read_file", arguments={"path": path})
        # calling an upstream API as the same user: one call, the incoming capability is the subject token
        upstream = await exchange_upstream(exchange, tool="https://share.example", arguments={"path": path})
        ...

:class:`CapabilityAuth` is a FastMCP ``TokenVerifier`` (an ``AuthProvider``):
FastMCP calls :meth:`CapabilityAuth.verify_token` for every request; a valid
capability becomes FastMCP's ``AccessToken`` (subject = the real user,
client_id = the actor, resource = this server, every claim). A refused one
makes FastMCP answer 401. :meth:`CapabilityAuth.authorize_call` checks the
call's action and arguments (and the single use of a call-bound capability)
and raises FastMCP's ``ToolError`` naming the refusal.

Needs ``fastmcp``; importing this module without it raises ImportError.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastmcp.exceptions import ToolError
from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.dependencies import get_access_token
from starlette.middleware import Middleware

from ._capability import Capability, thaw
from ._verifier import CapabilityVerifier
from .errors import CapabilityError, MissingToken
from .mcp import DPoPFront, verified_by_front

if TYPE_CHECKING:
    from ..client import ExchangeClient, IssuedCapability

__all__ = ["CapabilityAuth", "current_capability", "exchange_upstream"]

log = logging.getLogger("issuer.sdk.verifier")


class CapabilityAuth(TokenVerifier):
    """FastMCP's auth provider interface, backed by a :class:`CapabilityVerifier`.

    ``required_scopes`` are enforced by FastMCP for every request;
    ``base_url`` is this server's public URL when FastMCP should serve the
    RFC 9728 metadata for it.
    """

    def __init__(self, verifier: CapabilityVerifier, *, required_scopes: Sequence[str] | None = None,
                 base_url: str | None = None) -> None:
        super().__init__(base_url=base_url, required_scopes=list(required_scopes) if required_scopes else None)
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        """The capability as FastMCP's ``AccessToken``, or None (FastMCP answers 401)."""
        cap = verified_by_front(token)  # a DPoP request, its proof checked by the front
        if cap is None:
            try:
                cap = await anyio.to_thread.run_sync(self.verifier.verify, token)
            except CapabilityError as e:
                log.info("capability refused: %s", e.description)
                return None
        return _access(token, cap)

    def get_middleware(self) -> list[Any]:
        """FastMCP's middleware behind a :class:`~issuer.sdk.verifier.mcp.DPoPFront`: ``Authorization: DPoP``
        with its proof is admitted too (RFC 9449), with no code of the server's."""
        return [Middleware(DPoPFront, verifier=self.verifier), *super().get_middleware()]

    async def authorize_call(self, *, action: str | None = None, arguments: Mapping[str, Any] | None = None,
                             scope: str | None = None) -> Capability:
        """Authorize this tool call against the request's capability; FastMCP ``ToolError`` when refused."""
        try:
            access = get_access_token()
            if access is None:
                raise MissingToken()
            # Seen before (the request was authenticated, with its DPoP proof if bound): from the verifier's cache.
            cap = await anyio.to_thread.run_sync(self.verifier._verify, access.token)
            await anyio.to_thread.run_sync(
                functools.partial(self.verifier.authorize, cap, scope=scope, action=action, arguments=arguments))
        except CapabilityError as e:
            raise ToolError(f"{e.error}: {e.description}") from e
        return cap


def _access(token: str, cap: Capability) -> AccessToken:
    return AccessToken(token=token, client_id=cap.client_id, scopes=sorted(cap.scopes), expires_at=cap.expires_at,
                       resource=cap.audience, subject=cap.sub, claims=dict(thaw(cap.claims)))


def current_capability() -> str | None:
    """The raw capability of the request being handled, or None outside an authenticated request."""
    access = get_access_token()
    return access.token if access is not None else None


async def exchange_upstream(client: ExchangeClient, *, tool: str | None = None, audience: str | None = None,
                            scope: str | Sequence[str] | None = None, actions: Sequence[str] | None = None,
                            arguments: Mapping[str, Any] | None = None) -> IssuedCapability:
    """Exchange the capability this request arrived with for one addressed to an upstream tool (one call).

    The incoming capability is the subject token (a delegation chain: the
    upstream capability names the same user, this server as actor, and
    nests the gateway); this server must be registered at the issuer with
    ``--may-chain``. Refusals raise FastMCP's ``ToolError`` naming the issuer's answer.
    """
    from ..client import ExchangeError

    token = current_capability()
    if token is None:
        raise ToolError("no authenticated request to act for")
    try:
        return await anyio.to_thread.run_sync(functools.partial(
            client.exchange, token, tool=tool, audience=audience, scope=scope, actions=actions, arguments=arguments))
    except ExchangeError as e:
        raise ToolError(f"refused by the issuer: {e}") from None
