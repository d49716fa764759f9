"""Group commit of audit rows (:class:`GroupCommitter`), on connections of its own.

A request thread queues its row; if no commit is under way it becomes the leader and commits every row
queued at that moment in one statement on the committer's own connection, while threads that arrive
meanwhile wait to be released with the outcome (or to lead the next group). An idle server commits each
row alone, in the request's own thread, with no hand-off; a busy one pays one commit per group.
No writer returns before the commit that holds its row succeeded.

Its dedicated connection is looked after here, since the pool's liveness check never sees it: a
connection the server closed while the issuer was idle is replaced before a row is sent on it, and a
row the database refuses (a data error) costs the row its answer, never the connection.
"""

from __future__ import annotations

import json
import logging
import select as _io_select
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import DatabaseError, DataError, Error, IntegrityError, OperationalError, errors, pq
from psycopg.generators import execute
from sqlalchemy import Connection, insert
from sqlalchemy.exc import DataError as SADataError
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from . import clock
from .audit_chain import ROW_FIELDS
from .db import Database
from .models import AuditEvent

__all__ = ["GroupCommitter"]

log = logging.getLogger(__name__)
_SUCCESS = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
_OK, _IDLE = pq.ConnStatus.OK, pq.TransactionStatus.IDLE


@dataclass(eq=False)
class _Waiter:
    row: dict[str, Any]
    done: bool = False
    error: BaseException | None = None


def _timestamp(value: object) -> str:
    """A row's datetimes as PostgreSQL reads them back to the microsecond (the tag was computed on them)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _check(results: list[Any]) -> None:
    """Raise the error of a failed statement as psycopg's class for its SQLSTATE (a DataError for a value
    the database refuses), so the committer can tell a refused row from a lost connection."""
    for result in results:
        if result.status in _SUCCESS:
            continue
        message = (result.error_message or b"").decode(errors="replace") or "audit insert failed"
        sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
        try:
            cls: type[Error] = errors.lookup(sqlstate.decode()) if sqlstate else DatabaseError
        except KeyError:
            cls = DatabaseError
        raise cls(message)


def _refused_row(error: BaseException) -> bool:
    """The database refused the row's content (SQLSTATE classes 22 and 23), not the connection."""
    return isinstance(error, (DataError, IntegrityError, SADataError, SAIntegrityError))


def _looks_alive(pgconn: Any) -> bool:
    """An idle connection with nothing to read, found without a round trip.

    A server that ended the session (restart, ``pg_terminate_backend``, a proxy or firewall reset)
    leaves its goodbye or an end-of-file on the socket: reading it here tells the connection is dead
    before any statement is sent, so a fresh connection can take the row with no doubt about
    whether the first one committed it."""
    for _ in range(2):  # a notice first, then possibly the end of the connection
        if pgconn.status != _OK or pgconn.transaction_status != _IDLE:
            return False
        poller = _io_select.poll()
        poller.register(pgconn.socket, _io_select.POLLIN)
        if not poller.poll(0):
            return True
        try:
            pgconn.consume_input()
        except OperationalError:
            return False
    return bool(pgconn.status == _OK)


