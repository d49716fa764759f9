"""What a refusal after the policy decision spends: a refusal budget of its own (per user, client and tool),
never the grant budget. A prompt-injected model sending call after call with arguments the constraints refuse
is stopped by 429 once that budget is spent, while its user's granted calls go on; in process and through
Redis alike."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from freezegun import freeze_time
from sqlalchemy import select

from issuer.models import AuditEvent
from tests.conftest import LiveIssuer, make_settings, need_service
from tests.support.fake_idp import FakeIdP
from tests.test_exchange_e2e import error_of

POLICY = """
rules:
  - id: home-files
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk, mcp-files]
    tool: files
    scopes: [files:read]
    rate_limit: 3/minute
    constraints:
      path: {prefix: "/home/${sub}/"}
"""


def _call(live: LiveIssuer, sub: str, path: str, client: str = "mcp-helpdesk") -> httpx.Response:
    aud = "https://mcp.helpdesk.example" if client == "mcp-helpdesk" else "https://mcp.files.example"
    details = json.dumps([{"type": "tool_invocation", "arguments": {"path": path}}])
    return live.exchange(client, live.idp.token(sub=sub, aud=aud), resource="https://files.example",
                         scope="files:read", extra=[("authorization_details", details)])


def _refusals_do_not_lock_the_user_out(live: LiveIssuer, sub: str) -> None:
    live.add_client("mcp-files", "https://mcp.files.example", ["files"])
    live.apply(POLICY)
    with freeze_time("2030-01-01T00:00:00Z"):
        injected = [_call(live, sub, "/etc/passwd") for _ in range(5)]
        assert [r.status_code for r in injected] == [400, 400, 400, 429, 429]
        for refused in injected[:3]:
            assert "outside the granted constraints" in error_of(refused, 400, "invalid_scope")["error_description"]
        for spent in injected[3:]:
            body = error_of(spent, 429, "rate_limited")
            assert "path" not in body["error_description"] and "constraints" not in body["error_description"]
            assert 1 <= int(spent.headers["Retry-After"]) <= 60
        # the user's own calls still get their whole grant budget, and only that
        assert [_call(live, sub, f"/home/{sub}/notes.txt").status_code for _ in range(4)] == [200, 200, 200, 429]
        # the refusal budget is per client: another client's refusals for this user are counted apart
        assert _call(live, sub, "/etc/passwd", client="mcp-files").status_code == 400
    with live.db.session() as s:
        rows = [(r.decision, r.reason) for r in s.scalars(
            select(AuditEvent).where(AuditEvent.sub == f"idp-a:{sub}").order_by(AuditEvent.id))]
    assert rows == ([("denied", "invalid_scope")] * 3 + [("denied", "refusals_rate_limited")] * 2
                    + [("granted", "granted")] * 3 + [("denied", "rate_limited"), ("denied", "invalid_scope")])


def test_refused_calls_spend_their_own_budget_in_process(live: LiveIssuer) -> None:
    _refusals_do_not_lock_the_user_out(live, "alice")


@pytest.fixture
def live_redis(tmp_path: Path, sqlite_url: str, idp: FakeIdP) -> Iterator[LiveIssuer]:
    issuer = LiveIssuer(make_settings(tmp_path, sqlite_url, redis_url=need_service("ISSUER_TEST_REDIS_URL", "Redis")),
                        idp)
    issuer.standard_setup()
    yield issuer
    issuer.close()


def test_refused_calls_spend_their_own_budget_through_redis(live_redis: LiveIssuer) -> None:
    assert live_redis.app.extensions["issuer"].exchanger.limiter.state == "shared"
    _refusals_do_not_lock_the_user_out(live_redis, f"r{time.time_ns()}")  # Redis keeps windows across runs
