"""The shared rate limiter against a real Redis: every limit of a hit checked and spent by one
script in one round trip, the same sliding-window arithmetic as the in-process windows, and
per-process limits (never an exception) when Redis cannot be reached."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator

import pytest
import redis
from freezegun import freeze_time

from issuer.ratelimit import Limited, RateLimiter, parse_limits
from tests.conftest import free_port

START = "2030-01-01T00:00:00Z"  # a whole minute: elapsed time in the window is what the test says


@pytest.fixture
def ns(redis_client: redis.Redis) -> Iterator[str]:
    """The first key part of this test alone (frozen clocks repeat across runs); its keys are deleted."""
    name = f"rl-test-{secrets.token_hex(6)}"
    yield name
    for key in redis_client.scan_iter(match=f"issuer-rl:{{{name}*"):
        redis_client.delete(key)


@pytest.fixture
def shared(redis_url: str, redis_client: redis.Redis) -> Iterator[RateLimiter]:
    limiter = RateLimiter(redis_url)
    yield limiter
    assert limiter.state == "shared"


def outcomes(limiter: RateLimiter, text: str, n: int, *key: str) -> list[Limited | None]:
    limits = parse_limits("test", text)
    return [limiter.hit(limits, *key) for _ in range(n)]


def test_exactly_the_amount_is_allowed_in_a_window(shared: RateLimiter, ns: str) -> None:
    with freeze_time(START):
        results = outcomes(shared, "5/minute", 8, ns, "alice")
    assert [r is None for r in results] == [True] * 5 + [False] * 3
    assert {r.limit for r in results if r is not None} == {"5 per 1 minute"}


def test_a_refusal_by_one_limit_spends_no_other(shared: RateLimiter, ns: str) -> None:
    limits = parse_limits("test", "2/minute;1/second")
    with freeze_time(START) as frozen:
        assert shared.hit(limits, ns) is None  # minute 1 of 2, second 1 of 1
        refused = shared.hit(limits, ns)
        assert refused is not None and refused.limit == "1 per 1 second"
        frozen.tick(2)
        # the refusal spent nothing of the minute: one unit is left
        assert shared.hit(limits, ns) is None
        frozen.tick(2)
        refused = shared.hit(limits, ns)
        assert refused is not None and refused.limit == "2 per 1 minute"


def sliding_scenario(limiter: RateLimiter, ns: str) -> list[tuple[str, Limited | None]]:
    """10/minute spent 30 s into one window, then hits 15 s and 30 s into the next one."""
    limits = parse_limits("test", "10/minute")
    seen: list[tuple[str, Limited | None]] = []
    with freeze_time("2030-01-01T00:00:30Z") as frozen:
        seen += [("00:30", limiter.hit(limits, ns)) for _ in range(11)]
        frozen.move_to("2030-01-01T00:01:15Z")  # the previous window weighs 0.75: floor(7.5) = 7 used
        seen += [("01:15", limiter.hit(limits, ns)) for _ in range(4)]
        frozen.move_to("2030-01-01T00:01:30Z")  # weighs 0.5: 5 + the 3 of this window
        seen += [("01:30", limiter.hit(limits, ns)) for _ in range(3)]
    return seen


def test_the_previous_window_weighs_by_its_overlap(shared: RateLimiter, ns: str) -> None:
    seen = sliding_scenario(shared, ns)
    allowed = [(at, r is None) for at, r in seen]
    assert allowed == [("00:30", True)] * 10 + [("00:30", False)] + \
        [("01:15", True)] * 3 + [("01:15", False)] + [("01:30", True)] * 2 + [("01:30", False)]
    # the in-process windows (no Redis, or Redis down) count exactly the same, retry times included
    assert seen == sliding_scenario(RateLimiter(""), ns)


def test_retry_after_is_when_a_retry_succeeds(shared: RateLimiter, ns: str) -> None:
    limits = parse_limits("test", "3/minute")
    with freeze_time("2030-01-01T00:00:10Z") as frozen:
        assert [shared.hit(limits, ns) for _ in range(3)] == [None] * 3
        waits = []
        for _ in range(3):  # refused by this window, then twice by the previous window's weight
            refused = shared.hit(limits, ns)
            assert refused is not None
            assert 1 <= refused.retry_after <= 60
            waits.append(refused.retry_after)
            frozen.tick(refused.retry_after)
            assert shared.hit(limits, ns) is None
    assert waits == [51, 20, 20]


def test_retry_after_of_a_second_limit_is_a_second(shared: RateLimiter, ns: str) -> None:
    with freeze_time("2030-01-01T00:00:00.250Z"):
        refused = outcomes(shared, "100/minute;1/second", 2, ns)[1]
    assert refused == Limited(retry_after=1, limit="1 per 1 second")


def test_two_replicas_share_one_budget(redis_url: str, shared: RateLimiter, ns: str) -> None:
    other = RateLimiter(redis_url)
    limits = parse_limits("test", "4/minute")
    with freeze_time(START):
        results = [limiter.hit(limits, ns, "bob") for limiter in (shared, other) * 3]
    assert [r is None for r in results] == [True] * 4 + [False] * 2


def test_key_parts_cannot_collide(shared: RateLimiter, ns: str, redis_client: redis.Redis) -> None:
    limits = parse_limits("test", "1/minute;5/second")
    keys = [(ns, "a/b", "c"), (ns, "a", "b/c"), (ns, "a:b", "c"), (ns, "a", "b:c"), (ns, "a/b/c"),
            (ns, "{a}", "b"), (ns, "a", "{b}"), (ns, "a}:1/60:0", "x{"), (ns, "a%2Fb", "c"), (ns, "a", "b", "c")]
    with freeze_time(START):
        assert [shared.hit(limits, *key) for key in keys] == [None] * len(keys)  # each its own budget
        assert all(shared.hit(limits, *key) is not None for key in keys)  # and each one spent
    written = [k.decode() for k in redis_client.scan_iter(match=f"issuer-rl:{{{ns}*")]
    assert len(written) == 2 * len(keys)  # one current-window counter per limit and key
    for key in written:
        # the Redis Cluster hash tag is the whole key: no part can end it early or open another
        tag = key[key.index("{") + 1:key.index("}")]
        assert "{" not in tag and key.index("}") == key.rindex("}")
        assert key.startswith(f"issuer-rl:{{{ns}/")


def test_one_hit_is_one_round_trip(shared: RateLimiter, ns: str, redis_url: str) -> None:
    """Counted by Redis itself: MONITOR lists every command a client sends (and, marked lua,
    the ones the script runs), so only this test's keys and end marker are looked at."""
    limits = parse_limits("test", "1000/minute;100/second")
    assert shared.hit(limits, ns, "warm") is None  # the script is loaded, the connection open
    marker = f"{ns}-end"
    watcher = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        with watcher.monitor() as monitor:
            assert shared.hit(limits, ns, "carol") is None
            watcher.echo(marker)
            sent: list[str] = []
            while True:
                entry = monitor.next_command()
                if marker in entry["command"]:
                    break
                if ns in entry["command"] and entry["client_type"] != "lua":
                    sent.append(entry["command"])
    finally:
        watcher.close()
    assert len(sent) == 1, sent
    assert sent[0].startswith("EVALSHA ") and sent[0].split()[2] == "4"  # two limits: 2 windows each


