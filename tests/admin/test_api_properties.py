"""Property: every admin API route answers hostile input with a JSON 4xx and changes nothing.

The routes come from :data:`issuer.admin.api.ROUTES` (which also makes the
OpenAPI document), so a new route is fuzzed without anyone remembering to. Each
request is otherwise valid (an admin key, a body the route accepts, a name
that exists) and breaks one rule in one place: a path segment or a query
parameter holding NUL or a lone surrogate, or a body breaking one of the
strict JSON rules, or a policy document breaking one of the policy rules.
On SQLite and PostgreSQL: NUL is what PostgreSQL cannot store, so that is
where a missing check showed as a 503.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from issuer.admin.api import PREFIX, ROUTES, Route
from tests.admin.hostile import bad_json_bodies, bad_policy_documents, bad_segments, bad_texts, registry_rows
from tests.conftest import LiveIssuer
from tests.test_admin_api import service

#: A body each route with one accepts, to break one rule in.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/idps"): {"name": "second", "issuer": "https://login.second.example", "jwks": {"keys": []},
                        "algorithms": ["ES256"]},
    ("PATCH", "/idps/{name}"): {"enabled": False},
    ("POST", "/tools"): {"name": "hr", "resource_uri": "https://hr.example", "scopes": [{"name": "hr:read"}]},
    ("PATCH", "/tools/{name}"): {"description": "edited"},
    ("POST", "/clients"): {"client_id": "mcp-new", "resource_uri": "https://mcp.new.example", "tools": ["tickets"]},
    ("PATCH", "/clients/{client_id}"): {"enabled": False},
    ("POST", "/policy"): {"document": "rules: []", "source": "fuzz"},
    ("POST", "/policy/test"): {"sub": "alice", "groups": ["support"], "client_id": "mcp-helpdesk", "tool": "tickets",
                               "scopes": ["tickets:read"]},
    ("POST", "/keys/rotate"): {"force": True},
    ("POST", "/revocations/jti"): {"jti": "jti-1"},
    ("POST", "/revocations/subject"): {"sub": "idp-a:alice"},
    ("POST", "/revocations/client"): {"client_id": "mcp-other"},
    ("POST", "/admin-keys"): {"name": "temp", "role": "admin"},
}
_PARAM = re.compile(r"\{(\w+)\}")


def test_every_route_with_a_body_has_a_valid_one_to_break() -> None:
    assert set(VALID_BODIES) == {(r.method, r.path) for r in ROUTES if r.body is not None}


def _encode(text: str) -> str:
    """Percent-encode as a client would; a lone surrogate becomes the bytes UTF-8 would give it."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _existing(route: Route, param: str, key_id: str) -> str:
    return {"name": "idp-a" if route.path.startswith("/idps") else "tickets", "client_id": "mcp-helpdesk",
            "key_id": key_id, "version": "1"}[param]


@st.composite
def hostile_requests(draw: st.DrawFn, key_id: str) -> tuple[str, str, bytes | None]:
    route = draw(st.sampled_from(ROUTES))
    params = _PARAM.findall(route.path)
    places = ["query"] + (["path"] if set(params) - {"version"} else []) + (["body"] if route.body else [])
    places += ["policy"] if (route.method, route.path) == ("POST", "/policy") else []
    place = draw(st.sampled_from(places))
    bad_param = draw(st.sampled_from(sorted(set(params) - {"version"}))) if place == "path" else None
    path = _PARAM.sub(lambda m: _encode(draw(bad_segments())) if m.group(1) == bad_param
                      else _existing(route, m.group(1), key_id), route.path)
    if place == "query":
        name = draw(st.sampled_from([*route.query, "x", None]))
        pair = (draw(bad_texts()), "1") if name is None else (name, draw(bad_texts()))
        path += "?" + "=".join(_encode(p) for p in pair)
    valid = VALID_BODIES.get((route.method, route.path))
    if place == "policy":  # good JSON, carrying a document that breaks the policy rules
        valid = {**(valid or {}), "document": draw(bad_policy_documents())}
    body = draw(bad_json_bodies(valid or {})) if place == "body" else (json.dumps(valid).encode() if valid else None)
    return route.method, path, body


@pytest.fixture
def admin_key(live: LiveIssuer) -> str:
    _, key = service(live).create_admin_key(name="fuzz", role="admin")
    return key


def test_hostile_input_to_any_route_is_a_json_4xx_and_changes_nothing(live: LiveIssuer, admin_key: str) -> None:
    key_id = admin_key.split("_")[1]
    headers = {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"}
    before = registry_rows(live.db)

    @given(request=hostile_requests(key_id))
    @settings(max_examples=80, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    def check(request: tuple[str, str, bytes | None]) -> None:
        method, path, body = request
        resp = live.http.request(method, PREFIX + path, content=body, headers=headers)
        assert 400 <= resp.status_code < 500, (method, path, body and body[:200], resp.status_code, resp.text[:300])
        assert resp.headers["content-type"].startswith("application/json"), resp.text[:300]
        assert resp.json()["error"]
        assert registry_rows(live.db) == before, (method, path, body and body[:200])

    check()
