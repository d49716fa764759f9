"""SSE through the gateway: unbuffered, filtered where it carries a list; refusals that keep the session usable."""

from __future__ import annotations

import anyio
import mcp_types
import pytest
from mcp.shared.exceptions import MCPError

from tests.gateway.conftest import Raw, World, mcp_session, messages


def test_progress_reaches_the_client_before_the_tool_returns(world: World) -> None:
    """The tool waits until the client has seen its first progress notification: a buffering proxy deadlocks it."""
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total, message))
        world.release.set()

    async def run() -> mcp_types.CallToolResult:
        async with mcp_session(world.gateway_url, world.token()) as session:
            return await session.call_tool("count_slowly", {"n": 3}, progress_callback=progress)

    result = anyio.run(run)
    assert not result.is_error
    assert result.content[0].text == "released by the client"  # type: ignore[union-attr]
    assert seen[0] == (1, 3, "first step")


@pytest.mark.parametrize("world", [False, True], indirect=True, ids=["sse", "json"])
def test_lists_are_filtered_whether_the_server_answers_sse_or_json(world: World, raw: Raw,
                                                                  request: pytest.FixtureRequest) -> None:
    alice = world.token()
    sid = raw.initialize(alice)
    resp = raw.post({"jsonrpc": "2.0", "id": "l1", "method": "tools/list"}, alice,
                    headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
    expected = "application/json" if request.node.callspec.params["world"] else "text/event-stream"
    assert resp.headers["content-type"].startswith(expected)
    (answer,) = [m for m in messages(resp) if m.get("id") == "l1"]
    assert sorted(t["name"] for t in answer["result"]["tools"]) == ["count_slowly", "list_tickets", "read_file"]
    assert "delete_ticket" not in resp.text


def test_rate_limited_calls_name_the_retry_time_and_the_session_survives(world: World) -> None:
    world.release.set()  # count_slowly returns at once

    async def run() -> tuple[MCPError, mcp_types.CallToolResult]:
        async with mcp_session(world.gateway_url, world.token()) as session:
            for _ in range(5):
                try:
                    await session.call_tool("count_slowly", {"n": 1})
                except MCPError as e:
                    return e, await session.call_tool("list_tickets", {"project": "apollo"})
            raise AssertionError("the rate limit never applied")

    refused, after = anyio.run(run)
    assert refused.error.code == -32001
    assert refused.error.data["reason"] == "rate_limited"
    retry = refused.error.data["retry_after"]
    assert retry > 0 and refused.error.message == f"rate limited; retry after {retry:g} s"
    assert not after.is_error
