"""DPoP-bound capabilities at MCP servers: FastMCP (the auth provider's own middleware) and the official SDK
(through ``CapabilityTokenVerifier.protect``) admit one only with a valid proof of its key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastmcp import FastMCP
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.testclient import TestClient

from issuer.dpop import access_token_hash
from issuer.sdk.verifier import CapabilityVerifier
from issuer.sdk.verifier import fastmcp as fastmcp_adapter
from issuer.sdk.verifier import mcp as mcp_adapter
from tests.dpop.test_proof import Holder
from tests.sdk.verifier.conftest import AUDIENCE, FakeIssuer

URL = "http://127.0.0.1:8000/mcp"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def fastmcp_app(verifier: CapabilityVerifier) -> Any:
    server = FastMCP("tickets", auth=fastmcp_adapter.CapabilityAuth(verifier))

    @server.tool
    async def ping() -> str:
        return "pong"

    return server.http_app(path="/mcp")


def official_app(verifier: CapabilityVerifier) -> Any:
    capabilities = mcp_adapter.CapabilityTokenVerifier(verifier)
    server = MCPServer("tickets", token_verifier=capabilities, auth=AuthSettings.model_validate(
        {"issuer_url": verifier.issuer, "resource_server_url": AUDIENCE, "validate_token_resource": True}))

    @server.tool()
    async def ping() -> str:
        return "pong"

    return capabilities.protect(server.streamable_http_app(streamable_http_path="/mcp"))


@pytest.fixture(params=["fastmcp", "official"])
def build(request: pytest.FixtureRequest) -> Callable[[CapabilityVerifier], Any]:
    return {"fastmcp": fastmcp_app, "official": official_app}[request.param]  # type: ignore[return-value]


def _post(client: TestClient, **headers: str) -> Any:
    return client.post("/mcp", json=INITIALIZE, headers={"Accept": "application/json, text/event-stream",
                                                         **headers})


def test_a_bound_capability_needs_a_proof_of_its_key(fake: FakeIssuer, verifier: CapabilityVerifier,
                                                      build: Callable[[CapabilityVerifier], Any]) -> None:
    holder = Holder()
    bound = fake.token(cnf={"jkt": holder.jkt})
    with TestClient(build(verifier), base_url="http://127.0.0.1:8000") as client:
        ok = _post(client, Authorization=f"DPoP {bound}",
                   DPoP=holder.proof(htu=URL, ath=access_token_hash(bound)))
        assert ok.status_code == 200, ok.text
        for headers in (
            {"Authorization": f"Bearer {bound}"},  # stolen, sent as bearer
            {"Authorization": f"DPoP {bound}"},  # no proof
            {"Authorization": f"DPoP {bound}", "DPoP": Holder().proof(htu=URL, ath=access_token_hash(bound))},
            {"Authorization": f"DPoP {bound}", "DPoP": holder.proof(htu="http://127.0.0.1:8000/other",
                                                                   ath=access_token_hash(bound))},
        ):
            assert _post(client, **headers).status_code == 401, headers
        assert _post(client, Authorization=f"Bearer {fake.token()}").status_code == 200  # bearer still works
