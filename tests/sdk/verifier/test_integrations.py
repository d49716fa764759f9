"""The framework adapters: Flask decorator, ASGI middleware (Starlette), MCP TokenVerifier."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import flask
import pytest
from flask import g, request
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import TokenVerifier
from mcp.server.mcpserver.exceptions import ToolError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from issuer.sdk.verifier import (
    CapabilityVerifier,
    ConstraintViolated,
    InsufficientScope,
    MissingToken,
    Replayed,
)
from issuer.sdk.verifier.asgi import CapabilityMiddleware
from issuer.sdk.verifier.flask import CapabilityProtect, require_capability
from issuer.sdk.verifier.mcp import CapabilityAccessToken, CapabilityTokenVerifier, current_capability
from issuer.tool_invocation import bind_arguments
from tests.sdk.verifier.conftest import AUDIENCE, FakeIssuer

FILES = {"type": "tool_invocation", "actions": ["read"], "constraints": {"path": {"prefix": "/home/alice/"}}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- Flask


@pytest.fixture
def flask_app(verifier: CapabilityVerifier) -> flask.Flask:
    app = flask.Flask(__name__)
    protect = CapabilityProtect(verifier)

    @app.get("/tickets")
    @protect("tickets:read")
    def tickets() -> dict[str, Any]:
        return {"user": g.capability.sub, "actors": list(g.capability.actor_chain)}

    @app.get("/admin")
    @require_capability(verifier, "tickets:admin")
    def admin() -> str:
        return "never"

    @app.get("/files/<path:path>")
    @protect("tickets:read", action="read", arguments=lambda: {"path": "/" + request.view_args["path"]})  # type: ignore[index]
    def files(path: str) -> str:
        return f"read /{path}"

    @app.post("/delete")
    @protect("tickets:read")
    def delete() -> str:
        verifier.authorize(g.capability, action="delete")  # the view authorizes more itself
        return "deleted"

    return app


def test_flask_admits_and_exposes_the_capability(fake: FakeIssuer, flask_app: flask.Flask) -> None:
    resp = flask_app.test_client().get("/tickets", headers=bearer(fake.token()))
    assert resp.status_code == 200
    assert resp.get_json() == {"user": "alice", "actors": ["mcp-helpdesk", "portal"]}


def test_flask_missing_token(fake: FakeIssuer, flask_app: flask.Flask) -> None:
    client = flask_app.test_client()
    token = fake.token()
    for kw in ({}, {"query_string": {"access_token": token}}, {"headers": {"Authorization": f"Basic {token}"}}):
        resp = client.get("/tickets", **kw)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.get_json() == {"error": "invalid_token", "error_description": "a bearer capability is required"}
    resp = client.post("/delete", data={"access_token": token})
    assert resp.status_code == 401  # never read from a form body either


def test_flask_invalid_and_insufficient(fake: FakeIssuer, flask_app: flask.Flask) -> None:
    client = flask_app.test_client()
    resp = client.get("/tickets", headers=bearer(fake.token(aud="https://files.example")))
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="the capability was issued for another tool"')
    resp = client.get("/admin", headers=bearer(fake.token()))
    assert resp.status_code == 403
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="tickets:admin"'
    resp = client.get("/tickets", headers={"Authorization": "Bearer a b"})
    assert resp.status_code == 401 and "malformed" in resp.get_json()["error_description"]


def test_flask_arguments_and_view_raised_errors(fake: FakeIssuer, flask_app: flask.Flask) -> None:
    client = flask_app.test_client()
    token = fake.token(authorization_details=[FILES])
    assert client.get("/files/home/alice/notes.txt", headers=bearer(token)).status_code == 200
    resp = client.get("/files/home/bob/notes.txt", headers=bearer(token))
    assert resp.status_code == 403 and resp.get_json()["error"] == "insufficient_scope"
    resp = client.get("/tickets", headers=bearer(token))  # constrained, and this view gives no arguments
    assert resp.status_code == 403
    resp = client.post("/delete", headers=bearer(fake.token(authorization_details=[FILES | {"constraints": {}}])))
    assert resp.status_code == 403
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", error_description="action \'delete\' is not granted"')


def test_flask_issuer_down_is_503(fake: FakeIssuer, flask_app: flask.Flask) -> None:
    fake.down = True
    resp = flask_app.test_client().get("/tickets", headers=bearer(fake.token()))
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "30"


# --------------------------------------------------------------------------- ASGI


@pytest.fixture
def starlette_app(verifier: CapabilityVerifier) -> Starlette:
    async def tickets(request: Request) -> JSONResponse:
        cap = request.state.capability
        return JSONResponse({"user": cap.sub, "state": sorted(request.scope["state"])})

    async def read(request: Request) -> PlainTextResponse:
        arguments = await request.json()
        verifier.authorize(request.state.capability, action="read", arguments=arguments)
        return PlainTextResponse("ok")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"user": websocket.state.capability.sub})
        await websocket.close()

    app = Starlette(routes=[Route("/tickets", tickets), Route("/read", read, methods=["POST"]),
                            WebSocketRoute("/ws", ws)])
    app.add_middleware(CapabilityMiddleware, verifier=verifier, scope="tickets:read")
    return app


def test_asgi_admits_and_sets_request_state(fake: FakeIssuer, starlette_app: Starlette) -> None:
    with TestClient(starlette_app) as client:  # the lifespan passes through
        resp = client.get("/tickets", headers=bearer(fake.token()))
    assert resp.status_code == 200
    assert resp.json() == {"user": "alice", "state": ["capability"]}


def test_asgi_refusals(fake: FakeIssuer, starlette_app: Starlette) -> None:
    client = TestClient(starlette_app)
    resp = client.get("/tickets")
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    resp = client.get("/tickets", params={"access_token": fake.token()})
    assert resp.status_code == 401
    resp = client.get("/tickets", headers=bearer(fake.token(scope="tickets:write")))
    assert resp.status_code == 403
    assert resp.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="tickets:read"'
    assert resp.json() == {"error": "insufficient_scope", "error_description": "scope tickets:read is not granted"}
    resp = client.get("/tickets", headers=bearer(fake.token(exp=1)))
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="the capability has expired"')
    assert resp.headers["cache-control"] == "no-store"


def test_asgi_handler_checks_arguments(fake: FakeIssuer, starlette_app: Starlette) -> None:
    client = TestClient(starlette_app, raise_server_exceptions=True)
    token = fake.token(authorization_details=[FILES])
    assert client.post("/read", json={"path": "/home/alice/x"}, headers=bearer(token)).text == "ok"
    with pytest.raises(ConstraintViolated):
        client.post("/read", json={"path": "/home/bob/x"}, headers=bearer(token))


def test_asgi_websocket(fake: FakeIssuer, starlette_app: Starlette) -> None:
    client = TestClient(starlette_app)
    with client.websocket_connect("/ws", headers=bearer(fake.token())) as ws:
        assert ws.receive_json() == {"user": "alice"}
    with pytest.raises(WebSocketDenialResponse) as info, client.websocket_connect("/ws"):
        pass  # Starlette's test client supports the websocket.http.response extension
    assert info.value.status_code == 401 and info.value.headers["www-authenticate"] == "Bearer"


def test_asgi_websocket_close_without_the_extension(verifier: CapabilityVerifier) -> None:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("must not be reached")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    scope = {"type": "websocket", "path": "/ws", "headers": [(b"authorization", b"Bearer x.y.z")]}
    asyncio.run(CapabilityMiddleware(app, verifier)(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "the capability header is malformed"}]


def test_asgi_websocket_http_response_extension(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("must not be reached")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    middleware = CapabilityMiddleware(app, verifier)
    scope = {"type": "websocket", "path": "/ws", "headers": [], "extensions": {"websocket.http.response": {}}}
    asyncio.run(middleware(scope, receive, send))
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 401
    assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]


def test_asgi_lifespan_passthrough(verifier: CapabilityVerifier) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def nothing() -> dict[str, Any]:
        return {}

    async def ignore(message: Any) -> None:
        pass

    asyncio.run(CapabilityMiddleware(app, verifier)({"type": "lifespan"}, nothing, ignore))
    assert seen == ["lifespan"]


# --------------------------------------------------------------------------- MCP


def test_mcp_token_verifier(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    tv: TokenVerifier = CapabilityTokenVerifier(verifier)  # the SDK's protocol (checked by mypy in mcp.py)
    token = fake.token()
    access = asyncio.run(tv.verify_token(token))
    assert isinstance(access, CapabilityAccessToken)
    cap = access.capability
    assert access.token == token
    assert (access.client_id, access.scopes, access.expires_at) == (
        "mcp-helpdesk", ["tickets:read", "tickets:write"], cap.expires_at)
    assert (access.resource, access.subject) == (AUDIENCE, "alice")
    assert access.claims is not None and access.claims["iss"] == fake.url
    assert asyncio.run(tv.verify_token(fake.token(aud="https://files.example"))) is None
    assert asyncio.run(tv.verify_token("not-a-token")) is None


def _as_current(access: CapabilityAccessToken, fn: Callable[[], Any]) -> Any:
    reset = auth_context_var.set(AuthenticatedUser(access))
    try:
        return fn()
    finally:
        auth_context_var.reset(reset)


def test_mcp_tool_call_authorization(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    tv = CapabilityTokenVerifier(verifier)
    call = {"path": "/home/alice/notes.txt"}
    token = fake.token(authorization_details=[{"type": "tool_invocation", "actions": ["read_file"],
                                               **bind_arguments(call)}])
    access = asyncio.run(tv.verify_token(token))
    assert isinstance(access, CapabilityAccessToken)

    async def tool(arguments: dict[str, Any], action: str = "read_file") -> str:
        cap = await tv.authorize_call(action=action, arguments=arguments, scope="tickets:read")
        assert current_capability() is cap
        return cap.sub

    # refusals reach the model as a ToolError naming the RFC 6750 code; the typed error is the cause
    with pytest.raises(ToolError, match=r"^insufficient_scope: ") as info:
        _as_current(access, lambda: asyncio.run(tool(call, action="delete_file")))
    assert isinstance(info.value.__cause__, InsufficientScope)
    with pytest.raises(ToolError) as info:
        _as_current(access, lambda: asyncio.run(tool({"path": "/etc/passwd"})))
    assert isinstance(info.value.__cause__, ConstraintViolated)
    assert _as_current(access, lambda: asyncio.run(tool(call))) == "alice"
    with pytest.raises(ToolError, match=r"^invalid_token: ") as info:
        _as_current(access, lambda: asyncio.run(tool(call)))
    assert isinstance(info.value.__cause__, Replayed)
    assert current_capability() is None
    with pytest.raises(ToolError) as info:
        asyncio.run(tv.authorize_call(arguments=call))
    assert isinstance(info.value.__cause__, MissingToken)


def test_mcp_access_token_without_capability() -> None:
    access = CapabilityAccessToken(token="t", client_id="c", scopes=[])
    with pytest.raises(MissingToken):
        _ = access.capability
