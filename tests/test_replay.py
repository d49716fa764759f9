"""Seen-once caches: in memory (one process) and in Redis (shared by replicas)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis
from freezegun import freeze_time

from issuer.errors import TemporarilyUnavailable
from issuer.replay import MemoryReplayCache, RedisReplayCache

START = "2030-01-01T00:00:00Z"


def race(first_use: Sequence[Callable[[str, int], bool]], key: str, threads: int = 16) -> list[bool]:
    """Call each of `first_use` (round robin) from `threads` threads released at once."""
    barrier = threading.Barrier(threads)
    results: list[bool] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait(timeout=10)
        r = first_use[i % len(first_use)](key, 60)
        with lock:
            results.append(r)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=20)
    assert len(results) == threads
    return results


# --------------------------------------------------------------------------- memory


def test_memory_first_use_then_replay() -> None:
    cache = MemoryReplayCache()
    assert cache.first_use("jti-1", 60) is True
    assert cache.first_use("jti-1", 60) is False
    assert cache.first_use("jti-1", 60) is False
    assert cache.first_use("jti-2", 60) is True


def test_memory_key_is_usable_again_after_ttl() -> None:
    cache = MemoryReplayCache()
    with freeze_time(START) as frozen:
        assert cache.first_use("jti", 30) is True
        frozen.tick(29.9)
        assert cache.first_use("jti", 30) is False
        frozen.tick(0.2)
        assert cache.first_use("jti", 30) is True
        assert cache.first_use("jti", 30) is False  # and that use starts a new window


def test_memory_replay_within_ttl_does_not_extend_it() -> None:
    cache = MemoryReplayCache()
    with freeze_time(START) as frozen:
        assert cache.first_use("jti", 30) is True
        frozen.tick(20)
        assert cache.first_use("jti", 30) is False
        frozen.tick(10.1)  # 30.1 s after the first use
        assert cache.first_use("jti", 30) is True


def test_memory_full_cache_refuses_instead_of_forgetting() -> None:
    cache = MemoryReplayCache(max_entries=3)
    with freeze_time(START) as frozen:
        for k in ("a", "b", "c"):
            assert cache.first_use(k, 60) is True
        assert cache.first_use("d", 60) is False  # no room: refused, not accepted
        for k in ("a", "b", "c"):
            assert cache.first_use(k, 60) is False  # nothing was evicted to make room
        assert cache.first_use("d", 60) is False

        frozen.tick(61)  # every entry has expired: room again
        assert cache.first_use("d", 60) is True
        assert cache.first_use("d", 60) is False
        assert cache.first_use("a", 60) is True


def test_memory_full_cache_purges_only_expired_entries() -> None:
    cache = MemoryReplayCache(max_entries=2)
    with freeze_time(START) as frozen:
        assert cache.first_use("short", 10) is True
        assert cache.first_use("long", 600) is True
        frozen.tick(11)
        assert cache.first_use("new", 60) is True  # "short" expired and made room
        assert cache.first_use("long", 600) is False  # the live entry survived the purge
        assert cache.first_use("other", 60) is False  # full again


def test_memory_concurrent_first_use_succeeds_once() -> None:
    cache = MemoryReplayCache()
    assert race([cache.first_use], "jti-race").count(True) == 1


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    p = f"issuer-test:{secrets.token_hex(8)}:"
    yield p
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=p + "*"):
            client.delete(key)
    finally:
        client.close()


def test_redis_first_use_then_replay(redis_url: str, prefix: str, redis_client: redis.Redis) -> None:
    cache = RedisReplayCache(redis_url, prefix=prefix)
    assert cache.first_use("jti-1", 60) is True
    assert cache.first_use("jti-1", 60) is False
    assert cache.first_use("jti-2", 60) is True
    assert redis_client.exists(prefix + "jti-1") == 1
    keys = sorted(k.decode() for k in redis_client.scan_iter(match=prefix + "*"))
    assert keys == [prefix + "jti-1", prefix + "jti-2"]


def test_redis_two_replicas_share_one_budget(redis_url: str, prefix: str) -> None:
    a = RedisReplayCache(redis_url, prefix=prefix)
    b = RedisReplayCache(redis_url, prefix=prefix)
    assert a.first_use("jti", 60) is True
    assert b.first_use("jti", 60) is False
    assert b.first_use("jti-b", 60) is True
    assert a.first_use("jti-b", 60) is False


def test_redis_concurrent_replicas_succeed_once(redis_url: str, prefix: str) -> None:
    replicas = [RedisReplayCache(redis_url, prefix=prefix) for _ in range(4)]
    results = race([r.first_use for r in replicas], "jti-race")
    assert results.count(True) == 1


def test_redis_prefixes_keep_deployments_apart(redis_url: str, prefix: str) -> None:
    a = RedisReplayCache(redis_url, prefix=prefix + "a:")
    b = RedisReplayCache(redis_url, prefix=prefix + "b:")
    assert a.first_use("jti", 60) is True
    assert b.first_use("jti", 60) is True


@pytest.mark.parametrize(("ttl", "expected"), [(1, 1), (0, 1), (-5, 1), (3600, 3600)])
def test_redis_entry_expires_after_ttl(
    redis_url: str, prefix: str, redis_client: redis.Redis, ttl: int, expected: int
) -> None:
    cache = RedisReplayCache(redis_url, prefix=prefix)
    assert cache.first_use("jti", ttl) is True
    assert redis_client.ttl(prefix + "jti") == expected  # Redis forgets it then; no sleeping needed to know
    assert 0 < redis_client.pttl(prefix + "jti") <= expected * 1000
    assert cache.first_use("jti", ttl) is False


def test_redis_replay_does_not_extend_the_ttl(redis_url: str, prefix: str, redis_client: redis.Redis) -> None:
    cache = RedisReplayCache(redis_url, prefix=prefix)
    assert cache.first_use("jti", 1) is True
    assert cache.first_use("jti", 3600) is False
    assert redis_client.ttl(prefix + "jti") == 1


def test_redis_unreachable_is_temporarily_unavailable() -> None:
    cache = RedisReplayCache("redis://127.0.0.1:1/0", prefix="issuer-test:")
    with pytest.raises(TemporarilyUnavailable) as e:
        cache.first_use("jti", 60)
    assert e.value.status_code == 503
    assert e.value.error == "temporarily_unavailable"
    assert "127.0.0.1:1" not in str(e.value.description)


def test_database_replay_cache_is_shared_and_expires(tmp_path: Path, database_url: str) -> None:
    """Without Redis, every worker shares the database: two caches on it (two workers) agree on 'seen'."""
    from issuer.db import Database
    from issuer.migrate import upgrade
    from issuer.replay import DatabaseReplayCache

    upgrade(database_url)
    db_a, db_b = Database(database_url, pool_size=1), Database(database_url, pool_size=1)
    a, b = DatabaseReplayCache(db_a), DatabaseReplayCache(db_b)
    try:
        with freeze_time("2030-01-01T00:00:00Z") as frozen:
            assert a.first_use("jti-1", 60) is True
            assert b.first_use("jti-1", 60) is False
            assert a.first_use("jti-2", 60) is True
            frozen.tick(61)
            assert b.first_use("jti-1", 60) is True  # expired: the key may be used again
            assert a.first_use("jti-1", 60) is False
    finally:
        db_a.dispose()
        db_b.dispose()
