"""The gateway speaks each protocol version's transport: the 2025 handshake versions with sessions, and
2026-07-28's per-request envelope without them, decided and filtered the same way."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.gateway.conftest import Raw, World, messages


def test_the_2026_07_28_envelope_is_decided_like_the_others(world: World) -> None:
    async def run() -> None:
        async with AsyncExitStack() as stack:
            http = await stack.enter_async_context(httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {world.token()}"}, timeout=30, trust_env=False))
            read, write = await stack.enter_async_context(streamable_http_client(world.gateway_url, http_client=http))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.discover()
            names = sorted(t.name for t in (await session.list_tools()).tools)
            assert names == ["count_slowly", "list_tickets", "read_file"]
            ok = await session.call_tool("list_tickets", {"project": "apollo"})
            assert not ok.is_error
            with pytest.raises(MCPError) as refused:
                await session.call_tool("read_file", {"path": "/home/alice/../bob/salary.txt"})
            assert refused.value.error.data["argument"] == "path"

    anyio.run(run)
    modern = [c for c in world.helpdesk.seen if c.tool == "list_tickets"]
    assert [(c.sub, c.actor) for c in modern] == [("idp-a:alice", "mcp-gateway")]


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_handshake_versions(world: World, raw: Raw, version: str) -> None:
    token = world.token()
    resp = raw.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}, token)
    assert resp.status_code == 200 and messages(resp)[0]["result"]["protocolVersion"] == version
    sid = resp.headers["mcp-session-id"]
    h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": version}
    assert raw.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, token, headers=h).status_code == 202
    listed = raw.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, token, headers=h)
    assert sorted(t["name"] for t in messages(listed)[0]["result"]["tools"]) == [
        "count_slowly", "list_tickets", "read_file"]
