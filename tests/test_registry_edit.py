"""Editing and disabling tools and identity providers, the overview, and testing a decision against arguments:
the same operations through the service layer, the admin API and the CLI, with the same messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from issuer.admin.service import AdminService
from issuer.cli import cli
from tests.conftest import LiveIssuer
from tests.test_admin_api import Admin, error, last_change
from tests.test_cli import Run, ok, one_error_line


def service(live: LiveIssuer) -> AdminService:
    return AdminService(live.db, live.keys, live.settings, actor="cli:tests")


@pytest.fixture
def admin(live_sqlite: LiveIssuer) -> Admin:
    _, key = service(live_sqlite).create_admin_key(name="ops", role="admin")
    return Admin(live_sqlite, key)


# ----------------------------------------------------------------------------- tools


def test_a_disabled_tool_is_reachable_by_nobody_until_enabled(live_sqlite: LiveIssuer) -> None:
    """Taking an abused tool offline is one call, whatever the policy says."""
    svc = service(live_sqlite)
    assert live_sqlite.exchange().status_code == 200
    assert svc.set_tool_enabled("tickets", False)["status"] == "disabled"
    refused = live_sqlite.exchange()
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_target"
    change = svc.list_changes(newest_first=True, limit=1)[0]
    assert change["action"] == "tool.disable" and change["before"] == {"status": "active"}
    svc.set_tool_enabled("tickets", True)
    assert live_sqlite.exchange().status_code == 200


def test_editing_a_tool_checks_what_adding_one_checks(live_sqlite: LiveIssuer) -> None:
    svc = service(live_sqlite)
    tool = svc.update_tool("tickets", description="Tickets", rate_limit="5/minute", redact_arguments=["body"])
    assert (tool["description"], tool["rate_limit"], tool["redact_arguments"]) == ("Tickets", "5/minute", ["body"])
    change = svc.list_changes(newest_first=True, limit=1)[0]
    assert change["action"] == "tool.update" and change["before"]["rate_limit"] is None
    with pytest.raises(Exception, match="an argument is either redacted or hashed, not both"):
        svc.update_tool("tickets", hash_arguments=["body"])
    with pytest.raises(Exception, match="rate-limit"):
        svc.update_tool("tickets", rate_limit="lots")
    with pytest.raises(Exception, match="no tool named 'nope'"):
        svc.update_tool("nope", description="x")
    assert svc.update_tool("tickets", rate_limit="")["rate_limit"] is None  # back to the default
    added = svc.update_tool("tickets", add_scopes=[{"name": "tickets:close", "actions": ["close"]}])
    assert [s["name"] for s in added["scopes"]] == ["tickets:close", "tickets:read", "tickets:write"]
    with pytest.raises(Exception, match="scope: 'tickets:read' is already defined"):
        svc.update_tool("tickets", add_scopes=[{"name": "tickets:read"}])
    with pytest.raises(Exception, match="is not a valid scope token"):
        svc.update_tool("tickets", add_scopes=[{"name": "two words"}])
    count = len(svc.list_changes(limit=1000))
    svc.update_tool("tickets", description="Tickets")  # no change, no record
    assert len(svc.list_changes(limit=1000)) == count


def test_tools_are_edited_and_disabled_through_the_api(admin: Admin) -> None:
    body = admin("PATCH", "/tools/tickets", {"description": "Tickets", "enabled": False}).json()
    assert body["description"] == "Tickets" and body["status"] == "disabled"
    assert last_change(admin.live)["action"] == "tool.disable"
    assert "rate-limit" in error(admin("PATCH", "/tools/tickets", {"rate_limit": "lots"}), 400, "invalid_request")
    scoped = admin("PATCH", "/tools/tickets", {"add_scopes": [{"name": "tickets:close"}]}).json()
    assert "tickets:close" in [s["name"] for s in scoped["scopes"]]
    error(admin("PATCH", "/tools/tickets", {}), 400, "invalid_request")
    error(admin("PATCH", "/tools/nope", {"enabled": True}), 404, "not_found")
    assert last_change(admin.live)["action"] == "tool.update"


def test_an_auditor_cannot_edit_a_tool_or_provider(live_sqlite: LiveIssuer) -> None:
    _, key = service(live_sqlite).create_admin_key(name="audit", role="auditor")
    auditor = Admin(live_sqlite, key)
    error(auditor("PATCH", "/tools/tickets", {"enabled": False}), 403, "insufficient_scope")
    error(auditor("PATCH", "/idps/idp-a", {"enabled": False}), 403, "insufficient_scope")
    assert auditor("GET", "/overview").status_code == 200


# ----------------------------------------------------------------------------- identity providers


def test_a_disabled_provider_s_tokens_are_refused(live_sqlite: LiveIssuer) -> None:
    svc = service(live_sqlite)
    assert svc.set_idp_enabled("idp-a", False)["enabled"] is False
    refused = live_sqlite.exchange()
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert svc.list_changes(newest_first=True, limit=1)[0]["action"] == "idp.disable"
    svc.set_idp_enabled("idp-a", True)
    assert live_sqlite.exchange().status_code == 200


def test_editing_a_provider_checks_what_adding_one_checks(live_sqlite: LiveIssuer) -> None:
    svc = service(live_sqlite)
    with pytest.raises(Exception, match=r"algorithms: \['HS256'\] not allowed"):
        svc.update_idp("idp-a", algorithms=["HS256"])
    with pytest.raises(Exception, match="give either --jwks-uri or --jwks-file, not both"):
        svc.update_idp("idp-a", jwks_uri="https://x.example/jwks", jwks={"keys": []})
    with pytest.raises(Exception, match="subject-claim: must be a claim name"):
        svc.update_idp("idp-a", subject_claim="")
    inline = svc.update_idp("idp-a", jwks=live_sqlite.idp.jwks(), attribute_claims=["tenant"])
    assert inline["jwks_uri"] is None and inline["jwks"] and inline["attribute_claims"] == ["tenant"]
    assert live_sqlite.exchange().status_code == 200  # inline keys work at once
    change = svc.list_changes(newest_first=True, limit=1)[0]
    assert change["action"] == "idp.update" and change["before"]["jwks_uri"] == live_sqlite.idp.jwks_uri


def test_providers_are_edited_through_the_api(admin: Admin) -> None:
    body = admin("PATCH", "/idps/idp-a", {"algorithms": ["ES256"], "enabled": False}).json()
    assert body["algorithms"] == ["ES256"] and body["enabled"] is False
    assert "HS256" in error(admin("PATCH", "/idps/idp-a", {"algorithms": ["HS256"]}), 400, "invalid_request")
    error(admin("PATCH", "/idps/idp-a", {"issuer": "https://other.example"}), 400, "invalid_request")
    error(admin("PATCH", "/idps/nope", {"enabled": True}), 404, "not_found")


# ----------------------------------------------------------------------------- overview and decisions


def test_the_overview_counts_the_last_hour_by_decision(admin: Admin) -> None:
    live = admin.live
    assert live.exchange().status_code == 200
    assert live.exchange(scope="tickets:write").status_code == 400
    body = admin("GET", "/overview").json()
    assert body["readiness"]["database"] == "ok" and body["readiness"]["keys"] == "ok"
    assert body["exchanges"]["totals"] == {"granted": 1, "denied": 1}
    assert len(body["exchanges"]["buckets"]) == 12 and body["policy_version"] == 1
    assert body["audit"]["ok"] is True and body["rotation"]["active"] and body["audit_size"] == 2


def test_the_overview_counts_every_rate_limit_refusal(admin: Admin) -> None:
    """A budget's refusal and a refusal-budget's refusal (issuer/exchange.py) are both rate limits to an admin."""
    from issuer import clock
    from issuer.audit import AuditRecord

    audit = admin.live.app.extensions["issuer"].exchanger.audit
    for reason in ("rate_limited", "refusals_rate_limited", "invalid_scope"):
        audit.record_denial(AuditRecord(time=clock.now(), request_id="r", decision="denied", reason=reason))
    assert admin("GET", "/overview").json()["exchanges"]["rate_limited"] == 2


def test_a_large_trail_is_not_verified_on_every_look(admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The overview must stay cheap on a trail of millions of records; `audit verify` still reads them all."""
    import issuer.admin.service

    monkeypatch.setattr(issuer.admin.service, "VERIFY_INLINE_UP_TO", 1)
    admin.live.exchange()
    admin.live.exchange()
    body = admin("GET", "/overview").json()
    assert body["audit"] is None and body["audit_size"] == 2
    assert admin("GET", "/audit/verify").json()["rows"] == 2


