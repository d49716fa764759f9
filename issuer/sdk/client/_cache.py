"""The capability cache: bounded, thread-safe, one exchange at a time per key.

A key identifies one user's request for one tool:

* the SHA-256 of the subject token (and of the actor token, if any), never
  the token itself, so two users never share an entry and a memory dump of
  the keys reveals no token;
* the target (``resource`` URI or ``audience`` name);
* the requested scopes, sorted;
* the canonical JSON of the requested actions and constraints.

Entries are fresh until ``expires_at - refresh_margin``; call-bound
capabilities are never stored. When full, the oldest entry goes first.
Concurrent misses for one key share one exchange (:meth:`CapabilityCache.join`).
Time is :func:`time.time`, read at call time, so freezegun controls it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from ._capability import IssuedCapability
from ._errors import ExchangeError

__all__ = ["CacheKey", "CapabilityCache", "Flight", "token_digest"]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheKey:
    subject: str  #: sha256 of the subject token
    subject_token_type: str
    actor: str | None  #: sha256 of the actor token
    actor_token_type: str | None
    target: tuple[str, str]  #: ("resource", uri) or ("audience", name)
    scopes: tuple[str, ...] | None  #: sorted; None: the policy's defaults
    details: str  #: canonical JSON of the requested actions and constraints

    def __repr__(self) -> str:
        return f"CacheKey(subject={self.subject[:8]}..., target={self.target!r}, scopes={self.scopes!r})"


@dataclass(frozen=True, slots=True)
class _Entry:
    capability: IssuedCapability
    fresh_until: float


class CapabilityCache:
    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: dict[CacheKey, Flight] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: CacheKey) -> IssuedCapability | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if time.time() >= entry.fresh_until:
                del self._entries[key]
                return None
            return entry.capability

    def put(self, key: CacheKey, capability: IssuedCapability, fresh_until: float) -> None:
        if self._max <= 0 or time.time() >= fresh_until:
            return
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = _Entry(capability, fresh_until)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard(self, key: CacheKey) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def join(self, key: CacheKey) -> tuple[Flight, bool]:
        """The exchange under way for ``key``, and whether the caller is to make it (the leader).

        Concurrent misses for one key make one exchange: the first caller leads,
        the others wait for its outcome (its capability, or its error). The
        leader must call :meth:`land` when done, whatever happened.
        """
        with self._lock:
            flight = self._inflight.get(key)
            if flight is not None:
                return flight, False
            flight = self._inflight[key] = Flight()
            return flight, True

    def land(self, key: CacheKey, flight: Flight) -> None:
        with self._lock:
            if self._inflight.get(key) is flight:
                del self._inflight[key]
        flight.done.set()


class Flight:
    """One exchange under way; waiters read its outcome once ``done`` is set."""

    __slots__ = ("capability", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.capability: IssuedCapability | None = None
        self.error: ExchangeError | None = None
