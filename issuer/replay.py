"""Seen-once caches (client assertion ``jti``s), shared through Redis when configured.

Replicas must agree on "seen": with Redis, ``SET NX EX`` is one atomic round
trip; without Redis the database, which every worker already shares, does the
same with an upsert that only succeeds when the key is new or expired. The
in-memory map is for one process alone (tests, the SDKs).
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from sqlalchemy import Table, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from . import clock
from .db import Database
from .errors import TemporarilyUnavailable
from .models import ReplayEntry

__all__ = ["DatabaseReplayCache", "MemoryReplayCache", "RedisReplayCache", "ReplayCache"]


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


class DatabaseReplayCache:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._calls = 0

    def first_use(self, key: str, ttl: int) -> bool:
        now = datetime.fromtimestamp(clock.now(), UTC)
        values = {"key": hashlib.sha256(key.encode()).hexdigest(), "expires_at": now + timedelta(seconds=max(1, ttl))}
        table = cast(Table, ReplayEntry.__table__)
        try:
            with self._db.engine.begin() as conn:
                ins = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table).values(**values)
                stmt = ins.on_conflict_do_update(
                    index_elements=["key"],
                    set_={"expires_at": ins.excluded.expires_at},
                    where=table.c.expires_at < now,
                ).returning(table.c.key)
                # RETURNING, not rowcount: drivers disagree on rowcount for upserts (psycopg says -1).
                first = conn.execute(stmt).first() is not None
                self._calls += 1
                if self._calls % 100 == 0:  # keep the table small without a separate job
                    conn.execute(delete(table).where(table.c.expires_at < now))
                return first
        except SQLAlchemyError:
            raise TemporarilyUnavailable("The replay cache is unavailable.") from None


class RedisReplayCache:
    def __init__(self, url: str, prefix: str = "issuer:replay:", *, timeout: float = 1.0) -> None:
        import redis

        # A deadline on every connect and command, and a PING before reusing a connection idle for 30 s:
        # a Redis that went silent costs one check ``timeout`` seconds, never a hang.
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=30)
        self._prefix = prefix

    def ping(self) -> bool:
        import redis

        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def first_use(self, key: str, ttl: int) -> bool:
        import redis

        try:
            return bool(self._redis.set(self._prefix + key, b"1", nx=True, ex=max(1, ttl)))
        except redis.RedisError:
            raise TemporarilyUnavailable("The replay cache is unavailable.") from None
