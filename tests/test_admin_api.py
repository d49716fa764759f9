"""The admin REST API end to end: a real server, real admin keys, every operation the CLI has.

Each authentication or role check has the attack it stops next to it; every
write is checked for its admin change record (who, what, before, after).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click import Group
from sqlalchemy import update

from issuer.admin.api import PREFIX, ROUTES
from issuer.admin.service import AdminService
from issuer.cli import cli
from issuer.models import AdminChange
from tests.conftest import LiveIssuer


def service(live: LiveIssuer, actor: str = "cli:tests") -> AdminService:
    return AdminService(live.db, live.keys, live.settings, actor=actor)


class Admin:
    def __init__(self, live: LiveIssuer, key: str) -> None:
        self.live, self.key = live, key

    def __call__(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        if body is not None:
            kw["content"] = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        return self.live.http.request(method, PREFIX + path, headers=headers, **kw)


@pytest.fixture
def admin(live_sqlite: LiveIssuer) -> Admin:
    _, key = service(live_sqlite).create_admin_key(name="ops", role="admin")
    return Admin(live_sqlite, key)


@pytest.fixture
def auditor(live_sqlite: LiveIssuer) -> Admin:
    _, key = service(live_sqlite).create_admin_key(name="audit-team", role="auditor")
    return Admin(live_sqlite, key)


def error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"] == code, body
    return str(body.get("error_description", ""))


def last_change(live: LiveIssuer) -> dict[str, Any]:
    changes: list[dict[str, Any]] = service(live).list_changes(newest_first=True, limit=1)
    return changes[0]


# ----------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("header", [
    None,  # no credential at all
    "Bearer",  # no key
    "Basic YWRtaW46YWRtaW4=",  # another scheme
    "Bearer iak_0000000000000000_" + "A" * 43,  # a well-formed key that was never issued
    "Bearer not-a-key",
])
def test_requests_without_a_valid_admin_key_get_401(live_sqlite: LiveIssuer, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    resp = live_sqlite.http.get(PREFIX + "/tools", headers=headers)
    error(resp, 401, "invalid_token")
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="admin"')


def test_a_guessed_secret_for_a_real_key_id_is_refused(admin: Admin) -> None:
    """Knowing a key id (it is in the change log) gives nothing without the secret."""
    key_id = admin.key.split("_")[1]
    forged = Admin(admin.live, f"iak_{key_id}_" + "B" * 43)
    error(forged("GET", "/tools"), 401, "invalid_token")


def test_a_key_in_the_url_is_refused_even_when_valid(admin: Admin) -> None:
    """Keys in URLs end up in proxy and server logs."""
    resp = admin.live.http.get(PREFIX + "/tools", params={"access_token": admin.key})
    assert resp.status_code in (400, 401)
    resp = admin("GET", "/tools", params={"access_token": admin.key})
    error(resp, 400, "invalid_request")


def test_a_revoked_admin_key_stops_working_at_once(admin: Admin) -> None:
    created = admin("POST", "/admin-keys", {"name": "temp", "role": "admin"})
    assert created.status_code == 201, created.text
    temp = Admin(admin.live, created.json()["key"])
    assert temp("GET", "/tools").status_code == 200
    key_id = created.json()["admin_key"]["key_id"]
    revoked = admin("DELETE", f"/admin-keys/{key_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    error(temp("GET", "/tools"), 401, "invalid_token")
    assert last_change(admin.live)["action"] == "admin_key.revoke"


def test_admin_keys_are_stored_hashed(admin: Admin) -> None:
    from issuer.models import AdminKey

    with admin.live.db.session() as s:
        stored = [row.secret_hash for row in s.query(AdminKey)]
    secret = admin.key.split("_", 2)[2]
    assert stored and all(secret not in h for h in stored)
    listed = admin("GET", "/admin-keys").json()["admin_keys"]
    assert all("key" not in k and "secret_hash" not in k for k in listed)


# ----------------------------------------------------------------------------- roles


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/tools", {"name": "hr", "resource_uri": "https://hr.example", "scopes": [{"name": "hr:read"}]}),
    ("POST", "/policy", {"document": "rules: []"}),
    ("POST", "/keys/rotate", {"force": True}),
    ("POST", "/clients/mcp-helpdesk/secret", None),
    ("PATCH", "/clients/mcp-helpdesk", {"enabled": False}),
    ("POST", "/revocations/subject", {"sub": "idp-a:alice"}),
    ("POST", "/admin-keys", {"name": "escalated", "role": "admin"}),
])
def test_an_auditor_reads_but_cannot_change_anything(auditor: Admin, method: str, path: str, body: Any) -> None:
    """A read-only credential that leaks cannot be used to grant access, mint an admin key or rotate keys."""
    before = service(auditor.live).list_changes(limit=1000)
    error(auditor(method, path, body), 403, "insufficient_scope")
    assert service(auditor.live).list_changes(limit=1000) == before


def test_an_auditor_can_read_configuration_audit_and_test_policy(auditor: Admin) -> None:
    for path in ("/idps", "/tools", "/clients", "/policy", "/policy/versions", "/keys", "/audit", "/audit/verify",
                 "/changes", "/admin-keys", "/tools/tickets", "/clients/mcp-helpdesk"):
        assert auditor("GET", path).status_code == 200, path
    resp = auditor("POST", "/policy/test", {"sub": "alice", "groups": ["support"], "client_id": "mcp-helpdesk",
                                            "tool": "tickets", "scopes": ["tickets:read"]})
    assert resp.status_code == 200 and resp.json()["decision"] == "granted"


# ----------------------------------------------------------------------------- registry


def test_identity_providers(admin: Admin) -> None:
    idp = admin.live.idp
    listed = admin("GET", "/idps").json()["idps"]
    assert [i["name"] for i in listed] == [idp.name]
    body = {"name": "second", "issuer": "https://login.second.example", "jwks": idp.jwks(), "algorithms": ["ES256"]}
    created = admin("POST", "/idps", body)
    assert created.status_code == 201, created.text
    assert created.json()["namespace"] == "second" and created.json()["jwks_uri"] is None
    assert admin("GET", "/idps/second").json() == created.json()
    error(admin("POST", "/idps", body), 409, "conflict")
    error(admin("GET", "/idps/nope"), 404, "not_found")
    # HMAC algorithms would let anyone with the (public) key forge user tokens.
    desc = error(admin("POST", "/idps", {**body, "name": "third", "issuer": "https://3.example",
                                         "algorithms": ["HS256"]}), 400, "invalid_request")
    assert "HS256" in desc
    change = last_change(admin.live)
    assert change["action"] == "idp.add" and change["target"] == "second" and change["before"] is None
    assert change["after"]["issuer"] == "https://login.second.example"
    assert change["actor"].startswith("admin-key:") and change["actor"].endswith("(ops)")


def test_tools(admin: Admin) -> None:
    body = {"name": "hr", "resource_uri": "https://hr.example", "description": "HR tickets",
            "scopes": [{"name": "hr:read", "actions": ["list", "read"]}], "rate_limit": "10/minute"}
    created = admin("POST", "/tools", body)
    assert created.status_code == 201, created.text
    assert created.json()["scopes"] == [{"name": "hr:read", "description": "", "actions": ["list", "read"]}]
    assert admin("GET", "/tools/hr").json() == created.json()
    error(admin("POST", "/tools", body), 409, "conflict")
    # Same validation as the CLI: a fragment in a resource URI, an unknown field, a wrong type.
    assert "resource" in error(admin("POST", "/tools", {**body, "name": "x", "resource_uri": "https://x.example#f"}),
                               400, "invalid_request")
    assert "colour" in error(admin("POST", "/tools", {**body, "name": "y", "colour": "red"}), 400, "invalid_request")
    assert "scopes" in error(admin("POST", "/tools", {**body, "name": "z", "scopes": "hr:read"}), 400,
                             "invalid_request")
    assert last_change(admin.live)["target"] == "hr"


def test_clients_secrets_rotation_and_disable(admin: Admin) -> None:
    live = admin.live
    created = admin("POST", "/clients", {"client_id": "mcp-new", "resource_uri": "https://mcp.new.example",
                                         "tools": ["tickets"]})
    assert created.status_code == 201, created.text
    secret = created.json()["client_secret"]
    assert secret and created.json()["client"]["tools"] == ["tickets"]
    shown = json.dumps(admin("GET", "/clients/mcp-new").json())
    assert secret not in shown and "secret_hash" not in shown
    assert secret not in json.dumps(last_change(live))

    # Rotation: the new secret works, the old one no longer does.
    old = live.secrets["mcp-helpdesk"]
    rotated = admin("POST", "/clients/mcp-helpdesk/secret")
    assert rotated.status_code == 200
    new = rotated.json()["client_secret"]
    assert new != old
    error(live.exchange(secret=old), 401, "invalid_client")
    assert live.exchange(secret=new).status_code == 200
    change = last_change(live)
    assert change["action"] == "client.rotate_secret" and new not in json.dumps(change)

    # A compromised MCP server is cut off by one call, and let back in by another.
    disabled = admin("PATCH", "/clients/mcp-helpdesk", {"enabled": False})
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    error(live.exchange(secret=new), 401, "invalid_client")
    assert last_change(live)["before"] == {"enabled": True}
    admin("PATCH", "/clients/mcp-helpdesk", {"enabled": True})
    assert live.exchange(secret=new).status_code == 200

    error(admin("POST", "/clients/nope/secret"), 404, "not_found")
    desc = error(admin("POST", "/clients", {"client_id": "c2", "resource_uri": "https://c2.example",
                                            "tools": ["nope"]}), 400, "invalid_request")
    assert "nope" in desc


# ----------------------------------------------------------------------------- policy


GRANT_WRITE = """rules:
  - id: support-tickets-write
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read, tickets:write]
"""


def test_policy_apply_show_versions_diff_and_test(admin: Admin) -> None:
    first = admin("GET", "/policy").json()
    applied = admin("POST", "/policy", {"document": GRANT_WRITE, "source": "change-42"})
    assert applied.status_code == 201, applied.text
    version = applied.json()["version"]
    assert version == first["version"] + 1
    active = admin("GET", "/policy").json()
    assert active["version"] == version and active["document"] == GRANT_WRITE
    assert active["applied_by"].startswith("admin-key:")
    versions = admin("GET", "/policy/versions").json()["versions"]
    assert [v["version"] for v in versions] == [version, first["version"]]
    assert admin("GET", f"/policy/versions/{first['version']}").json()["document"] == first["document"]
    diff = admin("GET", "/policy/diff", params={"from": first["version"], "to": version}).json()["diff"]
    assert "+  - id: support-tickets-write" in diff and "-  - id: support-files" in diff
    decision = admin("POST", "/policy/test", {"sub": "alice", "groups": ["support"], "client_id": "mcp-helpdesk",
                                              "tool": "tickets", "scopes": ["tickets:write"]}).json()
    assert decision["decision"] == "granted" and decision["rule"] == "support-tickets-write"
    change = last_change(admin.live)
    assert change["action"] == "policy.apply"
    assert change["before"] == {"version": first["version"]} and change["after"]["version"] == version

    # A bad document changes nothing and says where it is wrong.
    desc = error(admin("POST", "/policy", {"document": "rules:\n  - id: x\n    tool: nope\n"}), 400, "invalid_request")
    assert desc.startswith("admin-api:2:")
    assert admin("GET", "/policy").json()["version"] == version
    error(admin("GET", "/policy/versions/99"), 404, "not_found")
    error(admin("GET", "/policy/versions/99999999999999999999999"), 404, "not_found")  # beyond the column
    error(admin("GET", "/policy/diff"), 400, "invalid_request")


# ----------------------------------------------------------------------------- keys


def test_key_rotation_waits_for_caches_unless_forced(admin: Admin) -> None:
    keys = admin("GET", "/keys").json()["keys"]
    assert sorted(k["state"] for k in keys) == ["active", "next"]
    desc = error(admin("POST", "/keys/rotate", {}), 400, "invalid_request")
    assert "force" in desc
    rotated = admin("POST", "/keys/rotate", {"force": True})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["active"] == next(k["kid"] for k in keys if k["state"] == "next")
    jwks = admin.live.http.get("/jwks.json").json()
    assert rotated.json()["active"] in {k["kid"] for k in jwks["keys"]}
    assert last_change(admin.live)["after"]["forced"] is True


# ----------------------------------------------------------------------------- audit and revocation


def test_audit_query_pages_export_and_verify(admin: Admin) -> None:
    live = admin.live
    for _ in range(3):
        assert live.exchange().status_code == 200
    live.exchange(scope="tickets:write")  # refused
    page = admin("GET", "/audit", params={"decision": "granted", "limit": 2}).json()
    assert len(page["events"]) == 2 and page["next_after_id"] == page["events"][-1]["id"]
    rest = admin("GET", "/audit", params={"decision": "granted", "after_id": page["next_after_id"]}).json()
    assert len(rest["events"]) == 1 and rest["next_after_id"] is None
    denied = admin("GET", "/audit", params={"decision": "denied", "tool": "tickets"}).json()["events"]
    assert [e["reason"] for e in denied] == ["scope_not_entitled"]
    export = admin("GET", "/audit/export", params={"client_id": "mcp-helpdesk"})
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in export.text.splitlines()]
    assert len(lines) == 4 and all(x["client_id"] == "mcp-helpdesk" for x in lines)
    verified = admin("GET", "/audit/verify").json()
    assert verified["ok"] is True and verified["rows"] == 4
    error(admin("GET", "/audit", params={"since": "yesterday"}), 400, "invalid_request")
    error(admin("GET", "/audit", params={"limit": "0"}), 400, "invalid_request")
    error(admin("GET", "/audit", params={"decision": "maybe"}), 400, "invalid_request")


def test_revocation_by_jti_subject_and_client(admin: Admin) -> None:
    live = admin.live
    jti = admin("GET", "/audit", params={"decision": "granted"}).json()["events"]
    assert jti == []
    assert live.exchange().status_code == 200
    jti = admin("GET", "/audit", params={"decision": "granted"}).json()["events"][0]["jti"]
    assert admin("GET", "/revocations/count", params={"jti": jti}).json() == {"live": 1}
    assert admin("GET", "/revocations/count", params={"sub": "idp-a:alice"}).json() == {"live": 1}
    assert admin("GET", "/revocations/count", params={"client_id": "mcp-helpdesk"}).json() == {"live": 1}
    assert admin("GET", "/revocations/count", params={"client_id": "mcp-other"}).json() == {"live": 0}
    error(admin("GET", "/revocations/count"), 400, "invalid_request")
    error(admin("GET", "/revocations/count", params={"jti": jti, "sub": "idp-a:alice"}), 400, "invalid_request")
    revoked = admin("POST", "/revocations/jti", {"jti": jti})
    assert revoked.status_code == 200 and revoked.json() == {"jti": jti, "revoked": True, "chained": []}
    assert admin("GET", "/revocations/count", params={"jti": jti}).json() == {"live": 0}
    error(admin("POST", "/revocations/jti", {"jti": "f" * 32}), 404, "not_found")
    assert admin("POST", "/revocations/subject", {"sub": "idp-a:alice"}).status_code == 200
    assert "namespace" in error(admin("POST", "/revocations/subject", {"sub": "nobody:alice"}), 400,
                                "invalid_request")
    assert admin("POST", "/revocations/client", {"client_id": "mcp-other"}).json() == {
        "client_id": "mcp-other", "revoked": True}
    error(admin("POST", "/revocations/client", {"client_id": "nobody"}), 404, "not_found")
    actions = [c["action"] for c in service(live).list_changes(limit=1000)]
    assert actions[-3:] == ["revoke.jti", "revoke.subject", "revoke.client"]


def test_dpop_required_is_set_through_the_api(admin: Admin) -> None:
    body = admin("PATCH", "/clients/mcp-other", {"dpop_required": True}).json()
    assert body["dpop_required"] is True and body["enabled"] is True
    assert admin("GET", "/clients/mcp-other").json()["dpop_required"] is True
    error(admin("PATCH", "/clients/mcp-other", {}), 400, "invalid_request")
    error(admin("PATCH", "/clients/mcp-other", {"dpop_required": "yes"}), 400, "invalid_request")
    change = service(admin.live).list_changes(limit=1000)[-1]
    assert change["action"] == "client.dpop_required" and change["after"] == {"dpop_required": True}


# ----------------------------------------------------------------------------- the change log


def test_the_change_log_is_tamper_evident(admin: Admin) -> None:
    """Someone with database access rewrites who made a change: `audit verify` says so."""
    admin("POST", "/tools", {"name": "hr", "resource_uri": "https://hr.example", "scopes": [{"name": "hr:read"}]})
    assert admin("GET", "/audit/verify").json()["ok"] is True
    with admin.live.db.session() as s:
        s.execute(update(AdminChange).where(AdminChange.target == "hr").values(actor="cli:someone-else"))
    verified = admin("GET", "/audit/verify").json()
    assert verified["ok"] is False and "admin change" in verified["problem"]


def test_a_change_whose_record_cannot_be_written_is_not_made(live_sqlite: LiveIssuer, tmp_path: Path) -> None:
    """Nothing changes without its record: the record is written in the change's transaction."""
    svc = service(live_sqlite)
    (live_sqlite.settings.keys_dir / "pepper").rename(tmp_path / "pepper.bak")
    try:
        with pytest.raises(Exception, match="pepper"):
            svc.add_tool(name="hr", resource_uri="https://hr.example", scopes=[{"name": "hr:read"}])
    finally:
        (tmp_path / "pepper.bak").rename(live_sqlite.settings.keys_dir / "pepper")
    assert "hr" not in {t["name"] for t in svc.list_tools()}


