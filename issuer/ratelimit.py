"""Per-identity and per-client rate limits, shared by every replica through Redis.

The ``limits`` library's sliding-window-counter strategy: per limit, a counter
for the current fixed window and one for the previous, the previous weighted by
how much of it still overlaps the sliding window. With Redis, all the limits of
one hit are checked and spent by one Lua script in one round trip (the
``limits`` strategy costs one round trip per limit, and spends the first limit
even when the second refuses); without Redis, ``limits``' in-process storage
counts the same windows for one process.

When Redis is configured but unreachable, each process falls back to its own
in-process windows (never unlimited, never down), logs the switch once,
reports ``degraded`` to ``/readyz``, and tries Redis again every few seconds (and at
each ``/readyz``, so readiness never claims shared budgets that are not).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from . import clock
from .errors import ConfigurationError

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script

__all__ = ["Limited", "RateLimiter", "parse_limits"]

log = logging.getLogger(__name__)
_RETRY_REDIS_EVERY = 5.0
_PREFIX = "issuer-rl"

# KEYS: per limit, the counters of its previous and of its current window.
# ARGV: per limit, its amount, its window in seconds, and the seconds elapsed in the current window;
# last, 1 to spend or 0 only to look (RateLimiter.peek).
# Every limit is checked before any is spent, so a refusal spends nothing. The arithmetic is
# ``limits``' (and _retry_after's below). Time comes from the caller, not Redis TIME: the caller
# already read it to name the window keys, and tests freeze it.
_LUA = """
local counts = redis.call('MGET', unpack(KEYS))
local refused, wait = 0, 0
for i = 1, #KEYS / 2 do
  local amount, window, elapsed = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local previous, current = tonumber(counts[2*i-1]) or 0, tonumber(counts[2*i]) or 0
  if math.floor(previous * (1 - elapsed / window)) + current + 1 > amount then
    local seconds
    if current + 1 > amount then
      seconds = window - elapsed
      if current > amount then seconds = seconds + window * (1 - amount / current) end
    else
      seconds = window * (1 - (amount - current) / previous) - elapsed
    end
    seconds = math.max(1, math.min(window, math.floor(seconds) + 1))
    if seconds > wait then refused, wait = i, seconds end
  end
