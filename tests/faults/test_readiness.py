"""/readyz tells the truth about Redis: never ``ok`` while rate limits are still counted per process."""

from __future__ import annotations

import time

from tests.conftest import LiveIssuer
from tests.support.tcp_proxy import FaultProxy


def _ready(live: LiveIssuer) -> dict[str, object]:
    resp = live.http.get("/readyz")
    assert resp.status_code == 200, resp.text  # Redis makes a replica degraded, not unready
    body: dict[str, object] = resp.json()
    return body


def test_readyz_is_not_ok_while_rate_limits_are_degraded(live_pg_redis: LiveIssuer,
                                                         redis_proxy: FaultProxy) -> None:
    live = live_pg_redis
    assert _ready(live) == {"status": "ok", "checks": {"database": "ok", "keys": "ok", "redis": "ok",
                                                       "rate_limits": "shared"}}
    redis_proxy.freeze()
    try:
        assert live.exchange().status_code == 200  # limits fall back to this process's windows
        frozen = _ready(live)
        assert frozen["status"] == "degraded", frozen
    finally:
        redis_proxy.resume()
    # Redis answers again: from the first look on, readiness and the limiter agree
    seen = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        body = _ready(live)
        checks = body["checks"]
        assert isinstance(checks, dict)
        seen.append((body["status"], checks["rate_limits"]))
        assert body["status"] != "ok" or checks["rate_limits"] == "shared", seen
        if body["status"] == "ok":
            break
        time.sleep(0.2)
    assert seen[-1] == ("ok", "shared"), seen
