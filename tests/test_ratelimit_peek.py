"""``RateLimiter.peek``, ``fail`` and ``known_spent``: budgets that only failures spend, on Redis and in process.

Failed client and admin-key authentications spend a budget after the attempt fails; before an attempt
the limiter answers from its memory of spent budgets, with no round trip, and a look never spends
(a look that spent would let successes lock a client out).
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


def test_a_failure_only_budget_is_known_spent_from_the_failure_that_spends_it(limiter: RateLimiter) -> None:
    """known_spent is asked before every authentication with no I/O: it must know as soon as the last unit
    goes, not one failure later, and forget when the window lets the key try again."""
    limits = parse_limits("test", "2/minute")
    key = ("peek-test-" + secrets.token_hex(6), "x")
    assert limiter.fail(limits, *key) is None and limiter.known_spent(*key) is None
    assert limiter.fail(limits, *key) is None  # the last unit: accepted, and now known spent
    wait = limiter.known_spent(*key)
    assert wait is not None and 1 <= wait <= 60
    assert limiter.fail(limits, *key) is not None  # a failure past the budget is refused
    assert limiter.known_spent("peek-test-" + secrets.token_hex(6), "x") is None


def test_the_memory_of_spent_budgets_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guesser cycling through client ids or addresses cannot grow a process's memory without bound."""
    import issuer.ratelimit

    monkeypatch.setattr(issuer.ratelimit, "MAX_REMEMBERED_SPENT", 3)
    limiter, limits = RateLimiter(), parse_limits("test", "1/minute")
    keys = [("peek-test-" + secrets.token_hex(6),) for _ in range(5)]
    for key in keys:
        limiter.fail(limits, *key)
    remembered = [k for k in keys if limiter.known_spent(*k) is not None]
    assert remembered == keys[-3:]  # the newest kept, the oldest dropped