def test_a_decision_is_tested_against_one_call_s_arguments(live_sqlite: LiveIssuer) -> None:
    live_sqlite.apply("""
rules:
  - id: own-folder
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: files
    scopes: [files:read]
    constraints:
      path: {prefix: "/home/${sub}"}
""")
    svc = service(live_sqlite)
    base = {"sub": "alice", "groups": ["support"], "client_id": "mcp-helpdesk", "tool": "files"}
    result = svc.test_policy(**base, arguments={"path": "/home/alice/notes.txt"})
    assert result["constraints"] == {"path": {"prefix": "/home/alice/"}}
    assert result["arguments"] == {"admitted": True, "violations": []}
    refused = svc.test_policy(**base, arguments={"path": "/home/bob/secret.txt"})["arguments"]
    assert refused["admitted"] is False and refused["violations"]
    assert svc.test_policy(**base)["arguments"] is None
    denied = svc.test_policy(**{**base, "groups": ["sales"]}, arguments={"path": "/home/alice/x"})
    assert denied["decision"] == "denied" and denied["arguments"] == {"admitted": False, "violations": []}
    with pytest.raises(Exception, match="sub: the user's subject is required"):
        svc.test_policy(**{**base, "sub": " "})


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def ready(tmp_path: Path) -> Run:
    """`issuer ...` on an initialised temporary database and key folder (tests/test_cli.py's set-up)."""
    env = {"ISSUER_DATABASE_URL": f"sqlite:///{tmp_path}/issuer.db", "ISSUER_KEYS_DIR": str(tmp_path / "keys")}
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), env=env)

    ok(invoke("init"))
    return invoke


