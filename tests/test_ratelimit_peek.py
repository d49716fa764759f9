"""``RateLimiter.peek``: the answer a hit would give, spending nothing, on Redis and in process.

Budgets that only failures spend (failed client and admin-key authentications) are looked at
before an attempt and spent after it fails; a look that spent would let successes lock a client out.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis

from issuer.ratelimit import RateLimiter, parse_limits


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    if request.param == "memory":
        yield RateLimiter()
        return
    url = request.getfixturevalue("redis_url")
    client: redis.Redis = request.getfixturevalue("redis_client")
    limiter = RateLimiter(url)
    yield limiter
    assert limiter.state == "shared"
    for key in client.scan_iter(match="issuer-rl:{peek-test-*"):
        client.delete(key)


def test_peek_spends_nothing_and_sees_a_spent_budget(limiter: RateLimiter) -> None:
    limits = parse_limits("test", "3/minute")
    key = ("peek-test-" + secrets.token_hex(6), "x")
    for _ in range(10):
        assert limiter.peek(limits, *key) is None  # looking, however often, spends nothing
    for _ in range(3):
        assert limiter.hit(limits, *key) is None
    limited = limiter.peek(limits, *key)
    assert limited is not None and limited.limit == str(limits[0]) and 1 <= limited.retry_after <= 60
    assert limiter.hit(limits, *key) is not None
    assert limiter.peek(limits, "peek-test-" + secrets.token_hex(6)) is None  # another key is untouched
