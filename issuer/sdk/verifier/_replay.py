"""Single use of call-bound capabilities: each ``jti`` may be claimed once, until it expires.

In one process an in-memory map is enough.  Several workers or replicas of a
tool must share a Redis: pass any client with redis-py's
``set(name, value, nx=True, ex=seconds)`` (this module never imports redis).
"""

from __future__ import annotations

import math
import threading
from typing import Any, Protocol

from ... import clock
from .errors import ReplayCacheUnavailable

__all__ = ["DEFAULT_REPLAY_PREFIX", "MemoryReplayCache", "RedisLike", "RedisReplayCache", "ReplayCache"]

DEFAULT_REPLAY_PREFIX = "capability-verifier:jti:"


class RedisLike(Protocol):
    """What the verifier needs of a Redis client: an atomic set-if-absent with expiry."""

    def set(self, name: str, value: int, *, nx: bool, ex: int) -> Any: ...


class ReplayCache(Protocol):
    def claim(self, jti: str, expires_at: float) -> bool:
        """Record ``jti`` until ``expires_at``; False if it was already recorded."""
        ...


class MemoryReplayCache:
    """Thread-safe ``jti -> expiry`` map; expired entries are swept as new ones arrive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, jti: str, expires_at: float) -> bool:
        now = clock.now()
        with self._lock:
            if now >= self._next_sweep:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
                self._next_sweep = now + 60
            held = self._seen.get(jti)
            if held is not None and held > now:
                return False
            self._seen[jti] = expires_at
            return True


class RedisReplayCache:
    """``SET prefix+jti 1 NX EX ttl`` on a shared Redis; any error refuses (fail closed)."""

    def __init__(self, client: RedisLike, prefix: str = DEFAULT_REPLAY_PREFIX) -> None:
        self._client = client
        self.prefix = prefix

    def claim(self, jti: str, expires_at: float) -> bool:
        ttl = max(1, math.ceil(expires_at - clock.now()))
        try:
            result = self._client.set(self.prefix + jti, 1, nx=True, ex=ttl)
        except Exception as exc:
            raise ReplayCacheUnavailable(f"the replay cache did not answer ({type(exc).__name__})") from None
        return bool(result)
