"""What each console page does, through the Flask test client: every answer comes from the service layer."""

from __future__ import annotations

import json
import re

import pytest

from issuer.admin.service import AdminService
from tests.conftest import LiveIssuer
from tests.console.conftest import Console


def service(live: LiveIssuer) -> AdminService:
    return AdminService(live.db, live.keys, live.settings, actor="cli:tests")


def text(resp: object) -> str:
    return str(resp.get_data(as_text=True))  # type: ignore[attr-defined]


def test_a_policy_error_is_shown_at_its_line_and_nothing_is_applied(admin: Console, live_sqlite: LiveIssuer) -> None:
    document = "rules:\n  - id: r1\n    idp: idp-a\n    groups: [support]\n    clients: [mcp-helpdesk]\n"\
               "    tool: nope\n    scopes: [x]\n"
    resp = admin.post("/policy", {"document": document})
    assert resp.status_code == 400
    page = text(resp)
    line = re.search(r'<li id="line-6" class="has-error">.*?</li>', page, re.S)
    assert line and "line 6:" in line.group(0) and "nope" in line.group(0)
    assert service(live_sqlite).list_policy_versions()[0]["version"] == 1
    assert admin.post("/policy", {"document": document.replace("nope", "tickets").replace("[x]", "[tickets:read]")}
                      ).status_code == 303
    assert service(live_sqlite).list_policy_versions()[0]["version"] == 2
    diff = text(admin.get("/policy/diff?from=1&to=2"))
    assert '<span class="del">-  - id: support-tickets-read' in diff
    assert admin.get("/policy/diff?from=1&to=99").status_code == 404
    assert admin.get("/policy/diff?from=x").status_code == 400
    assert admin.get("/policy/versions/99").status_code == 404


def test_a_transaction_is_followed_across_hops(admin: Console, live_sqlite: LiveIssuer) -> None:
    assert live_sqlite.exchange(extra=[("txn", "txn-42")]).status_code == 200
    assert live_sqlite.exchange(extra=[("txn", "txn-42")], scope="tickets:write").status_code == 400
    assert live_sqlite.exchange(extra=[("txn", "other")]).status_code == 200
    record = text(admin.get("/audit/1"))
    assert 'href="/console/audit?txn=txn-42"' in record
    followed = text(admin.get("/audit?txn=txn-42"))
    assert len(re.findall(r'href="/console/audit/[0-9]+"', followed)) == 2
    exported = text(admin.get("/audit/export?txn=txn-42&decision=denied")).splitlines()
    assert [json.loads(x)["reason"] for x in exported] == ["scope_not_entitled"]


def test_bad_audit_filters_get_the_service_s_message(admin: Console) -> None:
    resp = admin.get("/audit?since=yesterday")
    assert resp.status_code == 400 and "since: &#39;yesterday&#39; is not an ISO 8601 time" in text(resp)
    assert admin.get("/audit?decision=maybe").status_code == 400
    assert admin.get("/audit/999").status_code == 404


def test_revocation_says_how_many_live_capabilities_first(admin: Console, live_sqlite: LiveIssuer) -> None:
    token = live_sqlite.exchange().json()["access_token"]
    live_sqlite.exchange()
    jti = service(live_sqlite).query_audit({"decision": "granted"}, limit=1)[0]["jti"]
    confirm = text(admin.post("/revocation", {"kind": "jti", "value": jti}))
    assert "affects <strong>1</strong> live capability" in confirm
    confirm = text(admin.post("/revocation", {"kind": "client", "value": "mcp-helpdesk"}))
    assert "affects <strong>2</strong> live capabilities" in confirm
    assert service(live_sqlite).list_changes(newest_first=True, limit=1)[0]["action"] != "revoke.client"
    done = admin.post("/revocation", {"kind": "jti", "value": jti, "confirm": "on"})
    assert done.status_code == 200 and "Revoked" in text(done)
    change = service(live_sqlite).list_changes(newest_first=True, limit=1)[0]
    assert change["action"] == "revoke.jti" and change["actor"].endswith("via console")
    introspected = live_sqlite.post_form("/introspect", [("token", token)],
                                         auth=("mcp-helpdesk", live_sqlite.secrets["mcp-helpdesk"]))
    assert introspected.json()["active"] is False
    bad = admin.post("/revocation", {"kind": "sub", "value": "alice", "confirm": "on"})
    assert bad.status_code == 400 and "NAMESPACE:SUB" in text(bad)
    assert admin.post("/revocation", {"kind": "everything", "value": "x"}).status_code == 400


