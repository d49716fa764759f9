"""Per-identity and per-client rate limits over HTTP: 429 + Retry-After, one audit row each,
one budget shared through Redis, and local limits while Redis is down."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from issuer.models import AuditEvent
from issuer.ratelimit import RateLimiter, parse_limits
from tests.conftest import IN_CI, LiveIssuer, free_port, make_settings, need_service
from tests.support.fake_idp import FakeIdP
from tests.test_exchange_e2e import error_of

LIMITED_POLICY = """
rules:
  - id: support-tickets-read
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk, mcp-other]
    tool: tickets
    scopes: [tickets:read]
    rate_limit: 3/minute
"""


def test_identity_limit_is_429_with_retry_after_and_audited(live: LiveIssuer) -> None:
    live.apply(LIMITED_POLICY)
    with freeze_time("2030-01-01T00:00:00Z"):
        for _ in range(3):
            assert live.exchange().status_code == 200
        resp = live.exchange()
        body = error_of(resp, 429, "rate_limited")
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert "access_token" not in body
        # the budget is per user (and per tool): another user is not affected
        assert live.exchange(subject_token=live.idp.token(sub="bob")).status_code == 200
    with live.db.session() as s:
        rows = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    assert [r.decision for r in rows] == ["granted"] * 3 + ["denied", "granted"]
    assert rows[3].reason == "rate_limited" and rows[3].sub == "idp-a:alice" and rows[3].jti is None


def test_budget_refills(live: LiveIssuer) -> None:
    live.apply(LIMITED_POLICY)
    with freeze_time("2030-01-01T00:00:00Z") as frozen:
        for _ in range(3):
            assert live.exchange().status_code == 200
        assert live.exchange().status_code == 429
        frozen.tick(125)
        assert live.exchange().status_code == 200


def test_client_wide_budget(live: LiveIssuer) -> None:
    live.add_client("mcp-small", "https://mcp.small.example", ["tickets"], rate_limit="2/minute")
    live.apply(LIMITED_POLICY.replace("[mcp-helpdesk, mcp-other]", "[mcp-helpdesk, mcp-small]"))
    with freeze_time("2030-01-01T00:00:00Z"):
        users = ["u1", "u2", "u3"]
        codes = [live.exchange("mcp-small", live.idp.token(sub=u, aud="https://mcp.small.example")).status_code
                 for u in users]
    assert codes == [200, 200, 429]


def test_bad_rate_limits_are_refused_where_they_are_written(live: LiveIssuer) -> None:
    from issuer.errors import ConfigurationError
    from issuer.policy import PolicyError

    with pytest.raises(PolicyError, match="rate_limit"):
        live.apply(LIMITED_POLICY.replace("3/minute", "lots"))
    with pytest.raises(ConfigurationError, match="rate-limit"):
        live.add_client("mcp-bad", "https://mcp.bad.example", ["tickets"], rate_limit="fast")


def test_two_issuers_share_one_budget_through_redis(tmp_path: Path, database_url: str, idp: FakeIdP) -> None:
    redis_url = need_service("ISSUER_TEST_REDIS_URL", "Redis")
    one = LiveIssuer(make_settings(tmp_path, database_url, redis_url=redis_url), idp)
    one.standard_setup()
    two = LiveIssuer(make_settings(tmp_path, database_url, redis_url=redis_url, keys_dir=tmp_path / "keys"), idp)
    two.secrets = one.secrets
    try:
        sub = f"shared-{time.time_ns()}"  # a fresh identity: Redis keeps windows across test runs
        one.apply(LIMITED_POLICY)
        token = idp.token(sub=sub)
        codes = [one.exchange(subject_token=token).status_code, two.exchange(subject_token=token).status_code,
                 one.exchange(subject_token=token).status_code, two.exchange(subject_token=token).status_code]
        assert codes == [200, 200, 200, 429]
    finally:
        two.close()
        one.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, tuple[Callable[[], None], Callable[[], None]]]]:
    """A redis-server of the test's own on 127.0.0.1, which the test may stop and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server not found: CI runs this test")
        pytest.skip("redis-server not installed")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        procs.append(proc)
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop() -> None:
        procs[-1].kill()
        procs[-1].wait(timeout=10)

    start()
    yield f"redis://127.0.0.1:{port}/0", (start, stop)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def test_redis_down_degrades_to_local_limits_and_recovers(own_redis) -> None:  # type: ignore[no-untyped-def]
    url, (start, stop) = own_redis
    limiter = RateLimiter(url)
    limits = parse_limits("test", "2/minute")
    with freeze_time("2030-01-01T00:00:00Z") as frozen:
        assert [limiter.hit(limits, "user", "a") is None for _ in range(3)] == [True, True, False]
        assert limiter.state == "shared"
        stop()
        # never unlimited, never down: a fresh local window, still enforcing the limit
        assert [limiter.hit(limits, "user", "b") is None for _ in range(3)] == [True, True, False]
        assert limiter.state == "degraded"
        start()
        frozen.tick(6)  # past the retry interval: the next hit finds Redis again
        assert limiter.hit(limits, "user", "c") is None
        assert limiter.state == "shared"


def test_readyz_reports_degraded_rate_limits(tmp_path: Path, sqlite_url: str, idp: FakeIdP, own_redis) -> None:  # type: ignore[no-untyped-def]
    url, (_, stop) = own_redis
    live = LiveIssuer(make_settings(tmp_path, sqlite_url, redis_url=url), idp)
    live.standard_setup()
    try:
        assert live.http.get("/readyz").json()["checks"]["rate_limits"] == "shared"
        stop()
        assert live.exchange().status_code == 200  # still serving, with local limits
        ready = live.http.get("/readyz")
        assert ready.status_code == 200
        assert 'issuer_rate_limit_backend_switches_total{to="degraded"} 1.0' in live.http.get("/metrics").text
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["rate_limits"] == "degraded"
        assert ready.json()["checks"]["redis"] == "unavailable"
    finally:
        live.close()


