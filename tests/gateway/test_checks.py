"""Each check of the gateway, with the attack it stops. Nothing refused here ever reaches the MCP server."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from issuer.gateway.security_log import AUDIT_LOGGER
from tests.conftest import free_port
from tests.gateway.conftest import GATEWAY_RESOURCE, Raw, World, messages

LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
METADATA = 'resource_metadata="https://gateway.example/.well-known/oauth-protected-resource/mcp"'


def test_a_token_in_the_query_string_is_refused_not_forwarded(world: World, raw: Raw) -> None:
    token = world.token()
    resp = raw.post(LIST, url=f"{world.gateway_url}?access_token={token}")
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
    assert "query string" in resp.json()["error_description"]
    assert world.helpdesk.requests == 0 and world.audit() == []


@pytest.mark.parametrize("case", ["wrong audience", "expired", "forged", "not a jwt", "basic"])
def test_tokens_the_gateway_must_not_accept_get_401_with_the_metadata(world: World, raw: Raw, case: str) -> None:
    from tests.support.fake_idp import FakeIdP

    headers = {}
    if case == "wrong audience":  # a token for another resource (RFC 8707): a confused deputy's favourite
        token = world.token(aud="https://mcp.other.example")
    elif case == "expired":
        token = world.token(lifetime=-120)
    elif case == "forged":  # right claims, signed by a provider the issuer does not trust
        other = FakeIdP("idp-a")
        try:
            token = other.token("alice", aud=GATEWAY_RESOURCE, iss=world.idp.issuer)
        finally:
            other.close()
    elif case == "not a jwt":
        token = "opaque-garbage"
    else:
        token = None
        headers = {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}
    resp = raw.post(LIST, token, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer " + METADATA)
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert world.helpdesk.requests == 0


def test_a_user_policy_grants_nothing_is_refused_403(world: World, raw: Raw) -> None:
    stranger = world.token("eve", groups=["visitors"])
    resp = raw.post(LIST, stranger)
    assert resp.status_code == 403 and resp.json()["error"] == "insufficient_scope"
    assert world.helpdesk.requests == 0


@pytest.mark.parametrize(("headers", "status"), [
    ({"MCP-Protocol-Version": "1999-01-01"}, 400),   # a version the gateway does not speak
    ({"Origin": "https://evil.example"}, 403),         # DNS rebinding from a browser page
    ({"Content-Type": "text/plain"}, 415),             # a form post from a browser needs no preflight
    ({"Mcp-Session-Id": "x" * 400}, 400),              # oversized id
    ({"Mcp-Session-Id": "a\tb"}, 400),                 # control characters
])
def test_hostile_headers_are_refused(world: World, raw: Raw, headers: dict[str, str], status: int) -> None:
    resp = raw.post(LIST, world.token(), headers=headers)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] in (-32600, -32700)
    assert world.helpdesk.requests == 0


def test_repeated_authorization_headers_are_refused(world: World) -> None:
    token = world.token()
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", "Bearer other"),
               ("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")]
    resp = httpx.post(world.gateway_url, content=json.dumps(LIST), headers=headers)
    assert resp.status_code == 400 and "authorization appears more than once" in resp.json()["error"]["message"]
    assert world.helpdesk.requests == 0


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", -32700),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}', -32700),  # parser differential
    (b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]', -32600),                         # batch
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":NaN}}', -32700),
    (b'"just a string"', -32600),
    (b'{"jsonrpc":"1.0","id":1,"method":"tools/list"}', -32600),
    (b'{"jsonrpc":"2.0","id":true,"method":"tools/list"}', -32600),
    (b'\xff\xfe{}', -32700),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}', -32602),
])
def test_malformed_messages_get_a_json_rpc_error_and_are_not_forwarded(world: World, raw: Raw, body: bytes,
                                                                      code: int) -> None:
    resp = raw.post(None, world.token(), raw=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == code
    assert world.helpdesk.requests == 0


def test_oversized_bodies_are_refused_before_they_are_read(world: World, raw: Raw) -> None:
    big = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": "read_file", "arguments": {"path": "/home/alice/" + "a" * 70_000}}}
    resp = raw.post(big, world.token())
    assert resp.status_code == 413
    # Without a Content-Length (chunked), the gateway counts as it reads.
    chunked = httpx.post(world.gateway_url, content=iter([json.dumps(big).encode()]),
                         headers={"Authorization": f"Bearer {world.token()}", "Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert world.helpdesk.requests == 0


def test_methods_outside_the_allowlist_are_refused(world: World, raw: Raw) -> None:
    token = world.token()
    sid = raw.initialize(token)
    before = world.helpdesk.requests
    h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    resp = raw.post({"jsonrpc": "2.0", "id": 5, "method": "admin/exec", "params": {}}, token, headers=h)
    assert resp.status_code == 200
    assert resp.json() == {"jsonrpc": "2.0", "id": 5, "error": {
        "code": -32601, "message": "method admin/exec is not allowed through the gateway"}}
    assert world.helpdesk.requests == before
    assert raw.http.put(world.gateway_url, headers={"Authorization": f"Bearer {token}"}).status_code == 405


def test_a_session_belongs_to_the_user_who_opened_it(world: World, raw: Raw,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    alice, mallory = world.token("alice"), world.token("mallory")
    sid = raw.initialize(alice)
    h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    ok = raw.post(LIST, alice, headers=h)
    assert ok.status_code == 200 and [t["name"] for t in messages(ok)[0]["result"]["tools"]]
    before = world.helpdesk.requests
    with caplog.at_level(logging.WARNING, logger=AUDIT_LOGGER):
        # mallory holds alice's session id (a log, a shared screen): her token does not open it.
        stolen = raw.post(LIST, mallory, headers=h)
        # nor does an id whose upstream half was changed, or the MCP server's own id without the gateway's tag
        upstream_id = sid.split(".", 1)[1]
        altered = raw.post(LIST, alice, headers={**h, "Mcp-Session-Id": sid[:-1] + ("0" if sid[-1] != "0" else "1")})
        bare = raw.post(LIST, alice, headers={**h, "Mcp-Session-Id": upstream_id})
        get = raw.http.get(world.gateway_url, headers={**h, "Authorization": f"Bearer {mallory}",
                                                       "Accept": "text/event-stream"})
        delete = raw.http.delete(world.gateway_url, headers={**h, "Authorization": f"Bearer {mallory}"})
    for resp in (stolen, altered, bare, get, delete):
        assert resp.status_code == 404 and resp.json()["error"]["message"] == "Session not found"
    assert world.helpdesk.requests == before
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER]
    assert [e["event"] for e in events] == ["gateway.session_refused"] * 5
    assert events[0]["user"] == "idp-a:mallory" and events[0]["method"] == "POST"
    assert sid not in caplog.text and mallory not in caplog.text and alice not in caplog.text
    # alice's session is unharmed, and she can end it.
    assert raw.post(LIST, alice, headers=h).status_code == 200
    assert raw.http.delete(world.gateway_url, headers={**h, "Authorization": f"Bearer {alice}"}).status_code == 200


def test_metadata_and_health(world: World) -> None:
    base = world.gateway_url.removesuffix("/mcp")
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        doc = httpx.get(base + path).json()
        assert doc["resource"] == GATEWAY_RESOURCE and doc["bearer_methods_supported"] == ["header"]
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/other").status_code == 404


def test_when_the_issuer_cannot_decide_nothing_is_forwarded(world: World, raw: Raw) -> None:
    """Fail closed: a call the issuer could not decide is refused, never forwarded on the strength of a session."""
    alice = world.token()
    sid = raw.initialize(alice)
    before = world.helpdesk.requests
    world.gateway.decider._client._endpoint = f"http://127.0.0.1:{free_port()}/token"  # the issuer is gone
    h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "list_tickets", "arguments": {"project": "apollo"}}}
    resp = raw.post(call, alice, headers=h)
    assert resp.status_code == 200
    assert resp.json()["error"] == {"code": -32000, "message": "the issuer could not decide this call; try again later"}
    assert world.helpdesk.requests == before
    newcomer = raw.post(LIST, world.token("alice", jti="another-token"))
    assert newcomer.status_code == 503 and world.helpdesk.requests == before


def test_an_unreachable_or_refusing_mcp_server_is_502_not_500(world: World) -> None:
    from issuer.demo.gated_mcp import GatedHelpdesk
    from issuer.demo.servers import BackgroundAsgi
    from issuer.gateway import Gateway, GatewayConfig

    config = world.gateway.config
    # A server that expects capabilities for another audience refuses the gateway's with 401.
    other = GatedHelpdesk(world.issuer.url, resource="https://someone-else.example")
    refusing = BackgroundAsgi(other.app())
    targets = {"unreachable": f"http://127.0.0.1:{free_port()}/mcp", "refusing": f"{refusing.url}/mcp"}
    try:
        for name, upstream in targets.items():
            gateway = BackgroundAsgi(Gateway(GatewayConfig(
                upstream=upstream, resource=config.resource, issuer=config.issuer,
                upstream_resource=config.upstream_resource, client_id=config.client_id,
                client_secret=config.client_secret)))
            try:
                resp = Raw.__new__(Raw)
                resp.world, resp.http = world, httpx.Client(timeout=30)
                answer = resp.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}},
                    world.token(), url=f"{gateway.url}/mcp")
                resp.http.close()
                assert answer.status_code == 502, name
                assert answer.json()["error"]["code"] == -32000
            finally:
                gateway.close()
    finally:
        refusing.close()
        other.close()
