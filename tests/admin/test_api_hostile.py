"""The admin API refuses hostile characters and JSON with a 400 before anything reaches storage.

Before: deeply nested JSON was a 500 (RecursionError), duplicate members and
NaN were read by Python's lenient decoder, a lone surrogate in a policy
document was a 500 (the canonical form could not be encoded), and a NUL in a
query parameter, a path segment or a body field reached PostgreSQL and came
back as a misleading 503 "database unavailable".
"""

from __future__ import annotations

import pytest

from issuer.admin.api import PREFIX
from tests.admin.hostile import registry_rows
from tests.conftest import LiveIssuer
from tests.test_admin_api import Admin, error, service


@pytest.fixture
def admin_on(live: LiveIssuer) -> Admin:
    """An admin key on the live issuer, on SQLite and on PostgreSQL (where NUL cannot be stored)."""
    _, key = service(live).create_admin_key(name="ops", role="admin")
    return Admin(live, key)


def raw(admin: Admin, method: str, path: str, body: bytes) -> tuple[int, str, dict[str, str]]:
    resp = admin.live.http.request(method, PREFIX + path, content=body, headers={
        "Authorization": f"Bearer {admin.key}", "Content-Type": "application/json"})
    return resp.status_code, resp.headers.get("content-type", ""), resp.json()


@pytest.mark.parametrize(("name", "body"), [
    ("deep nesting", b'{"jti": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("duplicate member", b'{"jti": "a", "jti": "b"}'),
    ("NaN", b'{"jti": NaN}'),
    ("overflowing number", b'{"jti": 1e400}'),
    ("NUL", b'{"jti": "a\\u0000b"}'),
    ("lone surrogate", b'{"jti": "a\\ud800b"}'),
    ("surrogate in a member name", b'{"jti": "a", "\\udc00": 1}'),
])
def test_a_hostile_json_body_is_a_400_that_changes_nothing(admin_on: Admin, name: str, body: bytes) -> None:
    before = registry_rows(admin_on.live.db)
    status, ctype, answer = raw(admin_on, "POST", "/revocations/jti", body)
    assert (status, answer["error"]) == (400, "invalid_request"), (name, answer)
    assert ctype.startswith("application/json")
    assert registry_rows(admin_on.live.db) == before


@pytest.mark.parametrize("bad", ["\x00", "\ud800"])
def test_a_bad_character_in_a_policy_document_is_a_400(admin_on: Admin, bad: str) -> None:
    """The document is a JSON string, so the escape reaches YAML, which decodes its own \\u escapes."""
    escaped = "\\0" if bad == "\x00" else "\\ud800"
    document = ("rules:\n  - id: x\n    everyone: true\n    clients: [mcp-helpdesk]\n    tool: tickets\n"
                f"    scopes: [tickets:read]\n    description: \"a{escaped}b\"\n")
    before = registry_rows(admin_on.live.db)
    desc = error(admin_on("POST", "/policy", {"document": document}), 400, "invalid_request")
    assert "NUL" in desc and ":7:" in desc  # the rule and the line it is broken on
    assert registry_rows(admin_on.live.db) == before


@pytest.mark.parametrize(("what", "path", "params"), [
    ("a filter", "/audit", {"sub": "alice\x00"}),
    ("a filter of the export", "/audit/export", {"client_id": "\x00"}),
    ("a revocation count", "/revocations/count", {"jti": "a\x00b"}),
    ("a parameter the route does not read", "/tools", {"x\x00": "1"}),
    ("a path segment", "/tools/tick%00ets", {}),
    ("a path segment", "/clients/mcp%00", {}),
    ("a path segment", "/admin-keys/k%00", {}),
])
def test_a_nul_in_a_query_parameter_or_path_is_a_400_not_a_503(admin_on: Admin, what: str, path: str,
                                                               params: dict[str, str]) -> None:
    method = "DELETE" if path.startswith("/admin-keys") else "GET"
    before = registry_rows(admin_on.live.db)
    desc = error(admin_on(method, path, params=params), 400, "invalid_request")
    assert "NUL" in desc, what
    assert registry_rows(admin_on.live.db) == before


def test_a_nul_in_a_body_field_is_a_400_not_a_503(admin_on: Admin) -> None:
    """Sent escaped, as JSON allows: the decoder, not the database, refuses it."""
    before = registry_rows(admin_on.live.db)
    for path, body in (("/revocations/subject", '{"sub": "idp-a:alice\\u0000"}'),
                       ("/tools", '{"name": "hr", "resource_uri": "https://hr.example", "description": "\\u0000",'
                                  ' "scopes": [{"name": "hr:read"}]}')):
        status, _, answer = raw(admin_on, "POST", path, body.encode())
        assert (status, answer["error"]) == (400, "invalid_request"), (path, answer)
    assert registry_rows(admin_on.live.db) == before


@pytest.mark.parametrize(("path", "query"), [
    ("/audit", "sub=%ED%A0%80"),  # a lone surrogate, encoded as if it were UTF-8
    ("/revocations/count", "jti=%FF"),
    ("/tools/tick%ED%B0%80ets", ""),
])
def test_a_surrogate_or_bytes_that_are_not_utf8_in_the_url_are_a_400(admin_on: Admin, path: str,
                                                                     query: str) -> None:
    """Werkzeug would read them as U+FFFD and look that up; the rule is the decoder's: not UTF-8, refused."""
    resp = admin_on.live.http.get(PREFIX + path + (f"?{query}" if query else ""),
                                  headers={"Authorization": f"Bearer {admin_on.key}"})
    assert "not UTF-8" in error(resp, 400, "invalid_request")
