"""Both SDKs end to end, over real HTTP on 127.0.0.1.

    MCP client ──(alice's IdP token)──> MCP server "helpdesk" (official mcp SDK, streamable HTTP)
                                           │  ExchangeClient + CapabilityAuth: token exchange at the issuer
                                           ├──(tickets capability)──> tickets API (Flask, CapabilityProtect)
                                           └──(files capability)────> files API (Starlette, CapabilityMiddleware)

The issuer is the real one (``live_sqlite``). The MCP server accepts the
user's IdP token only when it was issued for the server's own resource URI;
its tools never forward that token, they exchange it for a capability. The
upstreams answer with what the capability told them: who the user is, which
MCP server acts for them, and the scopes. The last tests call the upstreams
directly to check each refusal and its ``WWW-Authenticate`` value.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import flask
import httpx
import httpx2
import jwt
import mcp_types
import pytest
from freezegun import freeze_time
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from issuer.sdk.client import ClientSecret, ExchangeClient, ExchangeError, IssuedCapability
from issuer.sdk.client.httpx_auth import CapabilityAuth
from issuer.sdk.verifier import Capability, CapabilityError, CapabilityVerifier
from issuer.sdk.verifier.asgi import CapabilityMiddleware
from issuer.sdk.verifier.flask import CapabilityProtect
from tests.conftest import LiveIssuer
from tests.sdk.e2e_support.serving import AsgiServer, Recorded, RecordedAsgi, RecordedWsgi, WsgiServer
from tests.support.fake_idp import FakeIdP

TICKETS = "https://tickets.example"
FILES = "https://files.example"
HELPDESK = "https://mcp.helpdesk.example"  # the MCP server's resource URI: the audience of its callers' tokens

# The standard policy, with the files grant narrowed to the user's home directory.
POLICY = """
rules:
  - id: support-tickets-read
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk, mcp-other]
    tool: tickets
    scopes: [tickets:read]
  - id: support-home-files
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: files
    scopes: [files:read]
    actions: [read, list]
    constraints:
      path: {prefix: "/home/${sub}/"}
"""


def what_upstream_saw(cap: Capability) -> dict[str, Any]:
    return {"sub": cap.sub, "client_id": cap.client_id, "act": cap.act, "actor_chain": list(cap.actor_chain),
            "scopes": sorted(cap.scopes)}


# ----------------------------------------------------------------------------- the tickets API (Flask)


def tickets_api(verifier: CapabilityVerifier) -> flask.Flask:
    app = flask.Flask("tickets-api")
    protect = CapabilityProtect(verifier)

    @app.get("/tickets")
    @protect("tickets:read")
    def list_tickets() -> dict[str, Any]:
        return what_upstream_saw(flask.g.capability)

    @app.post("/tickets")
    @protect("tickets:write")
    def create_ticket() -> dict[str, Any]:
        return {"created": True}

    return app


# ----------------------------------------------------------------------------- the files API (Starlette)


def files_api(verifier: CapabilityVerifier) -> CapabilityMiddleware:
    async def read(request: Request) -> JSONResponse:
        cap: Capability = request.state.capability  # verified, files:read checked by the middleware
        arguments = await request.json()
        try:  # constraints and call binding: only the handler sees the arguments
            await anyio.to_thread.run_sync(
                functools.partial(verifier.authorize, cap, action="read", arguments=arguments))
        except CapabilityError as e:
            return JSONResponse(e.to_dict(), status_code=e.status_code, headers=e.headers())
        return JSONResponse({**what_upstream_saw(cap), "path": arguments["path"]})

    app = Starlette(routes=[Route("/read", read, methods=["POST"])])
    return CapabilityMiddleware(app, verifier, scope="files:read")


# ----------------------------------------------------------------------------- the MCP server


class IdpTokenVerifier:
    """The MCP server's check of its callers: signed by the IdP, issued for this server's resource URI."""

    def __init__(self, idp: FakeIdP, resource: str) -> None:
        self.issuer = idp.issuer
        self.resource = resource
        self._jwks = jwt.PyJWKClient(idp.jwks_uri)

    def _decode(self, token: str) -> dict[str, Any]:
        key = self._jwks.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=["ES256", "RS256"], audience=self.resource,
                                            issuer=self.issuer, options={"require": ["exp", "iat", "sub"]})
        return claims

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await anyio.to_thread.run_sync(self._decode, token)
        except jwt.PyJWTError:
            return None
        return AccessToken(token=token, client_id=str(claims.get("client_id", "")), scopes=[],
                           expires_at=int(claims["exp"]), resource=self.resource, subject=claims["sub"],
                           claims=claims)


def answer(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.raise_for_status().json()
    return body


def helpdesk_server(idp: FakeIdP, exchange: ExchangeClient, tickets_url: str, files_url: str) -> MCPServer:
    server = MCPServer(
        "helpdesk",
        token_verifier=IdpTokenVerifier(idp, HELPDESK),
        auth=AuthSettings.model_validate({"issuer_url": idp.issuer, "resource_server_url": HELPDESK,
                                          "validate_token_resource": True}),
        log_level="WARNING",
    )

    def user_token() -> str:
        access = get_access_token()  # the caller's token, as the bearer middleware admitted it
        assert access is not None
        return access.token

    @server.tool()
    async def list_tickets() -> dict[str, Any]:
        """The caller's tickets, fetched with a capability in the caller's name."""
        auth = CapabilityAuth(exchange, user_token(), tool=TICKETS, scope="tickets:read")
        try:
            async with httpx.AsyncClient(auth=auth) as http:
                return answer(await http.get(f"{tickets_url}/tickets"))
        except ExchangeError as e:  # the issuer refused: tell the model why
            raise ToolError(str(e)) from None

    @server.tool()
    async def read_file(path: str) -> dict[str, Any]:
        """One file of the caller's, with a capability bound to exactly this call."""
        auth = CapabilityAuth(exchange, user_token(), tool=FILES, scope="files:read", actions=["read"],
                              arguments={"path": path})
        try:
            async with httpx.AsyncClient(auth=auth) as http:
                return answer(await http.post(f"{files_url}/read", json={"path": path}))
        except ExchangeError as e:
            raise ToolError(str(e)) from None

    return server


