"""The console refuses hostile characters and JSON with an HTML 400 before anything reaches storage.

Before: a NUL in a form field, a query parameter or a path segment reached
PostgreSQL and came back as a JSON 503 "database unavailable"; JSON typed into
a form (an identity provider's JWKS, the claims of a policy test) was read by
Python's lenient decoder, so deep nesting was a 500 and duplicate members were
taken; a lone surrogate in a policy document was a 500.
"""

from __future__ import annotations

import pytest
from werkzeug.test import TestResponse

from tests.admin.hostile import registry_rows
from tests.conftest import LiveIssuer
from tests.console.conftest import Console, make_key


@pytest.fixture
def console(live: LiveIssuer) -> Console:
    """A signed-in admin on SQLite and on PostgreSQL (where a NUL cannot be stored)."""
    signed = Console(live.app.test_client(), make_key(live, "admin", "ops"))
    signed.sign_in()
    return signed


def refused_page(resp: TestResponse, *words: str) -> str:
    assert resp.status_code == 400, resp.get_data(as_text=True)[:500]
    assert resp.headers["Content-Type"].startswith("text/html")
    page = resp.get_data(as_text=True)
    assert all(w in page for w in words), page
    return page


@pytest.mark.parametrize(("path", "form"), [
    ("/revocation", {"kind": "sub", "value": "idp-a:alice\x00", "confirm": "on"}),
    ("/revocation", {"kind": "jti", "value": "\x00"}),  # the count before the confirmation
    ("/tools", {"name": "hr", "resource_uri": "https://hr.example", "scopes": "hr:read", "description": "a\x00"}),
    ("/admin-keys", {"name": "ops\x00", "role": "admin"}),
    ("/tools", {"name": "hr", "resource_uri": "https://hr.example", "scopes": "hr:read", "x\x00": "1"}),
])
def test_a_nul_in_a_form_field_is_an_html_400(console: Console, path: str, form: dict[str, object]) -> None:
    console.get(path)
    before = registry_rows(console.client.application.extensions["issuer"].db)
    refused_page(console.post(path, form), "NUL")
    assert registry_rows(console.client.application.extensions["issuer"].db) == before


@pytest.mark.parametrize("path", ["/audit?sub=alice%00", "/audit/export?client_id=%00", "/tools/tick%00ets",
                                  "/clients/mcp%00", "/idps/idp%00", "/policy?applied=%00"])
def test_a_nul_in_a_query_parameter_or_path_is_an_html_400(console: Console, path: str) -> None:
    refused_page(console.get(path), "NUL")


@pytest.mark.parametrize(("field", "value", "rule"), [
    ("jwks", '{"keys": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper"),
    ("jwks", '{"keys": [], "keys": []}', "duplicate"),
    ("jwks", '{"keys": [{"kty": "\\u0000"}]}', "NUL"),
    ("jwks", '{"keys": [{"kty": "\\ud800"}]}', "surrogate"),
])
def test_json_typed_into_a_form_obeys_the_strict_rules(console: Console, field: str, value: str, rule: str) -> None:
    console.get("/idps")
    db = console.client.application.extensions["issuer"].db
    before = registry_rows(db)
    form = {"name": "second", "issuer": "https://login.second.example", field: value}
    refused_page(console.post("/idps", form), "jwks", rule)
    assert registry_rows(db) == before


@pytest.mark.parametrize("claims", ['{"a": ' + "[" * 5000 + "]" * 5000 + "}", '{"a": 1, "a": 2}'])
def test_claims_typed_as_json_obey_the_strict_rules(console: Console, claims: str) -> None:
    console.get("/policy")
    form = {"sub": "alice", "client_id": "mcp-helpdesk", "tool": "tickets", "scopes": "tickets:read",
            "claims": claims}
    refused_page(console.post("/policy/test", form), "claims")


@pytest.mark.parametrize("escape", ["\\ud800", "\\0"])
def test_a_bad_character_in_a_policy_document_is_an_html_400(console: Console, escape: str) -> None:
    console.get("/policy")
    db = console.client.application.extensions["issuer"].db
    before = registry_rows(db)
    document = ("rules:\n  - id: x\n    everyone: true\n    clients: [mcp-helpdesk]\n    tool: tickets\n"
                f"    scopes: [tickets:read]\n    description: \"{escape}\"\n")
    refused_page(console.post("/policy", {"document": document}), "NUL")
    assert registry_rows(db) == before


def test_a_surrogate_encoded_in_a_form_or_url_is_an_html_400(console: Console) -> None:
    """Werkzeug reads bytes that are not UTF-8 as U+FFFD; the console refuses them instead."""
    console.get("/revocation")
    body = f"csrf_token={console.csrf}&kind=sub&value=alice%ED%A0%80"
    resp = console.client.post("/console/revocation", data=body, content_type="application/x-www-form-urlencoded")
    refused_page(resp, "not UTF-8")
    refused_page(console.get("/audit?sub=%ED%A0%80"), "not UTF-8")