def test_the_cli_edits_disables_and_reports(ready: Run, tmp_path: Path) -> None:
    ok(ready("tool", "add", "tickets", "--resource", "https://tickets.example", "--scope", "tickets:read"))
    assert "rate limit 5/minute" in ok(ready("tool", "update", "tickets", "--rate-limit", "5/minute"))
    assert "disabled" in ok(ready("tool", "disable", "tickets"))
    ok(ready("tool", "update", "tickets", "--add-scope", "tickets:close", "--action", "tickets:close=close"))
    one_error_line(ready("tool", "update", "tickets", "--add-scope", "tickets:close"))
    listed = json.loads(ok(ready("tool", "list", "--json")))
    assert listed[0]["status"] == "disabled" and listed[0]["scopes"] == "tickets:close tickets:read"
    ok(ready("tool", "enable", "tickets"))
    one_error_line(ready("tool", "update", "tickets", "--rate-limit", "lots"))
    one_error_line(ready("tool", "disable", "nope"))
    jwks = tmp_path / "jwks.json"
    public = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    ok(ready("idp", "add", "corp", "--issuer", "https://login.corp.example", "--jwks-file", str(jwks)))
    assert "ES256" in ok(ready("idp", "update", "corp", "--alg", "ES256"))
    one_error_line(ready("idp", "update", "corp", "--alg", "HS256"))
    assert "disabled" in ok(ready("idp", "disable", "corp"))
    ok(ready("idp", "enable", "corp"))
    status = ok(ready("status"))
    assert "readiness: database ok, keys ok" in status and "policy: none (all denied)" in status
    assert json.loads(ok(ready("status", "--json")))["exchanges"]["totals"] == {"granted": 0, "denied": 0}
