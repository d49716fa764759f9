"""The gateway's world: the real issuer (tests.conftest.LiveIssuer), the fake identity provider, an MCP server
built with the official SDK that accepts capabilities only, and the gateway in front of it, each on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context

from issuer.demo.gated_mcp import GATED_PATH, GATED_RESOURCE, GatedHelpdesk
from issuer.demo.servers import BackgroundAsgi
from issuer.gateway import Gateway, GatewayConfig
from issuer.registry import ScopeSpec, add_idp, add_tool
from tests.conftest import LiveIssuer, make_settings
from tests.support.fake_idp import FakeIdP

GATEWAY_RESOURCE = "https://gateway.example/mcp"
TOOLS = ("list_tickets", "read_file", "delete_ticket", "count_slowly")

POLICY = """
rules:
  - id: connect
    idp: idp-a
    groups: [support, contractor]
    clients: [mcp-gateway]
    tool: helpdesk-tools
    scopes: [mcp:connect]
  - id: support-tickets
    idp: idp-a
    groups: [support]
    clients: [mcp-gateway]
    tool: helpdesk-tools
    scopes: [tool:list_tickets]
    constraints:
      project: {in: ["${claims.projects}"]}
  - id: home-files
    idp: idp-a
    groups: [support]
    clients: [mcp-gateway]
    tool: helpdesk-tools
    scopes: [tool:read_file]
    constraints:
      path: {prefix: "/home/${sub}/"}
  - id: support-prompts
    idp: idp-a
    groups: [support]
    clients: [mcp-gateway]
    tool: helpdesk-tools
    scopes: [prompt:triage]
  - id: support-own-files
    idp: idp-a
    groups: [support]
    clients: [mcp-gateway]
    tool: helpdesk-tools
    scopes: [resource:read]
    constraints:
      uri: {glob: "file:///home/${sub}/*"}
  - id: counting
    idp: idp-a
    groups: [support]
    clients: [mcp-gateway]
    tool: helpdesk-tools
    scopes: [tool:count_slowly]
    rate_limit: 3/minute