class GroupCommitter:
    """Leader/follower group commit: writers block in :meth:`write` until their row is durable."""

    #: Rows per statement: bounds the statement's size, far above the threads one worker runs.
    MAX_BATCH = 500

    def __init__(self, db: Database, *, wait_timeout: float | None = None) -> None:
        self._db = db
        # A Core INSERT: the ORM's unit of work costs more than the row is worth on this path.
        self._insert = insert(AuditEvent)
        # A leader's commit is bounded by the database deadline (a liveness check or a connection attempt,
        # then the statement): its followers give up a little after that.
        self._wait_timeout = wait_timeout if wait_timeout is not None else 3 * db.timeout
        self._cv = threading.Condition()
        self._queue: list[_Waiter] = []
        self._leading = False  #: a writer is committing a group; only the leader touches the connections
        self._conn: Connection | None = None  #: batches, in a transaction
        self._single: Connection | None = None  #: a lone row, autocommitted
        self._autocommit = db.engine.dialect.name != "sqlite"  # SQLite's commit is local: no round trip to save
        # psycopg: rows go straight to the driver as a prepared statement. SQLAlchemy's per-execute
        # machinery (compiled-cache lookup, bind processing, result set-up) costs more than the insert.
        self._psycopg = db.engine.dialect.name == "postgresql" and db.engine.dialect.driver == "psycopg"
        # One statement for one row or a group: the rows travel as one JSON array parameter, so a group
        # is one round trip and one transaction, and a row costs one C-encoded JSON object instead of
        # a driver-side adaptation per column. Built from the model's own names only: no input reaches it.
        table, columns = AuditEvent.__tablename__, ", ".join((*ROW_FIELDS, "mac"))
        self._sql = (f"INSERT INTO {table} ({columns}) SELECT {columns} "  # noqa: S608
                     f"FROM json_populate_recordset(NULL::{table}, $1::json)").encode()
        self._prepared: object | None = None  #: the libpq connection the statement is prepared on
        self._closed = False
        db.on_dispose(self.close)

    def close(self) -> None:
        """Refuse new rows, let a commit under way finish, close the connections."""
        with self._cv:
            self._closed = True
            self._cv.wait_for(lambda: not self._leading, timeout=self._wait_timeout)
            self._reset()
            self._cv.notify_all()

    def write(self, row: dict[str, Any]) -> None:
        """Return once ``row`` is committed; raise SQLAlchemyError if it is not (or not in time)."""
        waiter = _Waiter(row)
        deadline = clock.monotonic() + self._wait_timeout
        with self._cv:
            if self._closed:
                raise SQLAlchemyError("the audit writer is closed")
            self._queue.append(waiter)
            while self._leading and not waiter.done:
                self._cv.wait(timeout=max(0.0, deadline - clock.monotonic()))
                if not waiter.done and self._leading and clock.monotonic() >= deadline:
                    # The row may still be committed later: an audit row without a token is harmless,
                    # the reverse is not.
                    raise PoolTimeout("audit commit did not finish in time")
            if not waiter.done and self._closed:
                self._queue.remove(waiter)
                raise SQLAlchemyError("the audit writer is closed")
            if not waiter.done:
                self._leading = True  # nobody is committing and our row waits: lead the next group
        if not waiter.done:
            try:
                while not waiter.done:
                    with self._cv:
                        batch, self._queue = self._queue[: self.MAX_BATCH], self._queue[self.MAX_BATCH:]
                    self._commit(batch)
                    with self._cv:
                        self._cv.notify_all()
            finally:
                with self._cv:
                    self._leading = False
                    self._cv.notify_all()  # a writer whose row is still queued leads the next group
        if waiter.error is not None:
            raise waiter.error

    def _commit(self, batch: list[_Waiter]) -> None:
        try:
            self._execute([w.row for w in batch])
        except Exception as e:
            refused = _refused_row(e) and self._healthy()
            if refused and len(batch) > 1:
                # One bad row must not cost the others their answer: retry each alone, on this connection.
                for w in batch:
                    self._commit([w])
                return
            if not refused:
                # The connection failed (or the database did not answer in time): a data error on a
                # healthy connection keeps it, anything else costs it. Every row queued meanwhile
                # would fail the same way, one deadline after another, so they fail now, together.
                self._reset()
                with self._cv:
                    batch, self._queue = batch + self._queue, []
            for i, w in enumerate(batch):  # each thread raises its own exception object
                w.error = e if i == 0 and isinstance(e, SQLAlchemyError) else SQLAlchemyError(
                    f"audit commit failed: {type(e).__name__}")
        for w in batch:
            w.done = True

    def _execute(self, rows: list[dict[str, Any]]) -> None:
        if self._psycopg:
            self._execute_psycopg(rows)
            return
        single = len(rows) == 1 and self._autocommit
        if single:
            # Alone: one autocommitted statement, one round trip.
            if self._single is None:
                self._single = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            conn = self._single
        else:
            if self._conn is None:
                self._conn = self._db.engine.connect()
            conn = self._conn
        # A group: one transaction, the rows sent as one pipelined executemany of the cached statement
        # (a multi-VALUES statement would be compiled anew for every batch, costing more than it saves).
        with conn.begin():
            conn.execute(self._insert, rows[0] if single else rows)

    def _execute_psycopg(self, rows: list[dict[str, Any]]) -> None:
        """Straight to libpq (psycopg's public ``pq`` layer) and psycopg's wait loop, which waits for the
        server without the GIL and within the connection's deadline (issuer.db.DeadlineConnection).

        psycopg's cursor machinery (parameter adaptation, result set-up) cost more CPU than the
        insert itself; here a row is one JSON object and the statement stays prepared.

        A connection found dead before sending (see :func:`_looks_alive`) is replaced and the row goes
        on a fresh one. A failure after sending is not retried: the row may have been committed, and a
        second attempt could only add a duplicate denial or, for a grant, trip the unique ``jti`` and
        turn the answer into a 503; either way no token leaves without its row, but a retry would
        double the wait on a database that stopped answering."""

        if self._single is not None and not _looks_alive(self._pgconn(self._single)):
            self._reset()
        if self._single is None:
            self._single = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        dbapi: Any = self._single.connection.dbapi_connection
        pgconn = dbapi.pgconn
        if self._prepared is not pgconn:
            pgconn.send_prepare(b"issuer_audit_insert", self._sql)
            _check(dbapi.wait(execute(pgconn)))
            self._prepared = pgconn
        payload = json.dumps(rows, separators=(",", ":"), default=_timestamp).encode()
        pgconn.send_query_prepared(b"issuer_audit_insert", [payload])
        _check(dbapi.wait(execute(pgconn)))

    @staticmethod
    def _pgconn(conn: Connection) -> Any:
        return conn.connection.dbapi_connection.pgconn  # type: ignore[union-attr]

    def _healthy(self) -> bool:
        """The dedicated connections are still open and idle after a failed statement."""
        if not self._psycopg:
            return True  # SQLAlchemy rolled the transaction back; the connection is usable
        if self._single is None:
            return False
        pgconn = self._pgconn(self._single)
        return bool(pgconn.status == _OK and pgconn.transaction_status == _IDLE)

    def _reset(self) -> None:
        self._prepared = None
        for conn in (self._conn, self._single):
            if conn is not None:
                try:
                    conn.invalidate()
                    conn.close()
                except Exception:  # already gone; new connections are made for the next batch
                    log.debug("audit connection reset", exc_info=True)
        self._conn = self._single = None
