"""Delegation-aware revocation and transaction ids over real HTTP.

Revoking one hop of a chain revokes every hop made from it, however deep; revoking a client revokes every
capability it appears in; a verifier polling the signed feed refuses them too; one ``txn`` follows an agent
action through every hop and into the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from click.testing import CliRunner

from issuer.audit import AuditWriter, query_audit
from issuer.cli import cli
from issuer.revocation import RevocationList
from issuer.sdk.verifier import CapabilityVerifier, Revoked
from tests.conftest import LiveIssuer
from tests.test_exchange_e2e import error_of

FILES, TICKETS, REPORTS = "https://files.example", "https://tickets.example", "https://reports.example"
THREE_HOPS = """
rules:
  - id: helpdesk-tickets
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
  - id: tickets-to-files
    idp: idp-a
    groups: [support]
    clients: [tickets-svc]
    tool: files
    scopes: [files:read]
  - id: files-to-reports
    idp: idp-a
    groups: [support]
    clients: [files-svc]
    tool: reports
    scopes: [reports:read]
    constraints:
      quarter: {in: [q1, q2]}
"""


@pytest.fixture
def hops(live: LiveIssuer) -> LiveIssuer:
    """mcp-helpdesk -> tickets -> files -> reports: each tool chains the capability it received."""
    from issuer.registry import ScopeSpec, add_tool

    add_tool(live.db, name="reports", resource_uri=REPORTS, scopes=[ScopeSpec("reports:read")])
    live.add_client("tickets-svc", TICKETS, ["files"], may_chain=True)
    live.add_client("files-svc", FILES, ["reports"], may_chain=True)
    live.apply(THREE_HOPS)
    return live


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _chain(live: LiveIssuer, *, txn: str | None = None) -> list[str]:
    extra = [("txn", txn)] if txn is not None else []
    first = live.exchange(extra=extra)
    assert first.status_code == 200, first.text
    tokens = [first.json()["access_token"]]
    for client, resource, scope in (("tickets-svc", FILES, "files:read"), ("files-svc", REPORTS, "reports:read")):
        resp = live.exchange(client, tokens[-1], resource=resource, scope=scope)
        assert resp.status_code == 200, resp.text
        tokens.append(resp.json()["access_token"])
    return tokens


def _active(live: LiveIssuer, token: str, client: str = "mcp-helpdesk") -> bool:
    resp = live.post_form("/introspect", [("token", token)], auth=(client, live.secrets[client]))
    assert resp.status_code == 200, resp.text
    return bool(resp.json()["active"])


def _introspecting_client(token: str) -> str:
    return {TICKETS: "mcp-helpdesk", FILES: "tickets-svc", REPORTS: "files-svc"}[_claims(token)["aud"]]


def _cli(live: LiveIssuer, *args: str) -> str:
    env = {"ISSUER_DATABASE_URL": live.settings.database_url, "ISSUER_KEYS_DIR": str(live.settings.keys_dir)}
    res = CliRunner().invoke(cli, list(args), env=env)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture
def verifiers(hops: LiveIssuer) -> Iterator[dict[str, CapabilityVerifier]]:
    made = {aud: CapabilityVerifier(issuer=hops.url, audience=aud, allow_insecure_loopback=True,
                                    revocation_poll_interval=30) for aud in (TICKETS, FILES, REPORTS)}
    yield made
    for v in made.values():
        v.close()


def test_introspection_returns_the_whole_capability(hops: LiveIssuer) -> None:
    first, _second, third = _chain(hops, txn="mcp-req-42")
    info = hops.post_form("/introspect", [("token", third)], auth=("files-svc", hops.secrets["files-svc"])).json()
    assert info["active"] is True and info["token_type"] == "Bearer"
    assert info["act"] == {"sub": "files-svc", "act": {"sub": "tickets-svc", "act": {"sub": "mcp-helpdesk"}}}
    assert info["client_id"] == "files-svc" and info["txn"] == "mcp-req-42"
    assert info["pol"] == _claims(first)["pol"] and info["sub"] == "idp-a:alice"
    assert info["authorization_details"][0]["locations"] == [REPORTS]
    assert info["authorization_details"][0]["constraints"] == {"quarter": {"in": ["q1", "q2"]}}


def test_revoking_the_first_hop_revokes_every_hop_chained_from_it(
        hops: LiveIssuer, verifiers: dict[str, CapabilityVerifier]) -> None:
    first, second, third = _chain(hops)
    other = _chain(hops)  # another action of the same user: untouched
    for token in (first, second, third):
        verifiers[_claims(token)["aud"]].verify(token)
    out = _cli(hops, "revoke", "jti", _claims(first)["jti"])
    assert "3 live capabilities affected" in out and "with 2 chained from it" in out
    for token in (first, second, third):
        assert not _active(hops, token, _introspecting_client(token))
        verifier = verifiers[_claims(token)["aud"]]
        verifier.poll_revocations()
        with pytest.raises(Revoked):
            verifier.verify(token)
    for token in other:
        assert _active(hops, token, _introspecting_client(token))
        verifiers[_claims(token)["aud"]].verify(token)
    # and no new hop can be made from a revoked one
    error_of(hops.exchange("files-svc", second, resource=REPORTS, scope="reports:read"), 400, "invalid_grant")


def test_revoking_the_middle_hop_through_rfc7009_leaves_its_parent(hops: LiveIssuer) -> None:
    first, second, third = _chain(hops)
    resp = hops.post_form("/revoke", [("token", second)], auth=("tickets-svc", hops.secrets["tickets-svc"]))
    assert resp.status_code == 200
    assert _active(hops, first)
    assert not _active(hops, second, "tickets-svc") and not _active(hops, third, "files-svc")


def test_a_child_minted_while_its_parent_is_revoked_is_never_released(hops: LiveIssuer) -> None:
    """The race: the parent passes the pre-check, then is revoked before the child's audit row commits (so
    the revocation's walk cannot see the child). The check after the commit refuses and revokes the child."""
    first = hops.exchange().json()["access_token"]
    exchanger = hops.app.extensions["issuer"].exchanger
    original = exchanger.audit.commit_grant

    def revoke_parent_first(record: Any) -> None:
        RevocationList(hops.db).revoke_jti(_claims(first)["jti"], "admin")
        original(record)

    exchanger.audit.commit_grant = revoke_parent_first
    try:
        resp = hops.exchange("tickets-svc", first, resource=FILES, scope="files:read")
    finally:
        exchanger.audit.commit_grant = original
    assert "revoked" in error_of(resp, 400, "invalid_grant")["error_description"]
    granted, refused = query_audit(hops.db, client_id="tickets-svc")
    assert granted.decision == "granted" and granted.parent_jti == _claims(first)["jti"]
    assert RevocationList(hops.db).is_revoked({"jti": granted.jti, "iat": 0, "sub": "x"})  # never usable
    assert refused.decision == "denied" and refused.reason == "parent_revoked" and refused.jti is None
    assert isinstance(exchanger.audit, AuditWriter)