"""


@dataclass
class World:
    issuer: LiveIssuer
    idp: FakeIdP
    helpdesk: GatedHelpdesk
    gateway: Gateway
    gateway_url: str
    mcp_url: str
    release: threading.Event
    #: The headers of every HTTP request that reached the MCP server, lower-case names, in order.
    forwarded: list[dict[str, list[str]]]

    def token(self, user: str = "alice", **claims: Any) -> str:
        groups = ["contractor"] if user == "mallory" else ["support"]
        projects = ["website"] if user == "mallory" else ["apollo"]
        values: dict[str, Any] = {"groups": groups, "projects": projects, "aud": GATEWAY_RESOURCE}
        values.update(claims)
        return self.idp.token(user, **values)

    def audit(self) -> list[Any]:
        from issuer.audit import query_audit

        return query_audit(self.issuer.db, after_id=0, limit=1000)


def register(issuer: LiveIssuer) -> None:
    add_idp(issuer.db, name=issuer.idp.name, issuer=issuer.idp.issuer, jwks_uri=issuer.idp.jwks_uri,
            algorithms=("ES256", "RS256"), attribute_claims=("projects",), allow_insecure_loopback=True)
    scopes = [ScopeSpec("mcp:connect")] + [ScopeSpec(f"tool:{t}", actions=(t,)) for t in TOOLS]
    scopes += [ScopeSpec(f"prompt:{p}", actions=(f"prompt:{p}",)) for p in ("triage", "escalate")]
    scopes += [ScopeSpec("resource:read", actions=("resource:read",))]
    add_tool(issuer.db, name="helpdesk-tools", resource_uri=GATED_RESOURCE, scopes=scopes)
    issuer.add_client("mcp-gateway", GATEWAY_RESOURCE, ["helpdesk-tools"])
    issuer.apply(POLICY)


def add_count_tool(helpdesk: GatedHelpdesk, release: threading.Event) -> None:
    """A tool that reports progress, then waits until the test has seen that progress arrive."""

    @helpdesk.server.tool()
    async def count_slowly(n: int, ctx: Context) -> str:
        await helpdesk._authorize("count_slowly", {"n": n})
        await ctx.report_progress(1, n, "first step")
        released = await anyio.to_thread.run_sync(release.wait, 20)
        await ctx.report_progress(n, n, "done")
        return "released by the client" if released else "nobody saw the progress"


def add_prompts_and_resources(helpdesk: GatedHelpdesk) -> None:
    """Prompts and resources are decided like tools: each get or read is an exchange with its arguments."""
    server = helpdesk.server

    @server.prompt()
    async def triage(ticket: str) -> str:
        await helpdesk._authorize("prompt:triage", {"ticket": ticket})
        return f"Triage ticket {ticket}: severity, owner, next step."

    @server.prompt()
    async def escalate(ticket: str) -> str:
        await helpdesk._authorize("prompt:escalate", {"ticket": ticket})
        return f"Escalate {ticket}."

    for path in ("/home/alice/notes.txt", "/home/bob/salary.txt"):
        def reader(uri: str = f"file://{path}") -> Any:
            async def read() -> str:
                await helpdesk._authorize("resource:read", {"uri": uri})
                return f"contents of {uri}"
            return read

        server.resource(f"file://{path}", name=path.rsplit("/", 1)[1])(reader())


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str, idp: FakeIdP) -> Iterator[World]:
    """The world; ``@pytest.mark.parametrize("world", [True], indirect=True)`` makes the MCP server answer JSON."""
    issuer = LiveIssuer(make_settings(tmp_path, sqlite_url), idp)
    register(issuer)
    helpdesk = GatedHelpdesk(issuer.url)
    release = threading.Event()
    add_count_tool(helpdesk, release)
    add_prompts_and_resources(helpdesk)
    forwarded: list[dict[str, list[str]]] = []
    inner = helpdesk.app(json_response=getattr(request, "param", False))

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen: dict[str, list[str]] = {}
            for name, value in scope.get("headers", ()):
                seen.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
            forwarded.append(seen)
        await inner(scope, receive, send)

    mcp = BackgroundAsgi(recording)
    config = GatewayConfig(upstream=f"{mcp.url}{GATED_PATH}", resource=GATEWAY_RESOURCE, issuer=issuer.url,
                           upstream_resource=GATED_RESOURCE, client_id="mcp-gateway",
                           client_secret=issuer.secrets["mcp-gateway"], max_body=64 * 1024)
    gateway = Gateway(config)
    front = BackgroundAsgi(gateway)
    try:
        yield World(issuer, idp, helpdesk, gateway, f"{front.url}/mcp", f"{mcp.url}{GATED_PATH}", release,
                    forwarded)
    finally:
        release.set()
        front.close()
        mcp.close()
        helpdesk.close()
        issuer.close()


@asynccontextmanager
async def mcp_session(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    """The official SDK's client over Streamable HTTP, the user's token as the bearer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=30, trust_env=False))
        read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


class Raw:
    """Plain HTTP against the gateway, for what the SDK's client would never send."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.http = httpx.Client(timeout=30)

    def post(self, body: Any, token: str | None = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None, url: str | None = None) -> httpx.Response:
        h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        content = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(url or self.world.gateway_url, content=content, headers=h)

    def initialize(self, token: str) -> str:
        resp = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}},
            token)
        assert resp.status_code == 200, resp.text
        sid = resp.headers["mcp-session-id"]
        note = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, token,
                         headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
        assert note.status_code == 202, note.text
        return sid


def messages(resp: httpx.Response) -> list[Any]:
    """The JSON-RPC messages of a response, JSON or SSE."""
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        lines = resp.text.splitlines()
        return [json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()]
    return [resp.json()]


@pytest.fixture
def raw(world: World) -> Iterator[Raw]:
    client = Raw(world)
    yield client
    client.http.close()
