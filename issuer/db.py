"""Database engine and sessions, owned by the app (no module-level engine).

SQLite gets WAL mode and a busy timeout so the CLI and a running server can
share the embedded database; its lock waits end after 15 s and it has no
network to go silent. PostgreSQL gets a pool sized for the threads of one
worker, and a deadline on every wait (:class:`DeadlineConnection`): a database
that stops answering on a connection already open sends no error, only
silence, and without a deadline a request (and every thread queued behind it)
would wait as long as the silence lasts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .errors import TemporarilyUnavailable

__all__ = ["DEFAULT_TIMEOUT", "Database", "DeadlineConnection"]

#: Seconds; ``ISSUER_DB_TIMEOUT`` (issuer.settings) sets it for the server.
DEFAULT_TIMEOUT = 5.0
_RV = TypeVar("_RV")
#: psycopg's own "wait expired" error (private); any OperationalError is treated the same if it moves.
_WAIT_EXPIRED: type[Exception] = getattr(psycopg.errors, "_WaitTimeout", psycopg.OperationalError)


class DeadlineConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server (statement, commit, rollback, the pool's
    liveness check) ends after ``deadline`` seconds.

    A wait that expires leaves the connection in an unknown state (the statement may be running, its
    answer may still arrive), so the connection is closed: SQLAlchemy sees a disconnect, invalidates it
    and the pool never hands it out again.
    """

    deadline: float | None = None

    def wait(self, gen: PQGen[_RV], interval: float = 0.1, timeout: float | None = None) -> _RV:
        if timeout is None:
            timeout = self.deadline
        try:
            return super().wait(gen, interval, timeout)
        except _WAIT_EXPIRED:
            if self.pgconn.status == psycopg.pq.ConnStatus.OK and not self.closed and timeout is not None:
                self.pgconn.finish()
            raise psycopg.OperationalError(
                f"the database did not answer within {timeout} s; the connection was closed") from None


def postgres_connect_args(timeout: float) -> dict[str, Any]:
    """libpq parameters that bound connecting and let the kernel close a connection whose peer is gone."""
    seconds = max(2, math.ceil(timeout))
    return {
        "connect_timeout": seconds,
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout * 1000),
    }


class Database:
    def __init__(self, url: str, *, pool_size: int = 8, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite:"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800,
                          pool_timeout=timeout)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite:"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif self.engine.dialect.driver == "psycopg":
            event.listen(self.engine, "do_connect", self._connect_with_deadline)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._on_dispose: list[Callable[[], None]] = []

    def _connect_with_deadline(self, _dialect: Any, _record: Any, cargs: tuple[Any, ...],
                               cparams: dict[str, Any]) -> DeadlineConnection:
        conn = DeadlineConnection.connect(*cargs, **{**postgres_connect_args(self.timeout), **cparams})
        conn.deadline = self.timeout
        # The server cancels a statement before the client's deadline, so a merely slow query fails
        # cleanly on a connection that stays usable. A SET, not a startup ``options`` parameter, which
        # PgBouncer refuses.
        conn.execute(f"SET statement_timeout = {int(self.timeout * 900)}")  # a number, no input
        conn.commit()
        return conn

    def on_dispose(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` first when the database is disposed: owners of dedicated connections close them."""
        self._on_dispose.append(fn)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def serving(self) -> Iterator[Session]:
        """Like :meth:`session`, for request paths: a storage failure becomes a 503."""
        try:
            with self.session() as s:
                yield s
        except SQLAlchemyError as e:
            raise TemporarilyUnavailable("The issuer's database is unavailable.") from e

    def dispose(self) -> None:
        for fn in self._on_dispose:
            fn()
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=15000")
    cur.close()
