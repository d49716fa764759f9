"""The gateway fails closed: what it cannot check is refused, never passed on (issue 17).

Mirrored MCP headers that contradict the body, MCP server answers to a list
request it cannot read as that request's response, JSON no parser could
agree on, and answers after which the connection is closed without saying so.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from issuer.demo.servers import BackgroundAsgi
from issuer.gateway import Gateway
from issuer.gateway.security_log import AUDIT_LOGGER
from tests.gateway.conftest import Raw, World, messages

CALL: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "list_tickets", "arguments": {"project": "apollo"}}}


def b64(value: str) -> str:
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


def decided_calls(world: World) -> list[Any]:
    """The issuer's audit rows of call decisions (the session exchange of authentication is not one)."""
    return [r for r in world.audit() if (r.requested_scopes or "").startswith("tool:")]


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER]


# -- mirrored headers ------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "headers"), [
    (CALL, {"Mcp-Method": "tools/list"}),                    # a router reads the header, the server the body
    (CALL, {"Mcp-Method": "Tools/Call"}),                    # header values are case-sensitive
    (CALL, {"Mcp-Name": "delete_ticket"}),
    (CALL, {"Mcp-Name": b64("delete_ticket")}),              # the base64 form is decoded before comparing
    (CALL, {"Mcp-Name": "=?base64?not base64!?="}),          # a malformed sentinel matches nothing
    (CALL, {"Mcp-Param-Project": "website"}),                # the body says apollo
    (CALL, {"Mcp-Param-Project": b64("website")}),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"Mcp-Name": "list_tickets"}),  # names nothing
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"Mcp-Param-Project": "apollo"}),
    ({"jsonrpc": "2.0", "id": 1, "result": {}}, {"Mcp-Method": "tools/call"}),             # a response has none
    ({**CALL, "params": {**CALL["params"], "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}},
     {"MCP-Protocol-Version": "2025-11-25"}),
])
def test_mirrored_headers_that_contradict_the_body_are_refused(world: World, raw: Raw, body: dict[str, Any],
                                                               headers: dict[str, str],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=AUDIT_LOGGER):
        resp = raw.post(body, world.token(), headers=headers)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == -32020 and resp.json()["id"] == body["id"]
    assert world.helpdesk.requests == 0 and decided_calls(world) == []  # neither forwarded nor decided
    assert [e["event"] for e in events(caplog)] == ["gateway.header_mismatch"]


def test_repeated_mirrored_headers_are_refused(world: World) -> None:
    headers = [("Authorization", f"Bearer {world.token()}"), ("Content-Type", "application/json"),
               ("Mcp-Name", "list_tickets"), ("Mcp-Name", "delete_ticket")]
    resp = httpx.post(world.gateway_url, content=json.dumps(CALL), headers=headers)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == -32020
    assert world.helpdesk.requests == 0


def test_forwarded_mirrored_headers_are_rebuilt_from_the_decided_message(world: World, raw: Raw) -> None:
    alice = world.token()
    sid = raw.initialize(alice)
    h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25",
         "Mcp-Name": b64("list_tickets"), "Mcp-Param-Project": b64("apollo")}   # agree with the body, encoded
    resp = raw.post(CALL, alice, headers=h)
    assert resp.status_code == 200 and "result" in messages(resp)[0], resp.text
    sent = world.forwarded[-1]
    assert sent["mcp-method"] == ["tools/call"]           # added though the client sent none
    assert sent["mcp-name"] == ["list_tickets"] and sent["mcp-param-project"] == ["apollo"]
    listed = raw.post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, alice,
                      headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
    assert listed.status_code == 200
    assert world.forwarded[-1]["mcp-method"] == ["tools/list"] and "mcp-name" not in world.forwarded[-1]
    # A DELETE has no message to mirror: the client's copies are not forwarded.
    ended = raw.http.delete(world.gateway_url, headers={"Authorization": f"Bearer {alice}", "Mcp-Session-Id": sid,
                                                        "Mcp-Method": "tools/call", "Mcp-Name": "delete_ticket"})
    assert ended.status_code == 200
    assert "mcp-method" not in world.forwarded[-1] and "mcp-name" not in world.forwarded[-1]


