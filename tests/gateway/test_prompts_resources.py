"""prompts/get and resources/read are decided by policy like tools/call; their lists are filtered the same way."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tests.gateway.conftest import World, mcp_session


def test_prompts_and_resources_are_decided_and_filtered(world: World) -> None:
    async def alice() -> None:
        async with mcp_session(world.gateway_url, world.token("alice")) as session:
            assert [p.name for p in (await session.list_prompts()).prompts] == ["triage"]
            got = await session.get_prompt("triage", {"ticket": "101"})
            assert "Triage ticket 101" in got.messages[0].content.text  # type: ignore[union-attr]
            with pytest.raises(MCPError) as refused:
                await session.get_prompt("escalate", {"ticket": "101"})
            assert refused.value.error.data["reason"] == "not_permitted"
            listed = [str(r.uri) for r in (await session.list_resources()).resources]
            assert listed == ["file:///home/alice/notes.txt"]
            read = await session.read_resource("file:///home/alice/notes.txt")
            assert read.contents[0].text == "contents of file:///home/alice/notes.txt"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as refused:
                await session.read_resource("file:///home/bob/salary.txt")
            assert refused.value.error.data == {**refused.value.error.data, "reason": "argument_refused",
                                                "argument": "uri"}

    async def mallory() -> None:
        async with mcp_session(world.gateway_url, world.token("mallory")) as session:
            assert (await session.list_prompts()).prompts == []
            assert (await session.list_resources()).resources == []
            with pytest.raises(MCPError):
                await session.read_resource("file:///home/alice/notes.txt")

    anyio.run(alice)
    anyio.run(mallory)
    ran = [(c.tool, c.sub, c.arguments) for c in world.helpdesk.seen]
    assert ran == [("prompt:triage", "idp-a:alice", {"ticket": "101"}),
                   ("resource:read", "idp-a:alice", {"uri": "file:///home/alice/notes.txt"})]
    decided = [(r.decision, r.requested_scopes, (r.authorization_details or [{}])[0].get("arguments"))
               for r in world.audit() if r.requested_scopes != "mcp:connect" and r.requested_scopes]
    assert ("denied", "resource:read", {"uri": "file:///home/bob/salary.txt"}) in decided
    assert ("granted", "prompt:triage", {"ticket": "101"}) in decided


def test_argument_completion_only_for_what_the_user_may_use(world: World, raw: Any) -> None:
    """completion/complete would list a prompt's argument values: refused for prompts the user may not get."""
    token = world.token("mallory")
    sid = raw.initialize(token)
    h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    before = world.helpdesk.requests
    for ref in ({"type": "ref/prompt", "name": "triage"}, {"type": "ref/resource", "uri": "file:///home/{u}"},
                {"type": "ref/other"}, "junk"):
        resp = raw.post({"jsonrpc": "2.0", "id": 3, "method": "completion/complete",
                         "params": {"ref": ref, "argument": {"name": "ticket", "value": "1"}}}, token, headers=h)
        assert resp.json()["error"]["data"] == {"reason": "not_permitted"}
    assert world.helpdesk.requests == before
