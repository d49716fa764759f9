"""Group commit of audit rows on the real databases: every waiter's row is durable when it returns,
and one bad row in a group costs no other row its answer."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from issuer import clock
from issuer.audit import AuditRecord, GroupCommitter
from issuer.audit_chain import row_mac
from issuer.db import Database
from issuer.migrate import upgrade
from issuer.models import AuditEvent


@pytest.fixture
def db(database_url: str) -> Any:
    upgrade(database_url)
    d = Database(database_url)
    yield d
    d.dispose()


def _row(**kw: Any) -> dict[str, Any]:
    r = AuditRecord(time=clock.now(), request_id="r", decision="granted", reason="granted",
                    jti=secrets.token_hex(16), expires_at=clock.now() + 60, **kw).to_row()
    r["mac"] = row_mac(b"p" * 32, r)
    return r


def _count(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def test_concurrent_rows_share_commits_and_each_is_durable_on_return(db: Database) -> None:
    committer = GroupCommitter(db)
    seen_after_return: list[bool] = []
    probe = Database(db.url)  # another connection: sees only what is committed

    def worker() -> None:
        for _ in range(25):
            row = _row()
            committer.write(row)
            with probe.session() as s:
                seen_after_return.append(
                    s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.jti == row["jti"])) == 1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    probe.dispose()
    assert _count(db) == 200
    assert seen_after_return == [True] * 200


def test_one_bad_row_fails_alone(db: Database) -> None:
    """A batch with a row the database refuses: that writer gets the error, the others their commit."""
    committer = GroupCommitter(db)
    good = [_row() for _ in range(5)]
    dup = dict(good[0])  # the same jti twice: the unique constraint refuses the second
    errors: dict[int, BaseException] = {}
    barrier = threading.Barrier(6)

    def write(i: int, row: dict[str, Any]) -> None:
        barrier.wait()
        try:
            committer.write(row)
        except SQLAlchemyError as e:
            errors[i] = e

    threads = [threading.Thread(target=write, args=(i, r)) for i, r in enumerate([*good, dup])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1  # exactly one of the two rows with that jti lost
    assert _count(db) == 5


def test_a_write_that_cannot_commit_raises_and_the_next_one_works(db: Database) -> None:
    committer = GroupCommitter(db)
    committer.write(_row())
    committer._reset()  # as if the connection were lost between batches
    with pytest.raises(SQLAlchemyError):
        committer.write(_row(sub="x" * 100_000) if db.engine.dialect.name != "sqlite" else {"nonsense": 1})
    committer.write(_row())
    assert _count(db) == 2


def test_a_writer_behind_a_stuck_commit_gives_up_with_an_error(db: Database) -> None:
    """The commit under way hangs (a stalled database): the next writer gets an error, never a silent pass."""
    committer = GroupCommitter(db, wait_timeout=0.2)
    with committer._cv:
        committer._leading = True  # as if another writer were stuck inside its commit
    with pytest.raises(SQLAlchemyError, match="in time"):
        committer.write(_row())
    with committer._cv:
        committer._leading = False


def test_a_closed_committer_refuses_rows(db: Database) -> None:
    committer = GroupCommitter(db)
    committer.write(_row())
    committer.close()
    with pytest.raises(SQLAlchemyError, match="closed"):
        committer.write(_row())
    assert _count(db) == 1


def test_a_row_reads_back_exactly_as_written_and_its_tag_still_verifies(db: Database) -> None:
    """Every column survives the trip (the PostgreSQL path sends rows as one JSON parameter): text that
    JSON or SQL would mangle, nested details, microseconds, and absent values."""
    committer = GroupCommitter(db)
    details = [{"type": "tool", "locations": ["https://t.example/"], "actions": ["read"],
                "constraints": {"path": {"prefix": "/home/ü'\"\\%$1/"}}, "arguments": None}]
    rows = [
        _row(sub="ëve 'quoted' \"double\" \\ back \U0001f600 $1 %s", actor={"sub": "c", "act": {"sub": "d"}},
             authorization_details=details, txn="t-1", parent_jti="p" * 32, requested_scopes="a b"),
        _row(),  # every optional column absent
    ]
    for row in rows:
        committer.write(row)
    committer.write(_row())  # a second write on the same connection reuses the prepared statement
    with db.session() as s:
        for row in rows:
            got = s.scalars(select(AuditEvent).where(AuditEvent.jti == row["jti"])).one()
            back = {f: getattr(got, f) for f in row}
            for f in ("time", "expires_at"):  # SQLite keeps no zone: the stored instant is UTC
                back[f] = back[f] and back[f].replace(tzinfo=back[f].tzinfo or UTC)
            assert back == row  # times to the microsecond
            assert row_mac(b"p" * 32, back) == got.mac


def test_a_group_is_one_statement_all_or_nothing(db: Database) -> None:
    """Rows committed together land together: a group with a refused row leaves none of its rows behind
    before each is retried alone."""
    committer = GroupCommitter(db)
    good = _row()
    bad = dict(good)  # same jti: the unique constraint refuses the pair as one statement
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):  # the driver's error; _commit wraps it
        committer._execute([good, bad])
    committer._reset()
    assert _count(db) == 0
    committer._execute([_row(), _row(), _row()])
    assert _count(db) == 3
