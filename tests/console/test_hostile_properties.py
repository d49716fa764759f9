"""Property: every console form answers hostile input with an HTML 4xx and changes nothing.

The forms are the console blueprint's POST rules (so a new form is fuzzed
without anyone remembering to), each sent by a signed-in admin with the
session's CSRF token and otherwise valid fields; one thing is hostile: a field
holding NUL or a lone surrogate (form-encoded as a browser would, so the
surrogate arrives as bytes that are not UTF-8), an extra field whose name does,
a query parameter, a path segment, or JSON typed into a JSON field that breaks
one of the strict decoder's rules, or a policy document breaking the policy rules.
On SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from issuer.console import PREFIX
from tests.admin.hostile import bad_json_bodies, bad_policy_documents, bad_segments, bad_texts, registry_rows
from tests.conftest import LiveIssuer
from tests.console.conftest import Console, make_key

#: Fields each form accepts, to break one rule in (the CSRF token is added when sending).
VALID_FORMS: dict[str, dict[str, str]] = {
    "/sign-in": {"admin_key": "set by the test"},
    "/sign-out": {},
    "/tools": {"name": "hr", "resource_uri": "https://hr.example", "scopes": "hr:read"},
    "/tools/<name>": {"description": "edited"},
    "/tools/<name>/enabled": {"enabled": "false"},
    "/clients": {"client_id": "mcp-new", "resource_uri": "https://mcp.new.example", "tools": "tickets",
                 "jwks": ""},
    "/clients/<client_id>/secret": {},
    "/clients/<client_id>/enabled": {"enabled": "false"},
    "/clients/<client_id>/dpop": {"dpop_required": "true"},
    "/idps": {"name": "second", "issuer": "https://login.second.example", "jwks": '{"keys": []}'},
    "/idps/<name>": {"subject_claim": "sub", "jwks": '{"keys": []}'},
    "/idps/<name>/enabled": {"enabled": "false"},
    "/policy": {"document": "rules: []"},
    "/policy/test": {"sub": "alice", "client_id": "mcp-helpdesk", "tool": "tickets", "scopes": "tickets:read",
                     "claims": '{"tenant": "a"}', "arguments": '{"id": 1}'},
    "/revocation": {"kind": "sub", "value": "idp-a:alice", "confirm": "on"},
    "/admin-keys": {"name": "temp", "role": "admin"},
    "/admin-keys/<key_id>/revoke": {},
}
#: Fields whose value is JSON text.
JSON_FIELDS = frozenset({"jwks", "claims", "arguments"})
_PARAM = re.compile(r"<(\w+)>")


def post_rules(live: LiveIssuer) -> set[str]:
    return {r.rule.removeprefix(PREFIX) for r in live.app.url_map.iter_rules()
            if r.endpoint.startswith("console.") and "POST" in (r.methods or ())}


def test_every_form_has_valid_fields_to_break(live_sqlite: LiveIssuer) -> None:
    assert set(VALID_FORMS) == post_rules(live_sqlite)


def _encode(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def hostile_forms(draw: st.DrawFn, existing: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
    rule = draw(st.sampled_from(sorted(VALID_FORMS)))
    fields = dict(VALID_FORMS[rule])
    params = _PARAM.findall(rule)
    places = ["extra field", "query"] + (["field"] if fields else []) + (["path"] if params else [])
    places += ["json"] if JSON_FIELDS & set(fields) else []
    places += ["policy"] if rule == "/policy" else []
    place = draw(st.sampled_from(places))
    bad_param = draw(st.sampled_from(params)) if place == "path" else None
    path = _PARAM.sub(lambda m: _encode(draw(bad_segments())) if m.group(1) == bad_param
                      else existing[m.group(1) if not rule.startswith("/idps") else "idp"], rule)
    pairs = [(k, v) for k, v in fields.items()]
    if place == "field":
        name = draw(st.sampled_from(sorted(fields)))
        pairs = [(k, draw(bad_texts()) if k == name else v) for k, v in pairs]
    elif place == "extra field":
        pairs.append((draw(bad_texts()), "1"))
    elif place == "json":
        name = draw(st.sampled_from(sorted(JSON_FIELDS & set(fields))))
        text = draw(bad_json_bodies({"keys": []}).filter(lambda b: _is_utf8(b))).decode()
        pairs = [(k, text if k == name else v) for k, v in pairs]
    elif place == "policy":
        pairs = [("document", draw(bad_policy_documents()))]
    elif place == "query":
        path += "?" + _encode(draw(st.sampled_from(["done", "x"]))) + "=" + _encode(draw(bad_texts()))
    return path, pairs


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_hostile_input_to_any_form_is_an_html_4xx_and_changes_nothing(live: LiveIssuer) -> None:
    key = make_key(live, "admin", "ops")
    console = Console(live.app.test_client(), key)
    console.sign_in()
    existing = {"name": "tickets", "client_id": "mcp-helpdesk", "idp": "idp-a", "key_id": key.split("_")[1]}
    VALID_FORMS["/sign-in"]["admin_key"] = key
    before = registry_rows(live.db)

    @given(form=hostile_forms(existing))
    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    def check(form: tuple[str, list[tuple[str, str]]]) -> None:
        path, pairs = form
        body = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in [("csrf_token", console.csrf), *pairs])
        resp = console.client.post(PREFIX + path, data=body, content_type="application/x-www-form-urlencoded")
        shown: Any = (path, pairs, resp.status_code, resp.get_data(as_text=True)[:300])
        assert 400 <= resp.status_code < 500, shown
        assert resp.headers["Content-Type"].startswith("text/html"), shown
        assert registry_rows(live.db) == before, shown
        assert console.get("/").status_code == 200, "the session survived"

    check()