def test_cli_changes_are_recorded_with_the_os_user(live_sqlite: LiveIssuer) -> None:
    from click.testing import CliRunner

    env = {"ISSUER_DATABASE_URL": live_sqlite.settings.database_url,
           "ISSUER_KEYS_DIR": str(live_sqlite.settings.keys_dir), "USER": "carol", "LOGNAME": "carol"}
    result = CliRunner().invoke(cli, ["tool", "add", "hr", "--resource", "https://hr.example", "--scope", "hr:read"],
                                env=env)
    assert result.exit_code == 0, result.output
    change = last_change(live_sqlite)
    assert change["actor"] == "cli:carol" and change["action"] == "tool.add"
    result = CliRunner().invoke(cli, ["audit", "changes", "--json"], env=env)
    assert json.loads(result.output.splitlines()[-1])["target"] == "hr"


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("content", "ctype"), [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b'{"name": "x"}', "text/plain"),
    (b"\xff\xfe", "application/json"),
])
def test_malformed_bodies_get_400(admin: Admin, content: bytes, ctype: str) -> None:
    resp = admin.live.http.post(PREFIX + "/tools", content=content,
                                headers={"Authorization": f"Bearer {admin.key}", "Content-Type": ctype})
    error(resp, 400, "invalid_request")


def test_strict_types_no_coercion(admin: Admin) -> None:
    """"false" is not false: a string where a boolean belongs must not disable or enable anything."""
    error(admin("PATCH", "/clients/mcp-helpdesk", {"enabled": "false"}), 400, "invalid_request")
    assert admin("GET", "/clients/mcp-helpdesk").json()["enabled"] is True