def test_tool_and_provider_edits_and_status(admin: Console, live_sqlite: LiveIssuer) -> None:
    assert admin.post("/tools/tickets/enabled", {"enabled": "false"}).status_code == 303
    assert live_sqlite.exchange().json()["error"] == "invalid_target"
    assert "disabled" in text(admin.get("/tools"))
    admin.post("/tools/tickets/enabled", {"enabled": "true"})
    bad = admin.post("/tools/tickets", {"rate_limit": "lots"})
    assert bad.status_code == 400 and "rate-limit" in text(bad)
    assert admin.post("/tools/tickets", {"add_scopes": "tickets:close = close"}).status_code == 303
    closing = [s for s in service(live_sqlite).get_tool("tickets")["scopes"] if s["name"] == "tickets:close"]
    assert closing == [{"name": "tickets:close", "description": "", "actions": ["close"]}]
    twice = admin.post("/tools/tickets", {"add_scopes": "tickets:read"})
    assert twice.status_code == 400 and "already defined" in text(twice) and "tickets:read</textarea>" in text(twice)
    assert admin.post("/idps/idp-a/enabled", {"enabled": "false"}).status_code == 303
    assert live_sqlite.exchange().json()["error"] == "invalid_grant"
    assert admin.get("/tools/nope").status_code == 404 and admin.get("/idps/nope").status_code == 404
    assert admin.post("/tools/nope/enabled", {"enabled": "false"}).status_code == 404


def test_the_same_messages_as_the_cli(admin: Console) -> None:
    """Adding a provider with a symmetric algorithm: the console shows the registry's own words."""
    resp = admin.post("/idps", {"name": "x", "issuer": "https://x.example", "jwks_uri": "https://x.example/jwks",
                                "algorithms": "HS256"})
    assert resp.status_code == 400
    assert "algorithms: [&#39;HS256&#39;] not allowed; asymmetric only" in text(resp)
    assert 'value="x"' in text(resp)  # what was typed stays
    dup = admin.post("/tools", {"name": "tickets", "resource_uri": "https://t2.example", "scopes": "a"})
    assert "tool &#39;tickets&#39;: name or resource URI already registered" in text(dup)


def test_clients_dpop_and_disable(admin: Console, live_sqlite: LiveIssuer) -> None:
    assert admin.post("/clients/mcp-other/dpop", {"dpop_required": "true"}).status_code == 303
    assert service(live_sqlite).get_client("mcp-other")["dpop_required"] is True
    assert admin.post("/clients/mcp-other/enabled", {"enabled": "false"}).status_code == 303
    assert service(live_sqlite).get_client("mcp-other")["enabled"] is False
    bad = admin.post("/clients", {"client_id": "c", "resource_uri": "https://c.example", "max_lifetime": "5",
                                  "tools": ["files", "tickets"], "auth_methods": ["client_secret_post"],
                                  "dpop_required": "on"})
    assert bad.status_code == 400 and "max-lifetime: between 10 and 900 seconds" in text(bad)
    form = text(bad)  # what was chosen is chosen again
    assert 'value="tickets" checked' in form and 'value="files" checked' in form
    assert 'value="client_secret_post" checked' in form and 'value="client_secret_basic" checked' not in form
    assert 'name="dpop_required" checked' in form
    assert admin.get("/clients/nope").status_code == 404


def test_the_overview_counts_decisions(admin: Console, live_sqlite: LiveIssuer) -> None:
    live_sqlite.exchange()
    live_sqlite.exchange(scope="tickets:write")
    page = text(admin.get("/"))
    assert "1 granted, 1 denied" in page and "verified" in page and "Verify them now" not in page
    assert page.count('class="bar-granted"') == 1 and page.count('class="bar-denied"') == 1


def test_an_admin_key_is_shown_once_and_can_be_revoked(admin: Console, live_sqlite: LiveIssuer) -> None:
    created = admin.post("/admin-keys", {"name": "night-shift", "role": "auditor"})
    key = re.search(r'readonly value="(iak_[^"]+)"', text(created))
    assert created.status_code == 200 and key
    listing = text(admin.get("/admin-keys"))
    assert "night-shift" in listing and key.group(1) not in listing and key.group(1).split("_", 2)[2] not in listing
    key_id = key.group(1).split("_")[1]
    assert admin.post(f"/admin-keys/{key_id}/revoke").status_code == 303
    assert service(live_sqlite).list_changes(newest_first=True, limit=1)[0]["action"] == "admin_key.revoke"
    bad = admin.post("/admin-keys", {"name": "x", "role": "root"})
    assert bad.status_code == 400 and "role: choose from" in text(bad)
    assert admin.post("/admin-keys/0000000000000000/revoke").status_code == 404


def test_older_records_are_a_link_away(admin: Console, live_sqlite: LiveIssuer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import issuer.console.views.audit as audit_view

    monkeypatch.setattr(audit_view, "PAGE", 2)
    for _ in range(3):
        live_sqlite.exchange(scope="tickets:write")
    page = text(admin.get("/audit?decision=denied"))
    assert len(re.findall(r'href="/console/audit/[0-9]+"', page)) == 2
    older = re.search(r'href="(/console/audit\?[^"]+)" rel="next"', page)
    assert older and "decision=denied" in older.group(1)
    rest = text(admin.get(older.group(1).replace("&amp;", "&").removeprefix("/console")))
    assert re.findall(r'href="/console/audit/([0-9]+)"', rest) == ["1"]


def test_the_console_without_its_slash(live_sqlite: LiveIssuer) -> None:
    resp = live_sqlite.app.test_client().get("/console")
    assert resp.status_code in (301, 308) and resp.headers["Location"].endswith("/console/")
