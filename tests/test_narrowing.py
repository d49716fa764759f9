"""Narrowing over HTTP: a capability that is re-scoped (its own tool presents it for itself) or chained (presented
for another tool) never comes back with more than it carried, in any dimension; a call-bound capability is
presented for chaining at most once, on every replica.

The pure operation these tests reach, :meth:`issuer.grant.Grant.narrow`, has its property test in
``tests/test_grant.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select

from issuer.models import AuditEvent
from issuer.registry import ScopeSpec, add_tool
from tests.conftest import ACCESS_TOKEN, TOKEN_EXCHANGE, LiveIssuer, make_settings, need_service
from tests.dpop.test_proof import Holder
from tests.support.fake_idp import FakeIdP
from tests.test_exchange_e2e import error_of, verify

DOCS = "https://docs.example"
FILES = "https://files.example"
MCP = "https://mcp.docs.example"
POLICY = """
rules:
  - id: helpdesk-docs
    idp: idp-a
    groups: [support]
    clients: [mcp-docs]
    tool: docs
    scopes: [docs:read, docs:write]
    constraints:
      path: {prefix: "/home/${sub}/"}
  - id: docs-self
    idp: idp-a
    groups: [support]
    clients: [docs-svc]
    tool: docs
    scopes: [docs:read, docs:write]
  - id: docs-to-files
    idp: idp-a
    groups: [support]
    clients: [docs-svc]
    tool: files
    scopes: [files:read]
  - id: docs-to-tickets
    idp: idp-a
    groups: [support]
    clients: [docs-svc]
    tool: tickets
    scopes: [tickets:read]
