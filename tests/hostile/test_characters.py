"""Form fields and the JSON in them follow the strict decoder's character rules, at every token endpoint.

A NUL cannot be stored in PostgreSQL text or jsonb, and a lone surrogate cannot be encoded at all: either one
in a request used to make the refusal's own audit write fail (silently), or the request end in a 500 with no
record. Now each is an ``invalid_request`` 400, refused before anything reaches storage, with its audit row.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from issuer.oauth.rfc8414 import INTROSPECT_PATH, REVOKE_PATH
from tests.conftest import ACCESS_TOKEN, TOKEN_EXCHANGE, LiveIssuer
from tests.hostile.conftest import audit_count, last_audit, registry_state
from tests.test_exchange_e2e import error_of

DETAILS = '[{"type":"tool_invocation","actions":["list"]}]'

#: (field, value) put into an otherwise valid exchange: each must be refused as invalid_request.
TOKEN_CASES = {
    "NUL in authorization_details": ("authorization_details", DETAILS.replace("list", "li\x00st")),
    "escaped NUL in authorization_details": ("authorization_details", DETAILS.replace("list", "li\\u0000st")),
    "lone surrogate in authorization_details": ("authorization_details", DETAILS.replace("list", "\\ud800")),
    "NUL in resource": ("resource", "https://tickets.example/\x00"),
    "NUL in audience": ("audience", "tickets\x00"),
    "NUL in scope": ("scope", "tickets:read\x00"),
    "NUL in txn": ("txn", "txn\x00"),
    "NUL in subject_token_type": ("subject_token_type", ACCESS_TOKEN + "\x00"),
    "NUL in client_id": ("client_id", "mcp-helpdesk\x00"),
    "NUL in an unknown field": ("x-extra", "\x00"),
    "NUL in a field name": ("x\x00", "1"),
}


def _exchange_with(live: LiveIssuer, field: str, value: str) -> list[tuple[str, str]]:
    pairs = [("grant_type", TOKEN_EXCHANGE), ("subject_token", live.idp.token()),
             ("subject_token_type", ACCESS_TOKEN), ("scope", "tickets:read")]
    pairs = [(k, v) for k, v in pairs if k != field]
    if field not in ("resource", "audience"):
        pairs.append(("resource", "https://tickets.example"))
    return [*pairs, (field, value)]


@pytest.mark.parametrize("case", sorted(TOKEN_CASES))
def test_a_refused_character_at_token_is_invalid_request_and_audited(live: LiveIssuer, case: str) -> None:
    field, value = TOKEN_CASES[case]
    before, rows = registry_state(live), audit_count(live)
    resp = live.post_form("/token", _exchange_with(live, field, value),
                          auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    error_of(resp, 400, "invalid_request")
    assert audit_count(live) == rows + 1, "the refusal has its audit row"
    row = last_audit(live)
    assert (row.decision, row.reason) == ("denied", "invalid_request")
    assert registry_state(live) == before
    assert live.exchange().status_code == 200  # and the next request is served as usual


@pytest.mark.parametrize("path", [INTROSPECT_PATH, REVOKE_PATH])
@pytest.mark.parametrize("field", ["token", "token_type_hint", "client_id", "x-extra"])
def test_a_refused_character_at_introspect_and_revoke_is_invalid_request_and_audited(
        live: LiveIssuer, path: str, field: str) -> None:
    pairs = [("token", "not-a-token"), (field, "a\x00b")]
    if field == "client_id":
        pairs.append(("client_secret", live.secrets["mcp-helpdesk"]))
        auth = None
    else:
        auth = ("mcp-helpdesk", live.secrets["mcp-helpdesk"])
    before, rows = registry_state(live), audit_count(live)
    resp = live.post_form(path, pairs, auth=auth) if auth else live.post_form(path, pairs)
    error_of(resp, 400, "invalid_request")
    assert audit_count(live) == rows + 1
    assert last_audit(live).reason == "invalid_request"
    assert registry_state(live) == before


@pytest.mark.parametrize("path", ["/token", INTROSPECT_PATH, REVOKE_PATH])
def test_form_bytes_that_are_not_utf8_are_refused_not_read_as_a_replacement_character(
        live: LiveIssuer, path: str) -> None:
    """Werkzeug reads ``%ED%A0%80`` (a surrogate encoded as UTF-8) as U+FFFD: the request would go on as another
    value than the one sent. The token endpoints apply the same rule as the admin API and the console."""
    valid = _exchange_with(live, "scope", "tickets:read") if path == "/token" else [("token", "not-a-token")]
    body = urlencode(valid) + "&x-extra=%ED%A0%80"  # each valid without the last field: 200 before the fix
    rows = audit_count(live)
    resp = live.http.post(path, content=body, auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    error_of(resp, 400, "invalid_request")
    assert audit_count(live) == rows + 1 and last_audit(live).reason == "invalid_request"
