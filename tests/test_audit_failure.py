"""Nothing is minted without its committed audit record: a failing write is a 503 and no token."""

from __future__ import annotations

from sqlalchemy import func, select, text

from issuer.models import AuditEvent
from tests.conftest import LiveIssuer
from tests.test_exchange_e2e import error_of


def _break_audit_writes(live: LiveIssuer) -> None:
    """A trigger that makes every audit INSERT fail, as a full disk or a lost primary would."""
    with live.db.engine.begin() as c:
        if live.db.engine.dialect.name == "sqlite":
            c.execute(text("CREATE TRIGGER audit_broken BEFORE INSERT ON audit_events "
                           "BEGIN SELECT RAISE(ABORT, 'simulated storage failure'); END"))
        else:
            c.execute(text("CREATE FUNCTION audit_broken() RETURNS trigger LANGUAGE plpgsql AS "
                           "$$ BEGIN RAISE EXCEPTION 'simulated storage failure'; END $$"))
            c.execute(text("CREATE TRIGGER audit_broken BEFORE INSERT ON audit_events "
                           "FOR EACH ROW EXECUTE FUNCTION audit_broken()"))


def _granted_rows(live: LiveIssuer) -> int:
    with live.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.decision == "granted")))


def test_audit_write_failure_means_503_and_no_token(live: LiveIssuer) -> None:
    assert live.exchange().status_code == 200
    assert _granted_rows(live) == 1
    _break_audit_writes(live)
    resp = live.exchange()
    body = error_of(resp, 503, "temporarily_unavailable")
    assert "eyJ" not in resp.text and "access_token" not in body
    assert _granted_rows(live) == 1
    # a refusal without its record is no answer either: a 503 that says so (tests/hostile/test_audit_unwritable.py)
    refused = error_of(live.exchange(scope="tickets:write"), 503, "temporarily_unavailable")
    assert "audit" in refused["error_description"]
    with live.db.engine.begin() as c:
        c.execute(text("DROP TRIGGER audit_broken" + ("" if live.db.engine.dialect.name == "sqlite"
                                                      else " ON audit_events")))
    assert live.exchange().status_code == 200
    assert _granted_rows(live) == 2


def test_database_gone_is_503_not_500(live_sqlite: LiveIssuer) -> None:
    live = live_sqlite
    with live.db.engine.begin() as c:
        c.execute(text("DROP TABLE config_state"))
    error_of(live.exchange(), 503, "temporarily_unavailable")
