"""The gateway's pieces alone: caches under a frozen clock, session tags, SSE rewriting, list filters."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.gateway.decisions import GrantCache, NoGrant, UserGrant, call_target
from issuer.gateway.jsonrpc import MessageError, parse_message
from issuer.gateway.listing import filter_result
from issuer.gateway.sessions import SessionBinder, SessionRefused
from issuer.gateway.sse import rewrite_events
from tests.gateway.conftest import World, mcp_session


def grant(actions: set[str], until: float, **constraints: Any) -> UserGrant:
    return UserGrant("idp-a:alice", "cap", frozenset(actions), constraints, 1, until)


def test_session_grants_are_reused_until_their_time_and_no_longer() -> None:
    cache = GrantCache(max_entries=2)
    with freeze_time("2026-11-25 10:00:00") as frozen:
        now = 1795600800.0
        cache.put("a", grant({"read_file"}, now + 60))
        cache.put("b", NoGrant("idp-a:eve", "no rule", now + 30))
        frozen.tick(29)
        assert cache.get("a") is not None and cache.get("b") is not None
        frozen.tick(2)
        assert cache.get("b") is None and cache.get("a") is not None
        frozen.tick(30)
        assert cache.get("a") is None
    cache.put("x", grant(set(), 1e12))
    cache.put("y", grant(set(), 1e12))
    cache.put("z", grant(set(), 1e12))
    assert len(cache) == 2 and cache.get("x") is None  # bounded, oldest out


def test_call_decisions_are_never_cached(world: World) -> None:
    async def run() -> None:
        async with mcp_session(world.gateway_url, world.token()) as session:
            for _ in range(2):
                assert not (await session.call_tool("list_tickets", {"project": "apollo"})).is_error

    anyio.run(run)
    calls = [r for r in world.audit() if r.requested_scopes == "tool:list_tickets"]
    assert len(calls) == 2 and len({r.jti for r in calls}) == 2


def test_call_targets() -> None:
    assert call_target("tools/call", {"name": "read_file", "arguments": {"path": "/x"}}) == (
        "tool:read_file", "read_file", {"path": "/x"})
    assert call_target("tools/call", {"name": "ping"}) == ("tool:ping", "ping", {})
    assert call_target("prompts/get", {"name": "triage", "arguments": {"t": "1"}}) == (
        "prompt:triage", "prompt:triage", {"t": "1"})
    assert call_target("resources/read", {"uri": "file:///a"}) == ("resource:read", "resource:read",
                                                                   {"uri": "file:///a"})
    for bad in ({"name": ""}, {"name": 3}, {"name": "x", "arguments": []}, {"name": "x" * 200}):
        with pytest.raises(ValueError):
            call_target("tools/call", bad)
    with pytest.raises(ValueError):
        call_target("resources/read", {"uri": None})


def test_session_tags_bind_a_session_to_its_user() -> None:
    binder = SessionBinder(b"k" * 32)
    sid = binder.bind("idp-a:alice", "abc123")
    assert binder.open("idp-a:alice", sid) == "abc123"
    for user, presented in [("idp-a:mallory", sid), ("idp-a:alice", sid[:-1] + "4"), ("idp-a:alice", "abc123"),
                            ("idp-a:alice", "." * 30), ("idp-a:alice", sid + "\x00")]:
        with pytest.raises(SessionRefused):
            binder.open(user, presented)
    assert SessionBinder(b"j" * 32).bind("idp-a:alice", "abc123") != sid  # another key, another tag
    with pytest.raises(ValueError):
        binder.bind("idp-a:alice", "has space")


def test_lists_are_default_deny() -> None:
    g = grant({"read_file", "prompt:triage", "resource:read"}, 1e12, uri={"glob": "file:///home/alice/*"})
    tools = {"tools": [{"name": "read_file"}, {"name": "delete_ticket"}, {"noname": 1}, "junk"], "nextCursor": "c"}
    assert filter_result("tools/list", tools, g) == {"tools": [{"name": "read_file"}], "nextCursor": "c"}
    assert filter_result("tools/list", tools, None) == {"tools": [], "nextCursor": "c"}
    assert filter_result("tools/list", {"tools": "not a list"}, g) == {"tools": []}
    prompts = {"prompts": [{"name": "triage"}, {"name": "read_file"}]}
    assert filter_result("prompts/list", prompts, g) == {"prompts": [{"name": "triage"}]}
    resources = {"resources": [{"uri": "file:///home/alice/a"}, {"uri": "file:///home/bob/b"}, {"name": "no uri"}]}
    assert filter_result("resources/list", resources, g) == {"resources": [{"uri": "file:///home/alice/a"}]}
    no_resources = grant({"read_file"}, 1e12)
    assert filter_result("resources/templates/list", {"resourceTemplates": [{"uriTemplate": "x"}]},
                         no_resources) == {"resourceTemplates": []}


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


def test_sse_events_are_rewritten_across_chunk_boundaries() -> None:
    progress = b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\n\n'
    answer = b'id: 7\r\ndata: {"jsonrpc":"2.0","id":1,\r\ndata: "result":{"tools":[{"name":"a"},{"name":"b"}]}}\r\n\r\n'
    stream = progress + answer
    parts = [stream[i:i + 5] for i in range(0, len(stream), 5)]

    def transform(message: Any) -> Any:
        if message.get("id") == 1:
            return {**message, "result": filter_result("tools/list", message["result"], grant({"a"}, 1e12))}
        return None

    async def run() -> list[bytes]:
        return [c async for c in rewrite_events(_chunks(parts), transform)]

    out = b"".join(anyio.run(run))
    assert out.startswith(progress)
    tail = out[len(progress):].decode()
    assert tail.startswith("id: 7\n") and tail.endswith("\n\n")
    data = json.loads(tail.split("data: ", 1)[1])
    assert data["result"] == {"tools": [{"name": "a"}]}


#: Hostile strings: NUL, lone surrogates, a byte-order mark, the base64 sentinel, header-breaking characters.
HOSTILE_TEXT = st.text(max_size=20) | st.sampled_from(
    ["\x00", "\ud800", "\ufeff", "=?base64?bGlzdF90aWNrZXRz?=", "a\r\nb", "delete_ticket", "list_tickets", "é"])
METHODS = ["tools/call", "tools/list", "prompts/get", "prompts/list", "resources/read", "resources/list",
           "initialize", "ping", "completion/complete", "admin/exec", "notifications/initialized", "x\ty"]
#: JSON-RPC-shaped messages, so that hostile values get past the parser to the decision and the forwarding.
PARAMS = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["list_tickets", "delete_ticket"]) | HOSTILE_TEXT,
    "uri": HOSTILE_TEXT,
    "arguments": st.dictionaries(st.sampled_from(["project", "path", "n"]),
                                 st.integers() | HOSTILE_TEXT | st.booleans() | st.floats(allow_nan=False), max_size=3),
    "_meta": st.fixed_dictionaries({"io.modelcontextprotocol/protocolVersion": st.sampled_from(
        ["2025-11-25", "2026-07-28"])}),
})
MESSAGES = st.fixed_dictionaries({"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0"]),
                                  "method": st.sampled_from(METHODS) | HOSTILE_TEXT},
                                 optional={"id": st.integers(-3, 3) | HOSTILE_TEXT | st.booleans() | st.none(),
                                           "params": PARAMS})
#: Any body: bytes, JSON of any shape, JSON-RPC-shaped messages; some spoiled by a duplicate member or deep nesting.
HOSTILE_BODIES = st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | HOSTILE_TEXT,
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
                     ["jsonrpc", "id", "method", "params", "result", "error", "name", "arguments"]), inner, max_size=6),
                 max_leaves=20).map(lambda v: json.dumps(v).encode()),
    MESSAGES.map(lambda v: json.dumps(v).encode()),
    MESSAGES.map(lambda v: json.dumps(v).encode()[:-1] + b',"method":"tools/call"}'),
    MESSAGES.map(lambda v: (json.dumps({**v, "params": {"name": "list_tickets", "arguments": {"deep": []}}})
                            .replace("[]", "[" * 40 + "]" * 40)).encode()),
)


@settings(max_examples=300, deadline=None)
@given(HOSTILE_BODIES)
def test_any_body_parses_or_is_a_json_rpc_error(body: bytes) -> None:
    """Whatever arrives, the parser answers with a message or a MessageError carrying a JSON-RPC code: never a 500."""
    try:
        message = parse_message(body)
    except MessageError as e:
        assert e.code in (-32700, -32600, -32602)
        return
    assert message.value.get("jsonrpc") == "2.0"
    assert json.loads(message.encode()) == message.value