end
if refused > 0 then return {refused, wait} end
if ARGV[#ARGV] ~= '1' then return 0 end
for i = 1, #KEYS / 2 do
  if redis.call('INCR', KEYS[2*i]) == 1 then redis.call('EXPIRE', KEYS[2*i], 2 * ARGV[3*i-1]) end
end
return 0
"""


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


#: Spent failure-only budgets one process remembers; past this, those whose wait is over are dropped, then
#: the oldest (a guesser cycling through ids cannot grow the map without bound).
MAX_REMEMBERED_SPENT = 10_000


@dataclass(frozen=True)
class Limited:
    """The budget is spent; retry after this many seconds."""

    retry_after: int
    limit: str


def _tag(key: Sequence[str]) -> str:
    """Percent-encoded parts: no part can forge a '/' between parts, a ':' of the key layout
    or a brace of the Redis Cluster hash tag, so distinct keys never share a counter."""
    return "/".join(quote(part, safe="") for part in key)


def _distinct(limits: Sequence[RateLimitItem]) -> Sequence[RateLimitItem]:
    """Two equal limits would share one counter and spend it twice per hit."""
    if len(limits) < 2:
        return limits
    distinct: dict[tuple[int, int], RateLimitItem] = {}
    for item in limits:
        distinct.setdefault((item.amount, item.get_expiry()), item)
    return limits if len(distinct) == len(limits) else tuple(distinct.values())


def _retry_after(amount: int, window: int, elapsed: float, previous: int, current: int) -> int:
    """Whole seconds until one more hit fits, assuming no other hit meanwhile (the Lua script's twin)."""
    if current + 1 > amount:  # only the next window can take it, once this one has faded enough
        seconds = window - elapsed + (window * (1 - amount / current) if current > amount else 0.0)
    else:  # this window can, once the previous one's weight has faded enough
        seconds = window * (1 - (amount - current) / previous) - elapsed
    return int(max(1, min(window, math.floor(seconds) + 1)))


class RateLimiter:
    def __init__(self, redis_url: str = "", *, timeout: float = 0.5,
                 on_state_change: Callable[[str], None] | None = None) -> None:
        self._on_state_change = on_state_change  #: told "degraded" or "shared" on each switch (metrics)
        self._memory_storage = MemoryStorage()
        self._memory = SlidingWindowCounterRateLimiter(self._memory_storage)
        self._memory_lock = threading.Lock()  # test-then-hit of all limits must not interleave
        self._lock = threading.Lock()
        self._degraded_since: float | None = None
        self._next_retry = 0.0
        self._spent: dict[tuple[str, ...], float] = {}  #: failure-only budget key -> monotonic time spent until
        self._spent_lock = threading.Lock()
        self._redis: redis.Redis | None = None
        self._script: Script | None = None
        self._redis_error: type[Exception] = Exception
        self._no_script: type[Exception] = Exception
        if redis_url:
            import redis

            try:
                # Every connect and command ends after ``timeout``: a silent Redis degrades to local windows.
                self._redis = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                                   health_check_interval=30)
            except ValueError as e:
                raise ConfigurationError(f"ISSUER_REDIS_URL: {e}") from None
            self._script = self._redis.register_script(_LUA)
            self._redis_error, self._no_script = redis.RedisError, redis.exceptions.NoScriptError

    @property
    def state(self) -> str:
        """``local`` (no Redis configured), ``shared``, or ``degraded`` (Redis configured but unreachable)."""
        if self._redis is None:
            return "local"
        return "degraded" if self._degraded_since is not None else "shared"

    def hit(self, limits: Sequence[RateLimitItem], *key: str) -> Limited | None:
        """Spend one unit of every limit for ``key``, or none of them if any is exhausted.

        The refusal names the limit that keeps the caller waiting longest, and for how long."""
        return self._run(limits, key, spend=True)

    def peek(self, limits: Sequence[RateLimitItem], *key: str) -> Limited | None:
        """What :meth:`hit` would answer, spending nothing: for budgets that only failures spend
        (failed authentications), checked before the attempt and spent after it fails."""
        return self._run(limits, key, spend=False)

    # -- budgets only failures spend (failed client authentications, failed admin sign-ins) ------------
    def known_spent(self, *key: str) -> int | None:
        """Seconds until the failure-only budget ``key`` lets attempts through again, if this process has
        seen it spent (:meth:`fail`); None otherwise. No I/O: it is asked before every attempt, and a
        successful authentication, the common case, must cost the limiter nothing."""
        until = self._spent.get(key)
        if until is None:
            return None
        now = clock.monotonic()
        if until <= now:
            with self._spent_lock:
                self._spent.pop(key, None)
            return None
        return max(1, math.ceil(until - now))

    def fail(self, limits: Sequence[RateLimitItem], *key: str) -> Limited | None:
        """Spend one unit of a failure-only budget; the refusal when it was already spent.

        A spent budget is remembered in this process until its window lets the key try again, so
        :meth:`known_spent` refuses the next attempt before it is checked. The failure that spends the
        last unit looks once more, so this process refuses from the very next attempt; another replica
        learns it from its own next failure: across R replicas a window admits at most the budget plus
        R - 1 checked attempts."""
        limited = self.hit(limits, *key)
        spent = limited or self.peek(limits, *key)
        if spent is not None:
            self._remember_spent(key, clock.monotonic() + max(1, spent.retry_after))
        return limited

    def _remember_spent(self, key: tuple[str, ...], until: float) -> None:
        with self._spent_lock:
            if len(self._spent) >= MAX_REMEMBERED_SPENT:
                now = clock.monotonic()
                for k in [k for k, t in self._spent.items() if t <= now]:
                    del self._spent[k]
                while len(self._spent) >= MAX_REMEMBERED_SPENT:  # dicts keep insertion order: the oldest first
                    del self._spent[next(iter(self._spent))]
            self._spent[key] = until

    def _run(self, limits: Sequence[RateLimitItem], key: Sequence[str], *, spend: bool) -> Limited | None:
        if not limits:
            return None
        limits, tag = _distinct(limits), _tag(key)
        if self._use_shared():
            try:
                return self._hit_shared(limits, tag, spend)
            except self._redis_error as e:
                self._degrade(e)
        return self._hit_memory(limits, tag, spend)

    def _hit_shared(self, limits: Sequence[RateLimitItem], tag: str, spend: bool = True) -> Limited | None:
        now = clock.now()
        keys: list[str] = []
        args: list[float] = []
        for item in limits:
            window = item.get_expiry()
            index = int(now // window)
            base = f"{_PREFIX}:{{{tag}}}:{item.amount}/{window}:"  # one hash tag: one Cluster slot per call
            keys += (f"{base}{index - 1}", f"{base}{index}")
            args += (item.amount, window, now - index * window)
        args.append(1 if spend else 0)
        refused = self._evalsha(keys, args)
        if not refused:
            return None
        number, retry_after = refused
        return Limited(retry_after=int(retry_after), limit=str(limits[int(number) - 1]))

    def _evalsha(self, keys: list[str], args: list[float]) -> Any:
        """EVALSHA straight on a pooled connection: redis-py's per-command retry and metrics layers
        cost about a fifth of a hit's client CPU, and a retry after a timeout could spend twice.
        After a Redis restart (NOSCRIPT) the registered script loads itself and runs once more."""
        assert self._redis is not None and self._script is not None
        pool = self._redis.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", self._script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
            return conn.read_response()
        except self._no_script:
            pass
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]  # an answer may still be on its way: never hand this socket to the next hit
            raise
        finally:
            pool.release(conn)
        return self._script(keys=keys, args=args)

    def _hit_memory(self, limits: Sequence[RateLimitItem], tag: str, spend: bool = True) -> Limited | None:
        with self._memory_lock:
            refused: Limited | None = None
            for item in limits:
                if self._memory.test(item, tag):
                    continue
                window = item.get_expiry()
                previous, _, current, _ = self._memory_storage.get_sliding_window(item.key_for(tag), window)
                retry_after = _retry_after(item.amount, window, clock.now() % window, previous, current)
                if refused is None or retry_after > refused.retry_after:
                    refused = Limited(retry_after=retry_after, limit=str(item))
            if refused is None and spend:
                for item in limits:
                    self._memory.hit(item, tag)
            return refused

    def _use_shared(self) -> bool:
        if self._redis is None:
            return False
        if self._degraded_since is None:
            return True
        now = clock.monotonic()
        if now < self._next_retry:
            return False
        with self._lock:
            if self._degraded_since is None:  # another thread found Redis back meanwhile
                return True
            if now < self._next_retry:
                return False
            self._next_retry = now + _RETRY_REDIS_EVERY  # one thread tries; the others stay local meanwhile
        return self._try_redis()

    def _try_redis(self) -> bool:
        """Ping Redis (outside the lock: a silent Redis must not stall other threads) and share again
        if it answers."""
        assert self._redis is not None
        try:
            healthy = bool(self._redis.ping())
        except self._redis_error:
            healthy = False
        if not healthy:
            return False
        with self._lock:
            if self._degraded_since is not None:
                log.warning("rate limits: Redis is back, budgets are shared again")
                self._degraded_since = None
                if self._on_state_change is not None:
                    self._on_state_change("shared")
        return True

    def probe(self) -> str:
        """:attr:`state`, after trying Redis now when degraded: readiness says ``shared`` the moment
        Redis is back, and never says Redis is fine while budgets are still counted per process."""
        if self._redis is not None and self._degraded_since is not None:
            self._try_redis()
        return self.state

    def _degrade(self, error: Exception) -> None:
        with self._lock:
            if self._degraded_since is None:
                log.error("rate limits: Redis unreachable (%s); using per-process limits", type(error).__name__)
                self._degraded_since = clock.monotonic()
                if self._on_state_change is not None:
                    self._on_state_change("degraded")
                self._next_retry = self._degraded_since + _RETRY_REDIS_EVERY
