"""A row the database refuses costs that row its answer, never the audit committer's connection:
a stream of hostile values must not open a PostgreSQL connection per request."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import SQLAlchemyError

from issuer import clock
from issuer.audit import AuditRecord, GroupCommitter
from issuer.audit_chain import row_mac
from issuer.db import Database
from issuer.migrate import upgrade
from issuer.models import AuditEvent


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    upgrade(pg_url)
    db = Database(pg_url)
    yield db
    db.dispose()


def _row(**kw: Any) -> dict[str, Any]:
    r = AuditRecord(time=clock.now(), request_id="r", decision="denied", reason="invalid_request", **kw).to_row()
    r["mac"] = row_mac(b"p" * 32, r)
    return r


def test_refused_rows_keep_the_committers_connection(pg_db: Database) -> None:
    connects: list[object] = []
    event.listen(pg_db.engine, "connect", lambda conn, _rec: connects.append(conn))
    committer = GroupCommitter(pg_db)
    committer.write(_row(sub="alice"))
    assert len(connects) == 1
    for i in range(20):
        # PostgreSQL text cannot hold NUL: the statement fails with a data error (SQLSTATE 22P05)
        with pytest.raises(SQLAlchemyError):
            committer.write(_row(sub=f"mallory\x00{i}"))
        with pytest.raises(SQLAlchemyError):  # and a duplicate jti, an integrity error (23505)
            jti = secrets.token_hex(8)
            committer.write(_row(jti=jti))
            committer.write(_row(jti=jti))
    committer.write(_row(sub="bob"))
    assert len(connects) == 1, f"{len(connects)} connections for 41 refused rows"
    with pg_db.session() as s:
        subs = set(s.scalars(select(AuditEvent.sub)))
        count = s.scalar(select(func.count()).select_from(AuditEvent))
    assert {"alice", "bob"} <= subs and count == 22  # the good rows, the 20 first-jti rows, nothing else