def test_revoking_a_client_revokes_it_anywhere_in_the_chain(
        hops: LiveIssuer, verifiers: dict[str, CapabilityVerifier]) -> None:
    first, second, third = _chain(hops)
    out = _cli(hops, "revoke", "client", "tickets-svc", "--dry-run")
    assert "2 live capabilities affected (dry run" in out
    assert _active(hops, second, "tickets-svc")  # a dry run changes nothing
    _cli(hops, "revoke", "client", "tickets-svc")
    assert _active(hops, first)  # before tickets-svc touched it
    assert not _active(hops, second, "tickets-svc")  # tickets-svc asked for it
    assert not _active(hops, third, "files-svc")  # tickets-svc is further down its act chain
    verifiers[REPORTS].poll_revocations()
    with pytest.raises(Revoked):
        verifiers[REPORTS].verify(third)
    verifiers[TICKETS].verify(first)


def test_txn_is_the_callers_kept_across_hops_and_audited(hops: LiveIssuer) -> None:
    tokens = _chain(hops, txn="mcp-req-7")
    assert {_claims(t)["txn"] for t in tokens} == {"mcp-req-7"}
    rows = query_audit(hops.db, txn="mcp-req-7")
    assert [r.client_id for r in rows] == ["mcp-helpdesk", "tickets-svc", "files-svc"]
    assert [r.parent_jti for r in rows] == [None, _claims(tokens[0])["jti"], _claims(tokens[1])["jti"]]
    made = _claims(hops.exchange().json()["access_token"])["txn"]  # none given: one is made
    assert len(made) >= 16 and query_audit(hops.db, txn=made)[0].decision == "granted"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 101, "caf\u00e9"])
def test_a_malformed_txn_is_refused(hops: LiveIssuer, bad: str) -> None:
    error_of(hops.exchange(extra=[("txn", bad)]), 400, "invalid_request")


def test_a_chained_capability_cannot_change_its_txn(hops: LiveIssuer) -> None:
    """A tool cannot detach its onward calls from the action that caused them."""
    first = hops.exchange(extra=[("txn", "action-1")]).json()["access_token"]
    resp = hops.exchange("tickets-svc", first, resource=FILES, scope="files:read", extra=[("txn", "action-2")])
    assert "txn" in error_of(resp, 400, "invalid_request")["error_description"]
    same = hops.exchange("tickets-svc", first, resource=FILES, scope="files:read", extra=[("txn", "action-1")])
    assert same.status_code == 200 and _claims(same.json()["access_token"])["txn"] == "action-1"


def test_a_repeated_txn_is_refused(hops: LiveIssuer) -> None:
    error_of(hops.exchange(extra=[("txn", "a"), ("txn", "b")]), 400, "invalid_request")


def test_audit_rows_with_txn_still_verify_and_an_edited_txn_is_detected(hops: LiveIssuer) -> None:
    _chain(hops, txn="trace-1")
    assert "verified" in _cli(hops, "audit", "verify")
    from issuer.models import AuditEvent

    with hops.db.session() as s:
        row = s.query(AuditEvent).filter(AuditEvent.txn == "trace-1").first()
        assert row is not None
        row.txn = None  # hide the row from a txn search
    env = {"ISSUER_DATABASE_URL": hops.settings.database_url, "ISSUER_KEYS_DIR": str(hops.settings.keys_dir)}
    res = CliRunner().invoke(cli, ["audit", "verify"], env=env)
    assert res.exit_code == 1 and "altered" in res.output
