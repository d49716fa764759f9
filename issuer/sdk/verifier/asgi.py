"""ASGI middleware (Starlette, FastAPI, any ASGI app): a capability gate in front of an app.

::

    from starlette.applications import Starlette
    from issuer.sdk.verifier.asgi import CapabilityMiddleware

    app = Starlette(routes=[...])
    app.add_middleware(CapabilityMiddleware, verifier=verifier, scope="tickets:read")
    # or: app = CapabilityMiddleware(app, verifier, scope="tickets:read")

    async def list_tickets(request):
        cap = request.state.capability                  # verified, scope checked
        body = await request.json()
        try:  # the handler's job; in a thread, as a Redis replay check is network I/O
            await anyio.to_thread.run_sync(functools.partial(verifier.authorize, cap, action="read", arguments=body))
        except CapabilityError as e:
            return JSONResponse(e.to_dict(), status_code=e.status_code, headers=e.headers())

For HTTP and WebSocket connections the middleware reads the
``Authorization`` header (never the query string): ``Bearer``, or ``DPoP``
with the request's ``DPoP`` proof for a sender-constrained capability, whose
``htu`` is checked against :func:`request_url`; it verifies the
capability in a worker thread (a key fetch must not block the event loop),
checks ``scope`` and ``action`` when given, and stores the capability in
``scope["state"]["capability"]`` - Starlette's ``request.state.capability``.
It cannot see request bodies, so argument constraints and call binding are
the handler's to check with :meth:`CapabilityVerifier.authorize`.  A refused
HTTP request gets the RFC 6750 JSON error with its status and
``WWW-Authenticate``; a refused WebSocket handshake gets the same HTTP answer
where the server supports the ``websocket.http.response`` extension, and a
close (code 1008, policy violation) otherwise.  Lifespan events pass through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from ._capability import Capability
from ._verifier import CapabilityVerifier
from .errors import CapabilityError

__all__ = ["CapabilityMiddleware", "request_url", "send_refusal"]

log = logging.getLogger("issuer.sdk.verifier")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_url(scope: Scope) -> str:
    """The URL the client addressed (RFC 9449 ``htu``): scheme, Host header, root path and path, no query.

    Behind a proxy, run the server with its proxy-headers option so ``scheme``
    and the Host header are the public ones."""
    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"host"), None)
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
    return f"{scheme}://{host}{scope.get('root_path', '')}{scope.get('path', '/')}"


class CapabilityMiddleware:
    """Verify the capability of every HTTP request and WebSocket handshake before ``app`` sees it."""

    def __init__(
        self, app: ASGIApp, verifier: CapabilityVerifier, scope: str | None = None, *, action: str | None = None
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.required_scope = scope
        self.action = action

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        authorization = [v.decode("latin-1") for k, v in headers if k.lower() == b"authorization"]
        dpop = [v.decode("latin-1") for k, v in headers if k.lower() == b"dpop"]
        try:
            cap = await anyio.to_thread.run_sync(self._check, authorization, dpop, scope)
        except CapabilityError as e:
            log.info("capability refused on %s: %s", scope.get("path", ""), e.description)
            await send_refusal(scope, send, e)
            return
        scope = dict(scope)
        scope["state"] = {**scope.get("state", {}), "capability": cap}
        await self.app(scope, receive, send)

    def _check(self, authorization: list[str], dpop: list[str], scope: Scope) -> Capability:
        method = "GET" if scope["type"] == "websocket" else scope.get("method", "GET")
        cap = self.verifier.verify_request(authorization=authorization, dpop=dpop, method=method,
                                           url=request_url(scope))
        self.verifier._authorize_grant(cap, scope=self.required_scope, action=self.action)
        return cap


async def send_refusal(scope: Scope, send: Send, error: CapabilityError) -> None:
    """The RFC 6750 (or RFC 9449) answer to a refused HTTP request or WebSocket handshake."""
    body = json.dumps(error.to_dict()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers().items()]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.description[:120]})
