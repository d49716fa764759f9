"""Issue 10's acceptance story: the issuer, the gateway and an MCP server built with the official SDK, driven by
the official SDK's client over Streamable HTTP."""

from __future__ import annotations

import hashlib

import anyio
import httpx
import mcp_types
import pytest
from mcp.shared.exceptions import MCPError

from tests.gateway.conftest import GATEWAY_RESOURCE, World, mcp_session


def text(result: mcp_types.CallToolResult) -> str:
    return "".join(b.text for b in result.content if isinstance(b, mcp_types.TextContent))


async def _story(world: World, alice: str, mallory: str) -> None:
    async with mcp_session(world.gateway_url, alice) as session:
        listed = await session.list_tools()
        assert sorted(t.name for t in listed.tools) == ["count_slowly", "list_tickets", "read_file"]
        result = await session.call_tool("list_tickets", {"project": "apollo"})
        assert not result.is_error, text(result)
        assert result.structured_content is not None
        assert [t["id"] for t in result.structured_content["tickets"]] == [101, 102]

        # The prompt-injected read: refused by the argument check, and the session stays usable.
        with pytest.raises(MCPError) as refused:
            await session.call_tool("read_file", {"path": "/home/alice/../bob/salary.txt"})
        assert refused.value.error.code == -32001
        assert refused.value.error.message == "argument path is outside its constraint"
        assert refused.value.error.data["reason"] == "argument_refused"
        assert refused.value.error.data["argument"] == "path"
        notes = await session.call_tool("read_file", {"path": "/home/alice/notes.txt"})
        assert not notes.is_error and "EUR 48,000" in text(notes)

    async with mcp_session(world.gateway_url, mallory) as session:
        assert (await session.list_tools()).tools == []
        with pytest.raises(MCPError) as refused:
            await session.call_tool("list_tickets", {"project": "hr"})
        assert refused.value.error.data["reason"] == "not_permitted"
        assert refused.value.error.message == "list_tickets is not permitted for this user"
        await session.send_ping()  # still usable


def test_the_gateway_story(world: World) -> None:
    alice, mallory = world.token("alice"), world.token("mallory")
    anyio.run(_story, world, alice, mallory)

    # No token: 401 with the RFC 9728 metadata.
    resp = httpx.post(world.gateway_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                      headers={"Accept": "application/json, text/event-stream"})
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge == 'Bearer resource_metadata="https://gateway.example/.well-known/oauth-protected-resource/mcp"'
    base = world.gateway_url.removesuffix("/mcp")
    meta = httpx.get(f"{base}/.well-known/oauth-protected-resource/mcp")
    assert meta.status_code == 200 and meta.json()["resource"] == GATEWAY_RESOURCE
    assert meta.json()["authorization_servers"] == [world.issuer.url]

    # Every decision is in the issuer's audit trail, the calls with their arguments.
    rows = [(r.decision, r.reason, r.sub, r.client_id, r.tool, r.requested_scopes,
             (r.authorization_details or [{}])[0].get("arguments")) for r in world.audit()]
    assert rows == [
        ("granted", "granted", "idp-a:alice", "mcp-gateway", "helpdesk-tools", None, None),  # her session: the list
        ("granted", "granted", "idp-a:alice", "mcp-gateway", "helpdesk-tools", "tool:list_tickets",
         {"project": "apollo"}),
        ("denied", "invalid_scope", "idp-a:alice", "mcp-gateway", "helpdesk-tools", "tool:read_file",
         {"path": "/home/alice/../bob/salary.txt"}),
        ("granted", "granted", "idp-a:alice", "mcp-gateway", "helpdesk-tools", "tool:read_file",
         {"path": "/home/alice/notes.txt"}),
        ("granted", "granted", "idp-a:mallory", "mcp-gateway", "helpdesk-tools", None, None),
        ("denied", "scope_not_entitled", "idp-a:mallory", "mcp-gateway", "helpdesk-tools", "tool:list_tickets",
         {"project": "hr"}),
    ]

    # The MCP server saw alice as the user, the gateway as the actor, and never a user's own token.
    assert {(c.tool, c.sub, c.actor) for c in world.helpdesk.seen} == {
        ("list_tickets", "idp-a:alice", "mcp-gateway"), ("read_file", "idp-a:alice", "mcp-gateway")}
    assert all(c.call_bound for c in world.helpdesk.seen)
    assert world.helpdesk.bearer_digests
    assert digest(alice) not in world.helpdesk.bearer_digests
    assert digest(mallory) not in world.helpdesk.bearer_digests


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