# -- strict JSON -----------------------------------------------------------------------------------

def _call(arguments: str) -> bytes:
    return ('{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_tickets","arguments":'
            + arguments + "}}").encode()


@pytest.mark.parametrize("body", [
    _call('{"project":"apollo\\u0000"}'),                     # PostgreSQL cannot store it: a refusal without a record
    _call('{"project":"\\ud800"}'),                           # a lone surrogate is not Unicode
    _call('{"project":"apollo","project":"website"}'),        # which one did the issuer see?
    _call('{"project":"apollo","n":1e400}'),                  # overflows to infinity
    _call('{"project":"apollo","deep":' + "[" * 40 + "]" * 40 + "}"),
    _call('{"project":"apollo"}') + b"\x00",
    b"\xef\xbb\xbf" + _call('{"project":"apollo"}'),          # a byte-order mark
])
def test_json_parsers_could_disagree_on_is_a_parse_error_never_forwarded_never_decided(world: World, raw: Raw,
                                                                                        body: bytes) -> None:
    resp = raw.post(None, world.token(), raw=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == -32700
    assert world.helpdesk.requests == 0 and decided_calls(world) == []


# -- answers to list requests ----------------------------------------------------------------------

SECRET_TOOLS = {"tools": [{"name": "list_tickets"}, {"name": "delete_ticket"}]}


def _sse(*data: str) -> bytes:
    return "".join(f"event: message\ndata: {d}\n\n" for d in data).encode()


class Hostile:
    """An MCP server whose every answer is ``(status, content type, body)``, set by the test."""

    def __init__(self) -> None:
        self.answer: tuple[int, str, bytes] = (200, "application/json", b"{}")
        self.received: list[dict[str, str]] = []  #: each request's headers (lower-case names)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        self.received.append({k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]})
        status, ctype, body = self.answer
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def hostile(world: World) -> Iterator[tuple[Hostile, str]]:
    server = Hostile()
    upstream = BackgroundAsgi(server)
    gateway = BackgroundAsgi(Gateway(dataclasses.replace(world.gateway.config, upstream=f"{upstream.url}/mcp")))
    try:
        yield server, f"{gateway.url}/mcp"
    finally:
        gateway.close()
        upstream.close()


ANSWERS: dict[str, tuple[int, str, str | bytes]] = {
    "json array": (200, "application/json", json.dumps([{"jsonrpc": "2.0", "id": 1, "result": SECRET_TOOLS}])),
    "json id of another type": (200, "application/json", json.dumps({"jsonrpc": "2.0", "id": "1",
                                                                     "result": SECRET_TOOLS})),
    "json id of another value": (200, "application/json", json.dumps({"jsonrpc": "2.0", "id": 2,
                                                                      "result": SECRET_TOOLS})),
    "json result not an object": (200, "application/json", json.dumps({"jsonrpc": "2.0", "id": 1,
                                                                       "result": SECRET_TOOLS["tools"]})),
    "json tools not a list": (200, "application/json", json.dumps({"jsonrpc": "2.0", "id": 1, "result": {
        "tools": {"delete_ticket": {}}}})),
    "json NaN": (200, "application/json", '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_ticket",'
                                          '"x":NaN}]}}'),
    "json duplicate member": (200, "application/json", '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":'
                                                       '"delete_ticket"}]},"result":{"tools":[]}}'),
    "json not a response": (200, "application/json", json.dumps({"jsonrpc": "2.0", "method": "x", "params":
                                                                 SECRET_TOOLS})),
    "another content type": (200, "text/plain", json.dumps({"jsonrpc": "2.0", "id": 1, "result": SECRET_TOOLS})),
    "no content type": (200, "", json.dumps({"jsonrpc": "2.0", "id": 1, "result": SECRET_TOOLS})),
    "server error": (500, "text/html", "<p>delete_ticket</p>"),
    "sse array": (200, "text/event-stream", _sse(json.dumps([{"jsonrpc": "2.0", "id": 1,
                                                               "result": SECRET_TOOLS}]))),
    "sse id of another value": (200, "text/event-stream", _sse(json.dumps({"jsonrpc": "2.0", "id": 9,
                                                                           "result": SECRET_TOOLS}))),
    "sse id of another type": (200, "text/event-stream", _sse(json.dumps({"jsonrpc": "2.0", "id": True,
                                                                          "result": SECRET_TOOLS}))),
    "sse not json": (200, "text/event-stream", _sse('{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":'
                                                    '"delete_ticket"}]}')),
    "sse duplicate member": (200, "text/event-stream", _sse('{"jsonrpc":"2.0","id":1,"result":{"tools":[]},'
                                                            '"result":{"tools":[{"name":"delete_ticket"}]}}')),
    "sse result not an object": (200, "text/event-stream", _sse(json.dumps({"jsonrpc": "2.0", "id": 1,
                                                                            "result": SECRET_TOOLS["tools"]}))),
}


@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_a_list_answer_the_gateway_cannot_read_is_an_error_never_passed(world: World, hostile: tuple[Hostile, str],
                                                                       case: str,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    server, url = hostile
    status, ctype, body = ANSWERS[case]
    server.answer = (status, ctype, body.encode() if isinstance(body, str) else body)
    with caplog.at_level(logging.WARNING, logger=AUDIT_LOGGER):
        resp = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30,
                          headers={"Authorization": f"Bearer {world.token()}",
                                   "Accept": "application/json, text/event-stream"})
    assert "delete_ticket" not in resp.text
    assert resp.status_code < 500 or resp.status_code == 502
    last = messages(resp)[-1]
    assert last["id"] == 1 and last["error"]["code"] == -32000, resp.text
    assert "gateway.answer_refused" in [e["event"] for e in events(caplog)]


def test_a_list_answer_that_reads_is_filtered_and_its_error_passed(world: World, hostile: tuple[Hostile, str]) -> None:
    server, url = hostile
    post = {"headers": {"Authorization": f"Bearer {world.token()}"}, "timeout": 30}
    good = json.dumps({"jsonrpc": "2.0", "id": "x", "result": {**SECRET_TOOLS, "nextCursor": "c"}})
    priming = b"id: 0\ndata: \n\n"  # a resumable stream's first event carries an id and empty data
    for ctype, body in (("application/json", good.encode()), ("text/event-stream", priming + _sse(
            '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}', good))):
        server.answer = (200, ctype, body)
        resp = httpx.post(url, json={"jsonrpc": "2.0", "id": "x", "method": "tools/list"}, **post)  # type: ignore[arg-type]
        assert resp.status_code == 200
        assert messages(resp)[-1] == {"jsonrpc": "2.0", "id": "x", "result": {"tools": [{"name": "list_tickets"}],
                                                                               "nextCursor": "c"}}
    server.answer = (404, "application/json", b'{"jsonrpc":"2.0","id":"x","error":{"code":-32001,"message":'
                                              b'"Session not found","data":{"tools":["delete_ticket"]}}}')
    resp = httpx.post(url, json={"jsonrpc": "2.0", "id": "x", "method": "tools/list"}, **post)  # type: ignore[arg-type]
    assert resp.status_code == 404
    assert resp.json() == {"jsonrpc": "2.0", "id": "x", "error": {"code": -32001, "message": "Session not found"}}


def test_an_event_the_gateway_cannot_read_on_the_servers_stream_is_dropped(world: World,
                                                                          hostile: tuple[Hostile, str]) -> None:
    server, url = hostile
    replayed = {"jsonrpc": "2.0", "id": 4, "result": SECRET_TOOLS}
    server.answer = (200, "text/event-stream", _sse(json.dumps([replayed]), '{"id":4,"result":{"tools":[{"name":'
                                                    '"delete_ticket"}]}', json.dumps(replayed)))
    resp = httpx.get(url, headers={"Authorization": f"Bearer {world.token()}", "Accept": "text/event-stream"},
                     timeout=30)
    assert resp.status_code == 200 and "delete_ticket" not in resp.text
    assert messages(resp) == [{"jsonrpc": "2.0", "id": 4, "result": {"tools": [{"name": "list_tickets"}]}}]


# -- Connection: close -----------------------------------------------------------------------------

def _exchange(url: str, request: bytes) -> tuple[bytes, bytes]:
    """Send one raw request; the answer's head, and everything until the server closes (or 10 s pass)."""
    host, _, rest = url.removeprefix("http://").partition(":")
    port = int(rest.split("/", 1)[0])
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            return data, b"still open"
        except ConnectionResetError:  # closed with bytes of ours unread: a reset, after the answer
            pass
    return data, b"closed"


@pytest.mark.parametrize("case", ["too large", "unsupported type", "no token"])
def test_an_answer_before_the_body_is_read_says_connection_close_and_closes(world: World, case: str) -> None:
    token = world.token()
    body = json.dumps(CALL).encode()
    declared = 70_000 if case == "too large" else len(body)  # max_body is 64 KiB in the world
    ctype = "text/plain" if case == "unsupported type" else "application/json"
    auth = "" if case == "no token" else f"Authorization: Bearer {token}\r\n"
    head = (f"POST /mcp HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: {ctype}\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    answer, state = _exchange(world.gateway_url, head + body[: declared // 2])
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] in (b"413", b"415", b"401")
    assert b"\r\nconnection: close\r\n" in b"\r\n" + rest.lower()
    assert state == b"closed"
    assert world.helpdesk.requests == 0


def test_mcp_param_headers_are_checked_against_the_schema_of_the_tool_listed(world: World,
                                                                            hostile: tuple[Hostile, str]) -> None:
    """Once the gateway has listed a tool, it knows which argument each Mcp-Param header mirrors."""
    server, url = hostile
    alice = {"Authorization": f"Bearer {world.token()}"}
    schema = {"type": "object", "properties": {"project": {"type": "string", "x-mcp-header": "Project"},
                                               "note": {"type": "string"}}}
    invalid = {"type": "object", "properties": {"path": {"type": "number", "x-mcp-header": "Path"}}}
    server.answer = (200, "application/json", json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
        {"name": "list_tickets", "inputSchema": schema}, {"name": "read_file", "inputSchema": invalid}]}}).encode())
    listed = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=alice, timeout=30)
    # read_file is alice's, but its x-mcp-header is invalid: clients must leave it out, so the gateway does.
    assert [t["name"] for t in listed.json()["result"]["tools"]] == ["list_tickets"]
    server.answer = (200, "application/json", b'{"jsonrpc":"2.0","id":2,"result":{"content":[]}}')
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "list_tickets", "arguments": {"project": "apollo", "note": "website"}}}
    forwarded = len(server.received)
    # "website" is an argument of the call, but not the one the schema says Mcp-Param-Project mirrors.
    wrong = httpx.post(url, json=call, headers={**alice, "Mcp-Param-Project": "website"}, timeout=30)
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == -32020
    missing = httpx.post(url, json=call, headers={**alice, "MCP-Protocol-Version": "2026-07-28"}, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == -32020  # required from 2026-07-28
    assert len(server.received) == forwarded
    older = httpx.post(url, json=call, headers={**alice, "MCP-Protocol-Version": "2025-11-25"}, timeout=30)
    assert older.status_code == 200, older.text
    sent = server.received[-1]
    assert sent["mcp-param-project"] == "apollo" and sent["mcp-name"] == "list_tickets"  # built by the gateway
