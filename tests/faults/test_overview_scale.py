"""The overview stays cheap however long the audit trail grows: a fixed number of statements, each
on an index, with 100,000 tagged records in a PostgreSQL trail (10 days of them, a busy last hour,
some refused by rate limits)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from issuer.admin.service import AdminService
from issuer.audit_chain import ROW_FIELDS, row_mac
from issuer.db import Database
from tests.conftest import initialise, make_settings

ROWS = 100_000


def _bulk_trail(url: str, pepper: bytes, n: int) -> None:
    """n tagged records by COPY (seconds, not minutes): a fifth in the last hour, the rest over 10 days.

    On a connection of its own, without the issuer's statement deadline: a bulk load is not a request."""
    now = datetime.now(UTC)
    columns = (*ROW_FIELDS, "mac")
    engine = create_engine(url)
    raw: Any = engine.raw_connection()
    try:
        with raw.cursor() as cur, cur.copy(f"COPY audit_events ({', '.join(columns)}) FROM STDIN") as copy:
            for i in range(n):
                # a fifth in the last hour (a busy hour), with one rate-limited refusal in twenty of them
                ago = (i * 7 % 3590) + 5 if i % 5 == 0 else 3600 + (n - i) * 864_000 / n
                reason = ("rate_limited" if i % 100 in (0, 1) else "access_denied" if i % 5 == 2
                          else "granted")
                row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
                row.update(time=now - timedelta(seconds=ago), request_id=f"r{i}",
                           decision="granted" if reason == "granted" else "denied", reason=reason,
                           sub=f"user-{i % 500}", client_id="mcp-helpdesk", tool="tickets",
                           jti=f"{i:032x}" if reason == "granted" else None)
                values = [json.dumps(row[c]) if c in ("actor", "authorization_details") and row[c] is not None
                          else row[c] for c in ROW_FIELDS]
                copy.write_row([*values, row_mac(pepper, row)])
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE audit_events"))
    engine.dispose()


@pytest.fixture
def service(tmp_path: Path, pg_url: str) -> Iterator[AdminService]:
    settings = make_settings(tmp_path, pg_url)
    keys = initialise(settings)
    db = Database(pg_url)
    yield AdminService(db, keys, settings, actor="tests")
    db.dispose()


def test_the_overview_costs_the_same_few_indexed_statements_on_a_large_trail(service: AdminService) -> None:
    _bulk_trail(service.db.url, service.keys.pepper(), ROWS)
    statements: list[tuple[str, Any]] = []
    event.listen(service.db.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, params, _ctx, _many: statements.append((sql, params)))
    body = service.overview()
    assert body["audit_size"] == ROWS
    assert body["exchanges"]["totals"]["granted"] + body["exchanges"]["totals"]["denied"] > 0
    assert body["exchanges"]["rate_limited"] > 0
    # not one read per chunk of the trail: verification of a trail this size is `audit verify`'s job
    on_trail = [(sql, p) for sql, p in statements if "audit_events" in sql]
    assert len(statements) <= 20 and len(on_trail) <= 15, [s for s, _ in statements]
    plans = []
    with service.db.engine.connect() as c:
        for sql, params in on_trail:
            plan = "\n".join(r[0] for r in c.exec_driver_sql("EXPLAIN " + sql, params))
            plans.append(plan)
            assert "Seq Scan on audit_events" not in plan, (sql, plan)
    # the rate-limited count reads the rate-limited records of the hour, not every record of the hour
    assert any("ix_audit_events_reason_time" in p for p in plans), plans
