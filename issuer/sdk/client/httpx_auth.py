"""Attach capabilities to httpx requests: :class:`CapabilityAuth`, an ``httpx.Auth``.

This module imports httpx (the rest of :mod:`issuer.sdk.client` does not)::

    import httpx
    from issuer.sdk.client import ExchangeClient
    from issuer.sdk.client.httpx_auth import CapabilityAuth

    auth = CapabilityAuth(exchange, user_token, tool="https://tickets.example", scope="tickets:read")
    httpx.get("https://tickets.example/api/tickets/42", auth=auth)

Each request gets ``Authorization: Bearer <capability>`` from
:meth:`ExchangeClient.exchange` (so from its cache while the capability is
fresh). When the client was made with ``dpop=...`` the capability is bound to
its key and each request gets ``Authorization: DPoP <capability>`` with a
``DPoP`` proof of its own (method, URL, ``ath``; RFC 9449 section 7). When
the tool answers 401, the request is sent once more: with the same capability
and the tool's new ``DPoP-Nonce`` if it asked for one (``use_dpop_nonce``),
otherwise with a capability fetched anew, bypassing the cache (the tool may
have seen a revoked or rotated one); a second 401 is returned to the caller.

Async clients: ``httpx.AsyncClient(auth=auth)`` works too. The exchange
itself is synchronous (standard-library HTTP), so :meth:`async_auth_flow`
runs it in a worker thread with :func:`asyncio.to_thread` and the event loop
is never blocked; a cache hit still costs one thread hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from typing import Any

import httpx

from ._capability import ACCESS_TOKEN_TYPE, IssuedCapability
from ._client import ExchangeClient
from ._errors import ProtocolError

__all__ = ["CapabilityAuth"]


class CapabilityAuth(httpx.Auth):
    """An ``httpx.Auth`` that sends a capability for one user and one tool.

    The arguments are those of :meth:`ExchangeClient.exchange`. Make one per
    user token (for instance per incoming MCP request); the client's cache is
    shared, so making many is cheap. With ``arguments=...`` every request
    gets its own call-bound capability.
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        client: ExchangeClient,
        subject_token: str,
        *,
        tool: str | None = None,
        audience: str | None = None,
        scope: str | Sequence[str] | None = None,
        actions: Sequence[str] | None = None,
        constraints: Mapping[str, Any] | None = None,
        arguments: Mapping[str, Any] | None = None,
        actor_token: str | None = None,
        actor_token_type: str | None = None,
        subject_token_type: str = ACCESS_TOKEN_TYPE,
    ) -> None:
        if not isinstance(client, ExchangeClient):
            raise TypeError("client must be an ExchangeClient")
        self._client = client
        self._subject_token = subject_token
        self._options: dict[str, Any] = dict(
            tool=tool, audience=audience, scope=scope, actions=actions, constraints=constraints,
            arguments=arguments, actor_token=actor_token, actor_token_type=actor_token_type,
            subject_token_type=subject_token_type,
        )
        self._target = tool if tool is not None else audience

    def __repr__(self) -> str:
        return f"CapabilityAuth(client={self._client!r}, target={self._target!r})"

    def capability(self, *, force_refresh: bool = False) -> IssuedCapability:
        """The capability the next request will carry (cached by the client)."""
        return self._client.exchange(self._subject_token, force_refresh=force_refresh, **self._options)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        cap = self.capability()
        self._authorize(request, cap)
        response = yield request
        if response.status_code == 401:
            if not self._nonce_challenge(request, response, cap):
                cap = self.capability(force_refresh=True)
            self._authorize(request, cap)
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        cap = await asyncio.to_thread(self.capability)
        self._authorize(request, cap)
        response = yield request
        if response.status_code == 401:
            if not self._nonce_challenge(request, response, cap):
                cap = await asyncio.to_thread(self.capability, force_refresh=True)
            self._authorize(request, cap)
            yield request

    def _authorize(self, request: httpx.Request, cap: IssuedCapability) -> None:
        if cap.token_type != "DPoP":
            request.headers["Authorization"] = f"Bearer {cap.access_token}"
            request.headers.pop("DPoP", None)
            return
        dpop = self._client.dpop
        if dpop is None:
            raise ProtocolError("the issuer returned a DPoP capability to a client without a DPoP key")
        request.headers["Authorization"] = f"DPoP {cap.access_token}"
        request.headers["DPoP"] = dpop.proof(request.method, str(request.url), access_token=cap.access_token)

    def _nonce_challenge(self, request: httpx.Request, response: httpx.Response, cap: IssuedCapability) -> bool:
        """The tool asked for a DPoP nonce (RFC 9449 section 9): retry with it and the same capability."""
        dpop = self._client.dpop
        return (cap.token_type == "DPoP" and dpop is not None
                and "use_dpop_nonce" in response.headers.get("WWW-Authenticate", "")
                and dpop.remember_nonce(str(request.url), response.headers.get("DPoP-Nonce")))