def test_oversized_bodies_get_413(admin: Admin) -> None:
    error(admin("POST", "/policy", {"document": "#" * (1024 * 1024 + 10)}), 413, "invalid_request")


# A NUL is not an odd name but a bad character: 400 (tests/admin/test_api_hostile.py).
@pytest.mark.parametrize("name", ["..%2F..%2Fetc", "a" * 500, "é", "*"])
def test_odd_names_are_404_never_500(admin: Admin, name: str) -> None:
    for path in (f"/tools/{name}", f"/idps/{name}", f"/clients/{name}"):
        assert admin("GET", path).status_code == 404, path


# ----------------------------------------------------------------------------- parity with the CLI


#: CLI verbs that are about the local machine, not the issuer's state.
LOCAL_ONLY = {"init", "serve", "demo", "gateway", "audit seal", "audit tail"}
CLI_TO_API = {
    "idp add": ("POST", "/idps"), "idp list": ("GET", "/idps"),
    "tool add": ("POST", "/tools"), "tool list": ("GET", "/tools"),
    "tool update": ("PATCH", "/tools/{name}"), "tool disable": ("PATCH", "/tools/{name}"),
    "tool enable": ("PATCH", "/tools/{name}"),
    "idp update": ("PATCH", "/idps/{name}"), "idp disable": ("PATCH", "/idps/{name}"),
    "idp enable": ("PATCH", "/idps/{name}"), "status": ("GET", "/overview"),
    "client add": ("POST", "/clients"), "client list": ("GET", "/clients"),
    "client rotate-secret": ("POST", "/clients/{client_id}/secret"),
    "client disable": ("PATCH", "/clients/{client_id}"), "client enable": ("PATCH", "/clients/{client_id}"),
    "client dpop": ("PATCH", "/clients/{client_id}"), "revoke client": ("POST", "/revocations/client"),
    "policy apply": ("POST", "/policy"), "policy show": ("GET", "/policy/versions/{version}"),
    "policy versions": ("GET", "/policy/versions"), "policy diff": ("GET", "/policy/diff"),
    "policy test": ("POST", "/policy/test"),
    "keys list": ("GET", "/keys"), "keys rotate": ("POST", "/keys/rotate"),
    "audit verify": ("GET", "/audit/verify"), "audit export": ("GET", "/audit/export"),
    "audit changes": ("GET", "/changes"),
    "revoke jti": ("POST", "/revocations/jti"), "revoke subject": ("POST", "/revocations/subject"),
    "admin-key create": ("POST", "/admin-keys"), "admin-key list": ("GET", "/admin-keys"),
    "admin-key revoke": ("DELETE", "/admin-keys/{key_id}"),
}


def _leaves(group: Group, prefix: str = "") -> Iterator[str]:
    for name, cmd in group.commands.items():
        if isinstance(cmd, Group) and not getattr(cmd, "invoke_without_command", False):
            yield from _leaves(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}"


def test_every_cli_verb_has_an_admin_route() -> None:
    routes = {(r.method, r.path) for r in ROUTES}
    leaves = set(_leaves(cli))
    unmapped = leaves - set(CLI_TO_API) - LOCAL_ONLY
    assert not unmapped, f"CLI verbs without an admin route: {sorted(unmapped)}"
    assert {v for k, v in CLI_TO_API.items() if k in leaves} <= routes
