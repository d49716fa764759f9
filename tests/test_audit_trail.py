"""The audit trail: exactly one record per decision, tamper evidence, tail and export."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import func, select, text, update

from issuer.audit_chain import AuditSealer, verify_audit
from issuer.cli import cli
from issuer.models import AuditCheckpoint, AuditEvent
from tests.conftest import TOKEN_EXCHANGE, LiveIssuer


def _rows(live: LiveIssuer) -> list[AuditEvent]:
    with live.db.session() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _cli(live: LiveIssuer, *args: str) -> tuple[int, str]:
    env = {"ISSUER_DATABASE_URL": live.settings.database_url, "ISSUER_KEYS_DIR": str(live.settings.keys_dir)}
    res = CliRunner().invoke(cli, list(args), env=env)
    return res.exit_code, res.output


def test_every_decision_leaves_exactly_one_record(live: LiveIssuer) -> None:
    secret = live.secrets["mcp-helpdesk"]
    live.exchange()  # granted
    live.exchange(scope="tickets:write")  # refused by policy
    live.exchange(secret="wrong-secret-wrong-secret")  # refused: client authentication
    live.post_form("/token", [("grant_type", TOKEN_EXCHANGE)], auth=("mcp-helpdesk", secret))  # malformed
    live.http.post("/token", json={"grant_type": TOKEN_EXCHANGE}, auth=("mcp-helpdesk", secret))  # not a form
    live.exchange(subject_token=live.idp.token(aud="https://elsewhere.example"))  # bad subject token
    rows = _rows(live)
    assert [(r.decision, r.reason) for r in rows] == [
        ("granted", "granted"),
        ("denied", "scope_not_entitled"),
        ("denied", "invalid_client"),
        ("denied", "invalid_request"),
        ("denied", "invalid_request"),
        ("denied", "invalid_grant"),
    ]
    # a failed authentication never reads as the client acting; the claimed id, for spotting credential
    # stuffing, is kept apart
    assert rows[2].client_id is None and rows[2].actor == {"endpoint": "/token", "claimed_client_id": "mcp-helpdesk"}
    assert rows[3].client_id == "mcp-helpdesk"  # authenticated, then refused: the client's own row
    assert all(r.request_id for r in rows) and len({r.request_id for r in rows}) == len(rows)
    assert all(r.mac for r in rows)
    for r in rows:  # never a token or a secret
        blob = json.dumps({c.name: str(getattr(r, c.name)) for c in AuditEvent.__table__.columns})
        assert secret not in blob and "eyJ" not in blob


def test_request_id_is_echoed_and_recorded(live: LiveIssuer) -> None:
    resp = live.exchange(extra=[])
    rid = resp.headers["X-Request-Id"]
    assert _rows(live)[-1].request_id == rid
    resp = live.http.post("/token", headers={"X-Request-Id": "trace-42"}, content=b"")
    assert resp.headers["X-Request-Id"] == "trace-42"


def _traffic_then_seal(live: LiveIssuer, n: int = 5) -> None:
    with freeze_time("2030-01-01T00:00:00Z") as frozen:
        for i in range(n):
            live.exchange(subject_token=live.idp.token(sub=f"user{i}"))
        frozen.tick(timedelta(minutes=5))
        assert AuditSealer(live.db, live.pepper).seal_all() == n


def test_sealed_trail_verifies(live: LiveIssuer) -> None:
    _traffic_then_seal(live)
    live.exchange()  # not sealed yet: protected by its tag
    code, out = _cli(live, "audit", "verify")
    assert code == 0, out
    assert "6 records, 5 sealed" in out
    assert f"head: record {_rows(live)[4].id} chain " in out  # to keep outside the database


def test_edited_record_is_found(live: LiveIssuer) -> None:
    _traffic_then_seal(live)
    victim = _rows(live)[2].id
    with live.db.engine.begin() as c:
        c.execute(update(AuditEvent).where(AuditEvent.id == victim).values(granted_scopes="tickets:write"))
    code, out = _cli(live, "audit", "verify")
    assert code == 1
    assert f"record {victim} was altered" in out


def test_deleted_record_is_found(live: LiveIssuer) -> None:
    _traffic_then_seal(live)
    victim = _rows(live)[1].id
    with live.db.engine.begin() as c:
        c.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": victim})
    code, out = _cli(live, "audit", "verify")
    assert code == 1 and "deleted, inserted or reordered" in out


def test_reordered_records_are_found(live: LiveIssuer) -> None:
    """Swapping two whole rows (tags included) keeps every tag valid; the chain over ids catches it."""
    _traffic_then_seal(live)
    a, b = _rows(live)[1], _rows(live)[3]
    cols = [c.name for c in AuditEvent.__table__.columns if c.name != "id"]
    with live.db.engine.begin() as c:
        c.execute(update(AuditEvent).where(AuditEvent.id.in_([a.id, b.id])).values(jti=None))  # unique column
        for src, dst in ((a, b), (b, a)):
            c.execute(update(AuditEvent).where(AuditEvent.id == dst.id).values(
                **{col: getattr(src, col) for col in cols}))
    code, out = _cli(live, "audit", "verify")
    assert code == 1 and "reordered" in out


def test_forged_checkpoint_is_found(live: LiveIssuer) -> None:
    _traffic_then_seal(live)
    with live.db.engine.begin() as c:
        c.execute(update(AuditCheckpoint).values(count=AuditCheckpoint.count - 1))
    assert not verify_audit(live.db, live.pepper).ok


def test_two_sealers_never_seal_a_range_twice(live: LiveIssuer) -> None:
    with freeze_time("2030-01-01T00:00:00Z") as frozen:
        for i in range(3):
            live.exchange(subject_token=live.idp.token(sub=f"u{i}"))
        frozen.tick(timedelta(minutes=5))
        one, two = AuditSealer(live.db, live.pepper), AuditSealer(live.db, live.pepper)
        assert one.seal() is not None
        assert two.seal() is None  # nothing left; a racing insert of the same range would fail on first_id
    with live.db.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditCheckpoint)) == 1
    assert verify_audit(live.db, live.pepper).ok


def test_export_and_tail(live: LiveIssuer) -> None:
    live.exchange()
    live.exchange(scope="tickets:write")
    live.exchange(subject_token=live.idp.token(sub="bob"))
    code, out = _cli(live, "audit", "export", "--format", "jsonl", "--decision", "granted")
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["sub"] for d in lines] == ["idp-a:alice", "idp-a:bob"]
    code, out = _cli(live, "audit", "export", "--sub", "idp-a:alice", "--until", "2000-01-01T00:00:00Z")
    assert code == 0 and out == ""
    code, out = _cli(live, "audit", "tail", "-n", "2")
    assert code == 0 and len(out.splitlines()) == 2 and "idp-a:bob" in out.splitlines()[-1]
    code, out = _cli(live, "audit", "export", "--since", "yesterday")
    assert code == 2 and "ISO 8601" in out


@pytest.mark.parametrize("argv", [["audit", "verify"], ["audit", "seal"]])
def test_empty_trail(live: LiveIssuer, argv: list[str]) -> None:
    code, out = _cli(live, *argv)
    assert code == 0, out


def test_call_arguments_are_audited_with_the_tools_redactions(live: LiveIssuer) -> None:
    """The trail keeps what was asked and granted, minus what the tool's owner marked sensitive."""
    from issuer.registry import ScopeSpec, add_tool

    add_tool(live.db, name="bank", resource_uri="https://bank.example", scopes=[ScopeSpec("bank:pay")],
             redact_arguments=["memo"], hash_arguments=["account.iban"])
    live.add_client("mcp-bank", "https://mcp.bank.example", ["bank"])
    live.apply("rules:\n  - id: pay\n    idp: idp-a\n    groups: [support]\n    clients: [mcp-bank]\n"
               "    tool: bank\n    scopes: [bank:pay]\n    constraints:\n      amount: {max: 100}\n")
    token = live.idp.token(aud="https://mcp.bank.example")

    def pay(amount: int) -> int:
        args = {"amount": amount, "memo": "rent for flat 4", "account": {"iban": "DE02120300000000202051"}}
        detail = json.dumps([{"type": "tool_invocation", "arguments": args}])
        return live.exchange("mcp-bank", token, resource="https://bank.example", scope="bank:pay",
                             extra=[("authorization_details", detail)]).status_code

    assert pay(50) == 200
    assert pay(500) == 400  # outside the constraint: refused, and still recorded with its arguments
    granted, denied = _rows(live)[-2:]
    for row in (granted, denied):
        args = row.authorization_details[0]["arguments"]
        assert args["memo"] == "[redacted]"
        assert args["account"]["iban"].startswith("hmac-sha256:")
        blob = json.dumps(row.authorization_details)
        assert "rent for flat" not in blob and "DE0212" not in blob
    assert granted.authorization_details[0]["arguments"]["amount"] == 50
    assert denied.reason == "invalid_scope" and denied.authorization_details[0]["arguments"]["amount"] == 500
    # equal values hash equal, so an investigator can correlate without seeing them
    assert granted.authorization_details[0]["arguments"]["account"] == denied.authorization_details[0]["arguments"][
        "account"]
    assert verify_audit(live.db, live.pepper).ok


def test_refusal_for_an_unknown_tool_records_the_target(live: LiveIssuer) -> None:
    live.exchange(resource="https://nowhere.example")
    row = _rows(live)[-1]
    assert row.decision == "denied" and row.tool == "https://nowhere.example"