"""


def _setup(live: LiveIssuer) -> LiveIssuer:
    add_tool(live.db, name="docs", resource_uri=DOCS, scopes=[
        ScopeSpec("docs:read", actions=("list", "read")), ScopeSpec("docs:write", actions=("update", "delete"))])
    live.add_client("mcp-docs", MCP, ["docs"])
    live.add_client("docs-svc", DOCS, ["docs", "files", "tickets"], may_chain=True)
    live.apply(POLICY)
    return live


@pytest.fixture
def docs(live_sqlite: LiveIssuer) -> LiveIssuer:
    return _setup(live_sqlite)


@pytest.fixture
def docs_any_db(live: LiveIssuer) -> LiveIssuer:
    return _setup(live)


def _exchange(live: LiveIssuer, client: str, token: str, *, resource: str, scope: str | None,
              extra: list[tuple[str, str]] | None = None, dpop: str | None = None) -> httpx.Response:
    pairs = [("grant_type", TOKEN_EXCHANGE), ("subject_token", token), ("subject_token_type", ACCESS_TOKEN),
             ("resource", resource), *([("scope", scope)] if scope is not None else []), *(extra or [])]
    return live.post_form("/token", pairs, auth=(client, live.secrets[client]),
                          headers={"DPoP": dpop} if dpop else {})


def _details(**detail: Any) -> list[tuple[str, str]]:
    return [("authorization_details", json.dumps([{"type": "tool_invocation", **detail}]))]


def _capability(live: LiveIssuer, *, scope: str = "docs:read docs:write", dpop: str | None = None,
                **detail: Any) -> str:
    extra = _details(**detail) if detail else []
    resp = _exchange(live, "mcp-docs", live.idp.token(aud=MCP), resource=DOCS, scope=scope, extra=extra, dpop=dpop)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _detail_of(live: LiveIssuer, token: str, aud: str = DOCS) -> dict[str, Any]:
    claims = verify(live, token, audience=aud)
    return dict(claims["authorization_details"][0])


def _rescope(live: LiveIssuer, cap: str, scope: str | None = "docs:read docs:write",
             extra: list[tuple[str, str]] | None = None, **kw: Any) -> httpx.Response:
    return _exchange(live, "docs-svc", cap, resource=DOCS, scope=scope, extra=extra, **kw)


def _chain(live: LiveIssuer, cap: str, **kw: Any) -> httpx.Response:
    return _exchange(live, "docs-svc", cap, resource=FILES, scope="files:read", **kw)


def _reasons(live: LiveIssuer) -> list[tuple[str, str]]:
    with live.db.session() as s:
        return [(r.decision, r.reason) for r in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def test_rescope_keeps_the_presented_actions(docs: LiveIssuer) -> None:
    """The attack of issue 17: a capability narrowed to `list` came back with every action of its scopes."""
    cap = _capability(docs, actions=["list"])
    assert _detail_of(docs, cap)["actions"] == ["list"]
    again = _rescope(docs, cap)
    assert again.status_code == 200, again.text
    assert _detail_of(docs, again.json()["access_token"])["actions"] == ["list"]
    error_of(_rescope(docs, cap, extra=_details(actions=["delete"])), 400, "invalid_scope")
    error_of(_rescope(docs, cap, extra=_details(actions=["list", "delete"])), 400, "invalid_scope")
    assert _reasons(docs)[-1] == ("denied", "invalid_scope")


def test_rescope_keeps_the_presented_constraints_and_cannot_drop_them(docs: LiveIssuer) -> None:
    cap = _capability(docs, constraints={"path": {"prefix": "/home/alice/reports/"}})
    detail = _detail_of(docs, _rescope(docs, cap).json()["access_token"])
    assert detail["constraints"] == {"path": {"prefix": "/home/alice/reports/"}}
    # arguments outside what the presented capability admitted, though inside the policy: refused
    outside = _rescope(docs, cap, extra=_details(arguments={"path": "/home/alice/secret.txt"}))
    error_of(outside, 400, "invalid_scope")


def test_rescope_cannot_widen_scopes_and_keeps_lifetime_and_txn(docs: LiveIssuer) -> None:
    cap = _capability(docs, scope="docs:read")
    error_of(_rescope(docs, cap, scope="docs:read docs:write"), 400, "invalid_scope")
    error_of(_rescope(docs, cap, scope=None), 400, "invalid_scope")  # the policy's default is both scopes
    same = _rescope(docs, cap, scope="docs:read")
    assert same.status_code == 200, same.text
    parent, child = verify(docs, cap, audience=DOCS), verify(docs, same.json()["access_token"], audience=DOCS)
    assert child["scope"] == "docs:read" and child["exp"] <= parent["exp"] and child["txn"] == parent["txn"]


def test_a_bound_capability_never_comes_back_as_bearer(docs: LiveIssuer) -> None:
    """A DPoP-bound capability chained without a proof would be a bearer token: more than it carried."""
    caller = Holder()
    cap = _capability(docs, dpop=caller.proof(htu=docs.url + "/token"))
    assert verify(docs, cap, audience=DOCS)["cnf"] == {"jkt": caller.jkt}
    error_of(_chain(docs, cap), 400, "invalid_dpop_proof")
    error_of(_rescope(docs, cap), 400, "invalid_dpop_proof")
    assert _reasons(docs)[-1] == ("denied", "chain_unbound")
    tool = Holder()
    bound = _chain(docs, cap, dpop=tool.proof(htu=docs.url + "/token"))
    assert bound.status_code == 200, bound.text
    assert verify(docs, bound.json()["access_token"], audience=FILES)["cnf"] == {"jkt": tool.jkt}


def test_a_call_bound_capability_is_never_rescoped(docs: LiveIssuer) -> None:
    cap = _capability(docs, actions=["read"], arguments={"path": "/home/alice/a.txt"})
    error_of(_rescope(docs, cap), 400, "invalid_grant")
    assert _reasons(docs)[-1] == ("denied", "chain_widened")


def test_a_call_bound_capability_is_chained_at_most_once(docs_any_db: LiveIssuer) -> None:
    """Chained into other tools again and again until it expired: now once per tool, and a second try is audited."""
    live = docs_any_db
    cap = _capability(live, actions=["read"], arguments={"path": "/home/alice/a.txt"})
    first = _chain(live, cap)
    assert first.status_code == 200, first.text
    child, parent = verify(live, first.json()["access_token"], audience=FILES), verify(live, cap, audience=DOCS)
    assert child["exp"] <= parent["exp"] and child["txn"] == parent["txn"]
    error_of(_chain(live, cap), 400, "invalid_grant")
    assert _reasons(live)[-1] == ("denied", "call_bound_reused")
    # once into each tool the call needs: a handler may read from one upstream and write to another
    tickets = _exchange(live, "docs-svc", cap, resource="https://tickets.example", scope="tickets:read")
    assert tickets.status_code == 200, tickets.text
    error_of(_exchange(live, "docs-svc", cap, resource="https://tickets.example", scope="tickets:read"),
             400, "invalid_grant")
    # a session capability of the same user is chained as often as the tool needs
    session = _capability(live)
    assert [_chain(live, session).status_code for _ in range(3)] == [200, 200, 200]


def _second_replica(tmp_path: Path, one: LiveIssuer, idp: FakeIdP, **settings: Any) -> LiveIssuer:
    """Another process of the same deployment: same URL (the capability's issuer), database and keys."""
    two = LiveIssuer(make_settings(tmp_path, one.settings.database_url, keys_dir=one.settings.keys_dir,
                                   url=one.url, **settings), idp)
    two.http.close()
    two.http = httpx.Client(base_url=f"http://127.0.0.1:{two.settings.port}", timeout=10)
    two.secrets = one.secrets
    return two


def test_a_call_bound_capability_is_chained_once_across_replicas(tmp_path: Path, docs_any_db: LiveIssuer,
                                                                  idp: FakeIdP) -> None:
    """Without Redis the database's replay table is the one memory every replica shares."""
    one = docs_any_db
    two = _second_replica(tmp_path, one, idp)
    try:
        cap = _capability(one, arguments={"path": "/home/alice/a.txt"})
        assert _chain(two, cap).status_code == 200
        error_of(_chain(one, cap), 400, "invalid_grant")
        error_of(_chain(two, cap), 400, "invalid_grant")
    finally:
        two.close()


@pytest.fixture
def redis_replicas(tmp_path: Path, sqlite_url: str, idp: FakeIdP) -> Iterator[tuple[LiveIssuer, LiveIssuer]]:
    redis_url = need_service("ISSUER_TEST_REDIS_URL", "Redis")
    one = LiveIssuer(make_settings(tmp_path, sqlite_url, redis_url=redis_url), idp)
    one.standard_setup()
    _setup(one)
    two = _second_replica(tmp_path, one, idp, redis_url=redis_url)
    yield one, two
    two.close()
    one.close()


def test_a_call_bound_capability_is_chained_once_across_replicas_through_redis(
        redis_replicas: tuple[LiveIssuer, LiveIssuer]) -> None:
    one, two = redis_replicas
    cap = _capability(one, arguments={"path": "/home/alice/a.txt"})
    assert _chain(one, cap).status_code == 200
    error_of(_chain(two, cap), 400, "invalid_grant")


def test_concurrent_chains_of_one_call_bound_capability_get_one_child(docs_any_db: LiveIssuer) -> None:
    """Eight presentations at once, as from eight workers: the replay cache lets exactly one through."""
    live = docs_any_db
    cap = _capability(live, arguments={"path": "/home/alice/a.txt"})
    barrier = threading.Barrier(8)

    def attempt() -> int:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            barrier.wait(timeout=30)
            pairs = [("grant_type", TOKEN_EXCHANGE), ("subject_token", cap), ("subject_token_type", ACCESS_TOKEN),
                     ("resource", FILES), ("scope", "files:read")]
            return http.post("/token", content=urlencode(pairs), auth=("docs-svc", live.secrets["docs-svc"]),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda _: attempt(), range(8)))
    assert codes == [200] + [400] * 7
    assert sorted(_reasons(live)[-8:]) == [("denied", "call_bound_reused")] * 7 + [("granted", "granted")]
