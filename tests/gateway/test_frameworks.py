"""The verifier SDK in the two Python MCP frameworks: one line to accept capabilities, one call to go upstream as
the same user. Both servers sit behind the gateway and are driven by the official SDK's client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import mcp_types
import pytest
from fastmcp import FastMCP
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from issuer.demo.gated_mcp import GATED_RESOURCE
from issuer.demo.servers import BackgroundAsgi
from issuer.gateway import Gateway, GatewayConfig
from issuer.registry import ScopeSpec, add_tool
from issuer.sdk.client import ClientSecret, ExchangeClient
from issuer.sdk.verifier import CapabilityVerifier
from issuer.sdk.verifier import fastmcp as fastmcp_adapter
from issuer.sdk.verifier import mcp as mcp_adapter
from tests.conftest import LiveIssuer, make_settings
from tests.gateway.conftest import GATEWAY_RESOURCE, POLICY, mcp_session, register
from tests.support.fake_idp import FakeIdP

FILES_API = "https://files-api.example"
CHAIN_POLICY = POLICY + """
  - id: helpdesk-to-files
    idp: idp-a
    groups: [support]
    clients: [helpdesk-tools]
    tool: files-api
    scopes: [files:read]
"""


def build_fastmcp(verifier: CapabilityVerifier, exchange: ExchangeClient) -> Any:
    auth = fastmcp_adapter.CapabilityAuth(verifier)
    server = FastMCP("helpdesk-tools", auth=auth)  # the one line

    @server.tool
    async def read_file(path: str) -> dict[str, Any]:
        cap = await auth.authorize_call(action="read_file", arguments={"path": path})
        upstream = await fastmcp_adapter.exchange_upstream(exchange, tool=FILES_API, scope="files:read")
        return {"sub": cap.sub, "upstream": jwt.decode(upstream.access_token, options={"verify_signature": False})}

    return server.http_app(path="/mcp")


def build_official(verifier: CapabilityVerifier, exchange: ExchangeClient) -> Any:
    capabilities = mcp_adapter.CapabilityTokenVerifier(verifier)
    server = MCPServer("helpdesk-tools", token_verifier=capabilities, auth=AuthSettings.model_validate(
        {"issuer_url": verifier.issuer, "resource_server_url": GATED_RESOURCE, "validate_token_resource": True}))

    @server.tool()
    async def read_file(path: str) -> dict[str, Any]:
        cap = await capabilities.authorize_call(action="read_file", arguments={"path": path})
        upstream = await mcp_adapter.exchange_upstream(exchange, tool=FILES_API, scope="files:read")
        return {"sub": cap.sub, "upstream": jwt.decode(upstream.access_token, options={"verify_signature": False})}

    return server.streamable_http_app(streamable_http_path="/mcp")


@pytest.fixture(params=["fastmcp", "official"])
def framework(request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str,
              idp: FakeIdP) -> Iterator[tuple[str, str, LiveIssuer]]:
    issuer = LiveIssuer(make_settings(tmp_path, sqlite_url), idp)
    register(issuer)
    add_tool(issuer.db, name="files-api", resource_uri=FILES_API, scopes=[ScopeSpec("files:read")])
    # The MCP server is a client of its own, to chain the capability it received (its aud is this resource).
    issuer.add_client("helpdesk-tools", GATED_RESOURCE, ["files-api"], may_chain=True)
    issuer.apply(CHAIN_POLICY)
    verifier = CapabilityVerifier(issuer=issuer.url, audience=GATED_RESOURCE, allow_insecure_loopback=True)
    exchange = ExchangeClient(issuer=issuer.url, client_id="helpdesk-tools", allow_insecure_loopback=True,
                              credentials=ClientSecret(issuer.secrets["helpdesk-tools"]))
    build = build_fastmcp if request.param == "fastmcp" else build_official
    mcp = BackgroundAsgi(build(verifier, exchange))
    gateway = BackgroundAsgi(Gateway(GatewayConfig(
        upstream=f"{mcp.url}/mcp", resource=GATEWAY_RESOURCE, issuer=issuer.url, upstream_resource=GATED_RESOURCE,
        client_id="mcp-gateway", client_secret=issuer.secrets["mcp-gateway"])))
    try:
        yield f"{gateway.url}/mcp", f"{mcp.url}/mcp", issuer
    finally:
        gateway.close()
        mcp.close()
        verifier.close()
        issuer.close()


def test_one_line_to_accept_capabilities_and_one_call_to_chain(framework: tuple[str, str, LiveIssuer]) -> None:
    url, _, issuer = framework
    token = issuer.idp.token("alice", aud=GATEWAY_RESOURCE, groups=["support"], projects=["apollo"])

    async def run() -> mcp_types.CallToolResult:
        async with mcp_session(url, token) as session:
            assert [t.name for t in (await session.list_tools()).tools] == ["read_file"]
            return await session.call_tool("read_file", {"path": "/home/alice/notes.txt"})

    result = anyio.run(run)
    assert not result.is_error, result.content
    body = result.structured_content
    assert body is not None and body["sub"] == "idp-a:alice"
    upstream = body["upstream"]
    # The upstream capability: same user, this MCP server acting, the gateway nested as the earlier actor.
    assert upstream["sub"] == "idp-a:alice" and upstream["aud"] == FILES_API
    assert upstream["act"] == {"sub": "helpdesk-tools", "act": {"sub": "mcp-gateway"}}


def test_the_user_token_itself_is_refused_by_both_frameworks(framework: tuple[str, str, LiveIssuer]) -> None:
    """Straight to the MCP server, around the gateway, with the user's own token (even one for this audience)."""
    _, mcp_url, issuer = framework
    for aud in (GATED_RESOURCE, GATEWAY_RESOURCE):
        token = issuer.idp.token("alice", aud=aud)
        resp = httpx.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                          headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})
        assert resp.status_code == 401