async def call_tool(mcp_url: str, user_token: str, name: str, **arguments: Any) -> mcp_types.CallToolResult:
    """One MCP session as the official SDK's client opens it, with the user's token as bearer."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {user_token}"}, timeout=20) as http,
        streamable_http_client(mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await session.call_tool(name, arguments)


def text_of(result: mcp_types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, mcp_types.TextContent))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def issuer(live_sqlite: LiveIssuer) -> LiveIssuer:
    live_sqlite.apply(POLICY)
    return live_sqlite


@pytest.fixture
def exchange(issuer: LiveIssuer) -> ExchangeClient:
    return ExchangeClient(issuer=issuer.url, client_id="mcp-helpdesk",
                          credentials=ClientSecret(issuer.secrets["mcp-helpdesk"]), allow_insecure_loopback=True)


@pytest.fixture
def tickets_verifier(issuer: LiveIssuer) -> Iterator[CapabilityVerifier]:
    with CapabilityVerifier(issuer=issuer.url, audience=TICKETS, revocation_poll_interval=60,
                            allow_insecure_loopback=True) as verifier:
        yield verifier


@pytest.fixture
def files_verifier(issuer: LiveIssuer) -> Iterator[CapabilityVerifier]:
    with CapabilityVerifier(issuer=issuer.url, audience=FILES, allow_insecure_loopback=True) as verifier:
        yield verifier


@pytest.fixture
def tickets(tickets_verifier: CapabilityVerifier) -> Iterator[tuple[str, Recorded]]:
    recorded = RecordedWsgi(tickets_api(tickets_verifier))
    server = WsgiServer(recorded)
    yield server.url, recorded
    server.close()


@pytest.fixture
def files(files_verifier: CapabilityVerifier) -> Iterator[tuple[str, Recorded]]:
    recorded = RecordedAsgi(files_api(files_verifier))
    server = AsgiServer(recorded)
    yield server.url, recorded
    server.close()


@pytest.fixture
def helpdesk(issuer: LiveIssuer, exchange: ExchangeClient, tickets: tuple[str, Recorded],
             files: tuple[str, Recorded]) -> Iterator[str]:
    app = helpdesk_server(issuer.idp, exchange, tickets[0], files[0]).streamable_http_app()
    server = AsgiServer(app)
    yield f"{server.url}/mcp"
    server.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tickets_capability(issuer: LiveIssuer, exchange: ExchangeClient, sub: str = "alice") -> str:
    cap = exchange.exchange(issuer.idp.token(sub=sub), tool=TICKETS, scope="tickets:read")
    return cap.access_token


# ----------------------------------------------------------------------------- through the MCP server


ALICE_AT_TICKETS = {"sub": "idp-a:alice", "client_id": "mcp-helpdesk", "act": {"sub": "mcp-helpdesk"},
                    "actor_chain": ["mcp-helpdesk"], "scopes": ["tickets:read"]}


def test_alice_reaches_both_upstreams_in_her_own_name(issuer: LiveIssuer, helpdesk: str,
                                                      tickets: tuple[str, Recorded],
                                                      files: tuple[str, Recorded]) -> None:
    alice = issuer.idp.token(sub="alice", groups=["support"], aud=HELPDESK)

    first = asyncio.run(call_tool(helpdesk, alice, "list_tickets"))
    assert not first.is_error, text_of(first)
    assert first.structured_content == ALICE_AT_TICKETS
    second = asyncio.run(call_tool(helpdesk, alice, "list_tickets"))
    assert second.structured_content == ALICE_AT_TICKETS

    read = asyncio.run(call_tool(helpdesk, alice, "read_file", path="/home/alice/notes.txt"))
    assert not read.is_error, text_of(read)
    assert read.structured_content == {**ALICE_AT_TICKETS, "scopes": ["files:read"], "path": "/home/alice/notes.txt"}

    (tickets_seen, again), (files_seen,) = tickets[1].authorizations, files[1].authorizations
    assert tickets_seen == again  # the second MCP call was served from the exchange client's cache
    for header, audience in ((tickets_seen, TICKETS), (files_seen, FILES)):
        assert header is not None and header.startswith("Bearer ")
        assert alice not in header  # the user's own token never reaches an upstream
        assert jwt.decode(header.removeprefix("Bearer "), options={"verify_signature": False})["aud"] == audience


def test_outside_the_home_directory_the_issuer_refuses(issuer: LiveIssuer, helpdesk: str,
                                                       files: tuple[str, Recorded]) -> None:
    alice = issuer.idp.token(sub="alice", groups=["support"], aud=HELPDESK)
    result = asyncio.run(call_tool(helpdesk, alice, "read_file", path="/home/bob/notes.txt"))
    assert result.is_error
    assert text_of(result) == ("Error executing tool read_file: invalid_scope: argument path is outside the granted "
                               "constraints (prefix: not under '/home/alice/')")
    assert files[1].requests == []


def test_mallory_is_refused_at_the_issuer(issuer: LiveIssuer, helpdesk: str, tickets: tuple[str, Recorded],
                                          files: tuple[str, Recorded]) -> None:
    mallory = issuer.idp.token(sub="mallory", groups=["contractor"], aud=HELPDESK)
    for tool, arguments in (("list_tickets", {}), ("read_file", {"path": "/home/mallory/notes.txt"})):
        result = asyncio.run(call_tool(helpdesk, mallory, tool, **arguments))
        assert result.is_error
        assert text_of(result).startswith(f"Error executing tool {tool}: invalid_target: "), text_of(result)
    assert tickets[1].requests == [] and files[1].requests == []  # no request for her ever left the MCP server


def test_the_mcp_server_takes_only_tokens_issued_for_it(issuer: LiveIssuer, helpdesk: str) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "raw", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    for aud, status in ((TICKETS, 401), (HELPDESK, 200)):
        token = issuer.idp.token(sub="alice", aud=aud)
        resp = httpx.post(helpdesk, json=initialize, headers={**headers, **bearer(token)}, timeout=10)
        assert resp.status_code == status, (aud, resp.text)
        if status == 401:
            assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_a_revoked_capability_is_refused_and_the_mcp_server_gets_a_fresh_one(
    issuer: LiveIssuer, helpdesk: str, tickets: tuple[str, Recorded], tickets_verifier: CapabilityVerifier
) -> None:
    alice = issuer.idp.token(sub="alice", groups=["support"], aud=HELPDESK)
    assert asyncio.run(call_tool(helpdesk, alice, "list_tickets")).structured_content == ALICE_AT_TICKETS
    (cached,) = tickets[1].authorizations
    assert cached is not None
    revoked = cached.removeprefix("Bearer ")

    resp = issuer.post_form("/revoke", [("token", revoked)], auth=("mcp-helpdesk", issuer.secrets["mcp-helpdesk"]))
    assert resp.status_code == 200
    tickets_verifier.poll_revocations()  # what the poller does every revocation_poll_interval seconds

    direct = httpx.get(f"{tickets[0]}/tickets", headers=bearer(revoked))
    assert direct.status_code == 401
    assert direct.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="the capability has been revoked"')
    assert direct.json() == {"error": "invalid_token", "error_description": "the capability has been revoked"}

    # The MCP server still holds the revoked capability in its cache: the tool answers 401,
    # CapabilityAuth exchanges again (bypassing the cache) and retries once.
    assert asyncio.run(call_tool(helpdesk, alice, "list_tickets")).structured_content == ALICE_AT_TICKETS
    _, direct_seen, refused, retried = tickets[1].authorizations
    assert direct_seen == refused == cached
    assert retried is not None and retried != cached


# ----------------------------------------------------------------------------- refusals at the upstreams


def test_tampered_capability(issuer: LiveIssuer, exchange: ExchangeClient, tickets: tuple[str, Recorded]) -> None:
    token = tickets_capability(issuer, exchange)
    assert httpx.get(f"{tickets[0]}/tickets", headers=bearer(token)).json()["sub"] == "idp-a:alice"
    head, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    resp = httpx.get(f"{tickets[0]}/tickets", headers=bearer(f"{head}.{payload}.{flipped}"))
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="the capability signature is invalid"')


def test_expired_capability(issuer: LiveIssuer, exchange: ExchangeClient, tickets: tuple[str, Recorded],
                            tickets_verifier: CapabilityVerifier) -> None:
    token = tickets_capability(issuer, exchange)
    assert httpx.get(f"{tickets[0]}/tickets", headers=bearer(token)).status_code == 200
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    with freeze_time(datetime.fromtimestamp(exp + tickets_verifier.leeway, UTC), tick=True):
        resp = httpx.get(f"{tickets[0]}/tickets", headers=bearer(token))
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="the capability has expired"')


def test_capability_for_another_tool(issuer: LiveIssuer, exchange: ExchangeClient, tickets: tuple[str, Recorded],
                                     files: tuple[str, Recorded]) -> None:
    token = exchange.exchange(issuer.idp.token(sub="alice"), tool=FILES, scope="files:read").access_token
    ok = httpx.post(f"{files[0]}/read", json={"path": "/home/alice/a.txt"}, headers=bearer(token))
    assert ok.status_code == 200 and ok.json()["path"] == "/home/alice/a.txt"
    resp = httpx.get(f"{tickets[0]}/tickets", headers=bearer(token))
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="the capability was issued for another tool"')


def test_insufficient_scope_and_arguments_outside_the_constraints(
    issuer: LiveIssuer, exchange: ExchangeClient, tickets: tuple[str, Recorded], files: tuple[str, Recorded]
) -> None:
    resp = httpx.post(f"{tickets[0]}/tickets", headers=bearer(tickets_capability(issuer, exchange)))
    assert resp.status_code == 403
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="tickets:write"'

    session = exchange.exchange(issuer.idp.token(sub="alice"), tool=FILES, scope="files:read").access_token
    resp = httpx.post(f"{files[0]}/read", json={"path": "/home/bob/notes.txt"}, headers=bearer(session))
    assert resp.status_code == 403
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", error_description="arguments not admitted: '
        "path prefix: not under '/home/alice/'\"")


def test_call_bound_capability_is_single_use(issuer: LiveIssuer, exchange: ExchangeClient,
                                             files: tuple[str, Recorded]) -> None:
    call = {"path": "/home/alice/notes.txt"}
    cap: IssuedCapability = exchange.exchange(issuer.idp.token(sub="alice"), tool=FILES, scope="files:read",
                                              actions=["read"], arguments=call)
    assert cap.call_bound
    first = httpx.post(f"{files[0]}/read", json=call, headers=bearer(cap.access_token))
    assert first.status_code == 200 and first.json()["sub"] == "idp-a:alice"
    again = httpx.post(f"{files[0]}/read", json=call, headers=bearer(cap.access_token))
    assert again.status_code == 401
    assert again.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="the call-bound capability has already been used"')

    other = exchange.exchange(issuer.idp.token(sub="alice"), tool=FILES, scope="files:read", actions=["read"],
                              arguments=call)
    resp = httpx.post(f"{files[0]}/read", json={"path": "/home/alice/other.txt"},
                      headers=bearer(other.access_token))
    assert resp.status_code == 403 and resp.json()["error"] == "insufficient_scope"
