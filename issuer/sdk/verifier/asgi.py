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
``Authorization: Bearer`` header (never the query string), verifies the
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

from ._bearer import bearer_token
from ._capability import Capability
from ._verifier import CapabilityVerifier
from .errors import CapabilityError

__all__ = ["CapabilityMiddleware"]

log = logging.getLogger("issuer.sdk.verifier")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
        values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"authorization"]
        try:
            token = bearer_token(values)
            cap = await anyio.to_thread.run_sync(self._check, token)
        except CapabilityError as e:
            log.info("capability refused on %s: %s", scope.get("path", ""), e.description)
            await self._refuse(scope, send, e)
            return
        scope = dict(scope)
        scope["state"] = {**scope.get("state", {}), "capability": cap}
        await self.app(scope, receive, send)

    def _check(self, token: str) -> Capability:
        cap = self.verifier.verify(token)
        self.verifier._authorize_grant(cap, scope=self.required_scope, action=self.action)
        return cap

    @staticmethod
    async def _refuse(scope: Scope, send: Send, error: CapabilityError) -> None:
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
