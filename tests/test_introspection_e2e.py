"""RFC 7662 introspection and RFC 7009 revocation of capabilities, over HTTP."""

from __future__ import annotations

from tests.conftest import LiveIssuer
from tests.test_exchange_e2e import error_of


def _introspect(live: LiveIssuer, token: str, client: str = "mcp-helpdesk") -> dict[str, object]:
    resp = live.post_form("/introspect", [("token", token)], auth=(client, live.secrets[client]))
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    body: dict[str, object] = resp.json()
    return body


def test_introspect_then_revoke(live: LiveIssuer) -> None:
    token = live.exchange().json()["access_token"]
    info = _introspect(live, token)
    assert info["active"] is True and info["sub"] == "idp-a:alice" and info["scope"] == "tickets:read"
    resp = live.post_form("/revoke", [("token", token)], auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    assert resp.status_code == 200, resp.text
    assert _introspect(live, token) == {"active": False}
    # revoking twice is fine (RFC 7009 section 2.2)
    again = live.post_form("/revoke", [("token", token)], auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    assert again.status_code == 200


def test_other_client_learns_nothing(live: LiveIssuer) -> None:
    token = live.exchange().json()["access_token"]
    assert _introspect(live, token, "mcp-other") == {"active": False}


def test_garbage_and_foreign_tokens_are_inactive(live: LiveIssuer) -> None:
    assert _introspect(live, "not-a-token") == {"active": False}
    assert _introspect(live, live.idp.token()) == {"active": False}  # a user token, not our capability


def test_introspection_needs_client_authentication(live: LiveIssuer) -> None:
    token = live.exchange().json()["access_token"]
    error_of(live.post_form("/introspect", [("token", token)]), 401, "invalid_client")
    error_of(live.post_form("/revoke", [("token", token)], auth=("mcp-helpdesk", "wrong-secret-value")),
             401, "invalid_client")


def test_missing_token_parameter(live: LiveIssuer) -> None:
    resp = live.post_form("/introspect", [], auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    error_of(resp, 400, "invalid_request")
