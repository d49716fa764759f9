"""Seen-once caches (client assertion ``jti``s), shared through Redis when configured.

Replicas must agree on "seen": with Redis, ``SET NX EX`` is one atomic round
trip; without it (a single process) an in-memory map with expiry does the same.
"""

from __future__ import annotations

import threading
from typing import Protocol

from . import clock
from .errors import TemporarilyUnavailable

__all__ = ["MemoryReplayCache", "RedisReplayCache", "ReplayCache"]


class ReplayCache(Protocol):
    def first_use(self, key: str, ttl: int) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds, False after."""
        ...


class MemoryReplayCache:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def first_use(self, key: str, ttl: int) -> bool:
        now = clock.monotonic()
        with self._lock:
            expires = self._seen.get(key)
            if expires is not None and expires > now:
                return False
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
                if len(self._seen) >= self._max:
                    # Full of live entries: refusing is safer than forgetting one.
                    return False
            self._seen[key] = now + max(1, ttl)
            return True


class RedisReplayCache:
    def __init__(self, url: str, prefix: str = "issuer:replay:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = prefix

    def first_use(self, key: str, ttl: int) -> bool:
        import redis

        try:
            return bool(self._redis.set(self._prefix + key, b"1", nx=True, ex=max(1, ttl)))
        except redis.RedisError:
            raise TemporarilyUnavailable("The replay cache is unavailable.") from None