def test_unreachable_redis_degrades_to_local_limits(caplog: pytest.LogCaptureFixture) -> None:
    switches: list[str] = []
    limiter = RateLimiter(f"redis://127.0.0.1:{free_port()}/0", on_state_change=switches.append)
    limits = parse_limits("test", "2/minute;1/second")
    with caplog.at_level(logging.ERROR, logger="issuer.ratelimit"), freeze_time(START) as frozen:
        first = [limiter.hit(limits, "user", "dave") for _ in range(2)]
        frozen.tick(2)
        later = [limiter.hit(limits, "user", "dave") for _ in range(2)]
    assert limiter.state == "degraded" and switches == ["degraded"]
    assert first[0] is None and first[1] == Limited(retry_after=1, limit="1 per 1 second")
    assert later[0] is None and later[1] == Limited(retry_after=59, limit="2 per 1 minute")
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1


def test_concurrent_hits_never_overspend(shared: RateLimiter, ns: str) -> None:
    limits = parse_limits("test", "20/minute")
    results: list[Limited | None] = []
    lock = threading.Lock()

    def spend() -> None:
        for _ in range(10):
            outcome = shared.hit(limits, ns, "erin")
            with lock:
                results.append(outcome)

    with freeze_time(START):
        threads = [threading.Thread(target=spend) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(r is None for r in results) == 20
