"""Database engine and sessions, owned by the app (no module-level engine).

SQLite gets WAL mode and a busy timeout so the CLI and a running server can
share the embedded database; PostgreSQL gets a pool sized for the threads of
one worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .errors import TemporarilyUnavailable

__all__ = ["Database"]


class Database:
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite:"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite:"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._on_dispose: list[Callable[[], None]] = []

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
