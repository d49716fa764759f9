"""Per-identity and per-client rate limits, shared by every replica through Redis.

Built on the ``limits`` library's sliding-window-counter strategy: with Redis
each hit is one atomic Lua round trip, so any number of replicas share one
budget; without Redis an in-process window does the same for one process.

When Redis is configured but unreachable, each process falls back to its own
in-process windows (never unlimited, never down), logs the switch once,
reports ``degraded`` to ``/readyz``, and tries Redis again every few seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from . import clock
from .errors import ConfigurationError

__all__ = ["Limited", "RateLimiter", "parse_limits"]

log = logging.getLogger(__name__)
_RETRY_REDIS_EVERY = 5.0


def parse_limits(field: str, text: str) -> tuple[RateLimitItem, ...]:
    """``"60/minute"`` or several, ``"60/minute;10/second"`` (a burst cap inside the minute)."""
    try:
        items = tuple(parse_many(text))
    except ValueError:
        raise ConfigurationError(
            f"{field}: {text!r} is not a rate limit such as '60/minute' or '60/minute;10/second'"
        ) from None
    if not items:
        raise ConfigurationError(f"{field}: empty rate limit")
    return items


@dataclass(frozen=True)
class Limited:
    """The budget is spent; retry after this many seconds."""

    retry_after: int
    limit: str


class RateLimiter:
    def __init__(self, redis_url: str = "", *, on_state_change: Callable[[str], None] | None = None) -> None:
        self._redis_url = redis_url
        self._on_state_change = on_state_change  #: told "degraded" or "shared" on each switch (metrics)
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared: SlidingWindowCounterRateLimiter | None = None
        self._storage: Storage | None = None
        self._lock = threading.Lock()
        self._degraded_since: float | None = None
        self._next_retry = 0.0
        if redis_url:
            storage = storage_from_string(redis_url, key_prefix="issuer-rl", wrap_exceptions=True,
                                          socket_timeout=0.5, socket_connect_timeout=0.5)
            if not isinstance(storage, Storage):
                raise ConfigurationError("ISSUER_REDIS_URL: not a synchronous Redis URL")
            self._storage = storage
            self._shared = SlidingWindowCounterRateLimiter(storage)

    @property
    def state(self) -> str:
        """``local`` (no Redis configured), ``shared``, or ``degraded`` (Redis configured but unreachable)."""
        if self._shared is None:
            return "local"
        return "degraded" if self._degraded_since is not None else "shared"

    def hit(self, limits: Sequence[RateLimitItem], *key: str) -> Limited | None:
        """Spend one unit of every limit for ``key``; the first exhausted one is returned."""
        for item in limits:
            limiter = self._current()
            try:
                allowed = limiter.hit(item, *key)
                stats = None if allowed else limiter.get_window_stats(item, *key)
            except Exception as e:
                self._degrade(e)
                limiter = self._memory
                allowed = limiter.hit(item, *key)
                stats = None if allowed else limiter.get_window_stats(item, *key)
            if not allowed:
                assert stats is not None
                retry = max(1, int(stats.reset_time - clock.now()) + 1)
                return Limited(retry_after=min(retry, int(item.get_expiry())), limit=str(item))
        return None

    def _current(self) -> SlidingWindowCounterRateLimiter:
        if self._shared is None:
            return self._memory
        if self._degraded_since is None:
            return self._shared
        now = clock.monotonic()
        if now < self._next_retry:
            return self._memory
        with self._lock:
            self._next_retry = now + _RETRY_REDIS_EVERY
            try:
                healthy = self._storage is not None and self._storage.check()
            except Exception:
                healthy = False
            if healthy:
                log.warning("rate limits: Redis is back, budgets are shared again")
                self._degraded_since = None
                if self._on_state_change is not None:
                    self._on_state_change("shared")
                return self._shared
        return self._memory

    def _degrade(self, error: Exception) -> None:
        with self._lock:
            if self._degraded_since is None:
                log.error("rate limits: Redis unreachable (%s); using per-process limits", type(error).__name__)
                self._degraded_since = clock.monotonic()
                if self._on_state_change is not None:
                    self._on_state_change("degraded")
                self._next_retry = self._degraded_since + _RETRY_REDIS_EVERY
