"""The OpenAPI document: complete, committed as generated, and true of the running server.

The schemathesis run drives every documented operation of a live issuer with
generated valid and invalid input (as an admin, so the admin routes do real
work) and fails on any 5xx and on any response the document does not allow.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from issuer.admin.service import AdminService
from issuer.oauth.rfc8414 import INTROSPECT_PATH, REVOCATION_FEED_PATH, REVOKE_PATH, TOKEN_PATH
from issuer.openapi import OPENAPI_PATH, build_openapi
from tests.conftest import LiveIssuer, make_settings
from tests.support.fake_idp import FakeIdP

DOCUMENT = build_openapi()

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def test_the_committed_document_is_the_generated_one() -> None:
    """docs/openapi.json cannot drift: regenerate with `python -m issuer.openapi > docs/openapi.json`."""
    assert json.loads(COMMITTED.read_text()) == DOCUMENT


def test_every_route_of_the_app_is_documented(live_sqlite: LiveIssuer) -> None:
    documented = {(path, method.upper()) for path, ops in DOCUMENT["paths"].items() for method in ops}
    served = set()
    for rule in live_sqlite.app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("console."):
            continue  # the console's pages are for people, not programs (docs/console.md)
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        served |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    assert served == documented


def test_the_server_serves_the_document(live_sqlite: LiveIssuer) -> None:
    resp = live_sqlite.http.get(OPENAPI_PATH)
    assert resp.status_code == 200 and resp.json() == DOCUMENT


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveIssuer, str]]:
    tmp = tmp_path_factory.mktemp("openapi")
    idp = FakeIdP("idp-a")
    live = LiveIssuer(make_settings(tmp, f"sqlite:///{tmp}/issuer.db"), idp)
    live.standard_setup()
    _, key = AdminService(live.db, live.keys, live.settings, actor="tests").create_admin_key(name="fuzz", role="admin")
    yield live, key
    live.close()
    idp.close()


schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_5xx_and_every_response_matches_the_document(case: schemathesis.Case,
                                                        server: tuple[LiveIssuer, str]) -> None:
    live, key = server
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    if case.operation.path == REVOCATION_FEED_PATH:
        # schemathesis takes application/jwt for JSON and parses the signed feed as such; the feed's body is
        # verified as a JWS, payload and all, by tests/test_revocation_e2e.py::feed.
        checks.remove(response_schema_conformance)
    auth = f"Bearer {key}"
    if case.operation.path in (TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH):
        # As an authenticated client, so generated bodies reach the grant and the endpoints' own checks
        # rather than ending at client authentication.
        creds = f"mcp-helpdesk:{live.secrets['mcp-helpdesk']}".encode()
        auth = "Basic " + base64.b64encode(creds).decode()
    case.call_and_validate(base_url=live.url, headers={"Authorization": auth}, timeout=10, checks=checks)
