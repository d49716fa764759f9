"""Hostile POSTs to the whole gateway (property-based): a 4xx or a JSON-RPC error, never a 5xx, never undecided.

The gateway runs in-process (ASGI) in front of a recording MCP server; the
issuer's answers come from a stand-in that grants alice ``list_tickets``
and records every call capability it hands out, so that each forwarded call
can be traced to the decision it was forwarded with. The issuer's own
handling of the same inputs is tested with the real issuer elsewhere.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import anyio
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.inbound import decode_header_value

from issuer.gateway import Gateway, GatewayConfig
from issuer.gateway.decisions import CallRefused, NoGrant, Unauthenticated, UserGrant, call_target
from issuer.gateway.jsonrpc import CALL_METHODS, LIST_METHODS, PASS_METHODS, parse_message
from issuer.kernel import strictjson
from tests.gateway.test_units import HOSTILE_BODIES, METHODS

SESSION = "session-capability"


class StandInIssuer:
    """The Decider's interface: alice ("good") may use list_tickets; every call capability is recorded."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[str, dict[str, Any]]] = {}

    async def session(self, token: str) -> UserGrant | NoGrant:
        if token == "good":
            return UserGrant("idp-a:alice", SESSION, frozenset({"list_tickets"}), {}, 1, 1e12)
        if token == "nobody":
            return NoGrant("idp-a:eve", "no rule", 1e12)
        raise Unauthenticated("not a token the issuer accepts")

    async def call(self, token: str, method: str, params: dict[str, Any]) -> str:
        _, action, _ = call_target(method, params)
        if action != "list_tickets":
            raise CallRefused("not_permitted", f"{action} is not permitted for this user")
        capability = f"call-{len(self.calls)}"
        self.calls[capability] = (method, copy.deepcopy(params))
        return capability

    async def aclose(self) -> None:
        return None


class RecordingServer:
    """An MCP server that lists a tool alice may not see and remembers every request it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, list[str]], bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        self.received.append((headers, body))
        value = json.loads(body) if body else {}
        if "id" not in value or "method" not in value:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        result = {"tools": [{"name": "list_tickets"}, {"name": "delete_ticket"}]} if value["method"] == \
            "tools/list" else {}
        answer = json.dumps({"jsonrpc": "2.0", "id": value["id"], "result": result}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})


def b64(value: str) -> str:
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


#: Header values a real HTTP server can deliver: latin-1, no CR, LF or NUL.
VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF) | st.just("\t"), max_size=30)
HEADERS = st.fixed_dictionaries({
    "authorization": st.sampled_from(["Bearer good"] * 4 + ["Bearer nobody", "Bearer forged", "Basic eA=="]) | VALUE,
    "content-type": st.sampled_from(["application/json"] * 4 + ["application/json; charset=utf-8", "text/plain"])
    | VALUE,
}, optional={
    "mcp-method": st.sampled_from(METHODS) | VALUE,
    "mcp-name": st.sampled_from(["list_tickets", "delete_ticket", b64("list_tickets"), "=?base64?!?="]) | VALUE,
    "mcp-param-project": st.sampled_from(["apollo", b64("apollo"), "42", "true"]) | VALUE,
    "mcp-protocol-version": st.sampled_from(["2025-11-25", "2026-07-28", "1999-01-01"]) | VALUE,
    "mcp-session-id": VALUE,
    "origin": VALUE,
    "cookie": VALUE,
    "x-forwarded-for": VALUE,
})


def _check_forwarded(headers: dict[str, list[str]], body: bytes, calls: dict[str, tuple[str, dict[str, Any]]],
                     sent: bytes) -> None:
    """One request that reached the MCP server: decided, re-serialised, its mirrored headers the body's."""
    message = parse_message(body)
    assert strictjson.loads(body) == strictjson.loads(sent)  # the message decided on, nothing else
    (authorization,) = headers["authorization"]
    capability = authorization.removeprefix("Bearer ")
    m = message.method
    if m in CALL_METHODS and message.is_request:
        assert calls[capability] == (m, message.params)  # a call-bound capability for exactly this call
    else:
        assert capability == SESSION
        assert m is None or m in PASS_METHODS or m in LIST_METHODS or (m.startswith("notifications/")
                                                                       and not message.is_request)
    assert "cookie" not in headers and "x-forwarded-for" not in headers and "origin" not in headers
    assert headers.get("mcp-method", [None]) == [m] or (m is None and "mcp-method" not in headers)
    if "mcp-name" in headers:
        assert decode_header_value(headers["mcp-name"][0]) in (message.params.get("name"), message.params.get("uri"))
    for name, values in headers.items():
        if name.startswith("mcp-param-"):
            assert len(values) == 1 and m == "tools/call"
            assert decode_header_value(values[0]) in _leaves(message.params["arguments"])


def _leaves(arguments: Any) -> set[str]:
    """The argument values a client may mirror into Mcp-Param headers, as it writes them."""
    out: set[str] = set()
    stack = [arguments]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, bool):
            out.add(str(node).lower())
        elif isinstance(node, int | str):
            out.add(str(node))
        elif isinstance(node, float) and node.is_integer():
            out.add(str(int(node)))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=HOSTILE_BODIES, headers=HEADERS)
def test_hostile_posts_get_a_4xx_or_a_json_rpc_error_and_nothing_undecided_is_forwarded(
        body: bytes, headers: dict[str, str]) -> None:
    issuer = StandInIssuer()
    server = RecordingServer()
    gateway = Gateway(GatewayConfig(upstream="http://127.0.0.1:9/mcp", resource="https://gw.example/mcp",
                                    issuer="http://127.0.0.1:9", upstream_resource="https://mcp.example",
                                    client_id="mcp-gateway", client_secret="s", max_body=4096),
                      decider=issuer)  # type: ignore[arg-type]

    async def run() -> httpx.Response:
        gateway.upstream.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=server))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw") as client:
            sent = {b"accept": b"application/json, text/event-stream"} | {k.encode(): v.encode("latin-1")
                                                                           for k, v in headers.items()}
            return await client.post("/mcp", content=body, headers=sent)

    resp = anyio.run(run)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert "error" in resp.json()
    elif resp.content:
        answer = resp.json()
        assert answer["jsonrpc"] == "2.0" and ("result" in answer or "error" in answer)
        assert "delete_ticket" not in json.dumps(answer.get("result"))
    for forwarded_headers, forwarded_body in server.received:
        _check_forwarded(forwarded_headers, forwarded_body, issuer.calls, body)
