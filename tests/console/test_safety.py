"""The console's controls, each next to the attack it stops (Flask test client, no browser).

Session cookie flags, CSRF on every form, a strict Content-Security-Policy,
the idle timeout, role checks, and no secret on any page but the one that
creates it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from freezegun import freeze_time

from issuer.admin.service import AdminService
from issuer.app import create_app
from issuer.console.headers import CSP
from issuer.console.session import COOKIE, MAX_AGE
from tests.conftest import LiveIssuer, initialise, make_settings
from tests.console.conftest import Console

PAGES = ["/", "/tools", "/tools/tickets", "/clients", "/clients/mcp-helpdesk", "/idps", "/idps/idp-a", "/policy",
         "/policy/versions/1", "/audit", "/audit/verify", "/revocation", "/admin-keys"]
NEW_TOOL = {"name": "hr", "resource_uri": "https://hr.example", "scopes": "hr:read"}


def tool_names(live: LiveIssuer) -> set[str]:
    service = AdminService(live.db, live.keys, live.settings, actor="cli:tests")
    return {t["name"] for t in service.list_tools()}


def set_cookie(resp: object) -> str:
    headers = resp.headers.getlist("Set-Cookie")  # type: ignore[attr-defined]
    cookie = [h for h in headers if h.startswith(COOKIE + "=")]
    assert cookie, headers
    return str(cookie[-1])


# ----------------------------------------------------------------------------- sign-in and the cookie


def test_sign_in_sets_a_strict_httponly_cookie_scoped_to_the_console(live_sqlite: LiveIssuer, admin_key: str) -> None:
    """Script cannot read the session (HttpOnly), other sites cannot send it (SameSite=Strict), and the rest of
    the issuer never sees it (Path=/console)."""
    console = Console(live_sqlite.app.test_client(), admin_key)
    console.get("/sign-in")
    cookie = set_cookie(console.post("/sign-in", {"admin_key": admin_key}))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # http://127.0.0.1: a Secure cookie would never come back
    assert admin_key.split("_", 2)[2] not in cookie  # the session names the key, not its secret (which may hold "_")


def test_behind_https_the_cookie_is_secure(tmp_path: Path) -> None:
    """Over https the cookie never travels in clear text, even if a page is once loaded over http."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/https.db", url="https://issuer.example")
    keys = initialise(settings)
    app = create_app(settings)
    try:
        from issuer.db import Database

        db = Database(settings.database_url, pool_size=1)
        _, key = AdminService(db, keys, settings, actor="cli:tests").create_admin_key(name="ops", role="admin")
        client = app.test_client()
        console = Console(client, key)
        console.client.environ_base["wsgi.url_scheme"] = "https"
        console.get("/sign-in")
        assert "Secure" in set_cookie(console.post("/sign-in", {"admin_key": key}))
        db.dispose()
    finally:
        app.extensions["issuer"].db.dispose()


@pytest.mark.parametrize("presented", ["iak_0000000000000000_" + "A" * 43, "not-a-key", ""])
def test_a_wrong_key_is_refused_with_one_message(live_sqlite: LiveIssuer, presented: str) -> None:
    console = Console(live_sqlite.app.test_client(), presented)
    console.get("/sign-in")
    resp = console.post("/sign-in", {"admin_key": presented})
    assert resp.status_code == 401
    page = resp.get_data(as_text=True)
    assert "That admin key is not valid." in page
    if presented:
        assert presented not in page  # what was typed is never written back
    assert console.client.get("/console/").status_code == 302


def test_every_page_needs_a_session(live_sqlite: LiveIssuer) -> None:
    client = live_sqlite.app.test_client()
    for path in PAGES:
        resp = client.get("/console" + path)
        assert resp.status_code == 302 and "/console/sign-in" in resp.headers["Location"], path


def test_sign_out_ends_the_session(admin: Console) -> None:
    assert admin.post("/sign-out").status_code == 303
    assert admin.get("/").status_code == 302


def test_a_revoked_admin_key_ends_its_sessions_at_the_next_click(live_sqlite: LiveIssuer, admin: Console) -> None:
    """A leaked key is revoked once, and every console session signed in with it stops."""
    key_id = admin.key.split("_")[1]
    AdminService(live_sqlite.db, live_sqlite.keys, live_sqlite.settings, actor="cli:tests").revoke_admin_key(key_id)
    resp = admin.get("/")
    assert resp.status_code == 302 and "ended=1" in resp.headers["Location"]


def test_a_forged_session_cookie_is_refused(live_sqlite: LiveIssuer, admin_key: str) -> None:
    """Key ids are not secret (the change log shows them): only the cookie's signature, under a key derived
    from the pepper, makes a session. A cookie signed with any other key is an empty session."""
    from flask.sessions import SecureCookieSessionInterface
    from itsdangerous import URLSafeTimedSerializer

    interface = SecureCookieSessionInterface()
    now = int(time.time())
    forged = URLSafeTimedSerializer("guessed", salt=interface.salt, serializer=interface.serializer,
                                    signer_kwargs={"key_derivation": "hmac", "digest_method": interface.digest_method}
                                    ).dumps({"k": admin_key.split("_")[1], "c": "x", "t": now, "s": now})
    client = live_sqlite.app.test_client()
    client.set_cookie(COOKIE, forged, path="/console")
    assert client.get("/console/").status_code == 302
    client.set_cookie(COOKIE, forged.split(".")[0], path="/console")  # the payload alone
    assert client.get("/console/").status_code == 302


# ----------------------------------------------------------------------------- idle timeout


def test_an_idle_session_is_signed_out(live_sqlite: LiveIssuer, admin_key: str) -> None:
    """A console left open on an unlocked laptop stops working after the idle timeout."""
    idle = live_sqlite.settings.console_idle_timeout
    with freeze_time("2026-11-25 10:00:00") as frozen:
        console = Console(live_sqlite.app.test_client(), admin_key)
        console.sign_in()
        frozen.tick(idle - 10)
        assert console.get("/").status_code == 200  # activity keeps it alive
        frozen.tick(idle - 10)
        assert console.get("/tools").status_code == 200
        frozen.tick(idle + 1)
        resp = console.get("/")
        assert resp.status_code == 302 and "ended=1" in resp.headers["Location"]
        assert "Your session has ended" in console.client.get(resp.headers["Location"]).get_data(as_text=True)


def test_a_session_ends_after_its_maximum_age_however_active(live_sqlite: LiveIssuer, admin_key: str) -> None:
    idle = live_sqlite.settings.console_idle_timeout
    with freeze_time("2026-11-25 10:00:00") as frozen:
        console = Console(live_sqlite.app.test_client(), admin_key)
        console.sign_in()
        for _ in range(MAX_AGE // (idle - 60)):
            frozen.tick(idle - 60)
            console.get("/tools")
        frozen.tick(idle - 60)
        assert console.get("/").status_code == 302


def test_a_replica_whose_clock_is_a_little_behind_keeps_the_session(live_sqlite: LiveIssuer, admin_key: str) -> None:
    """Replicas share the cookie; a few seconds between their clocks must not sign anyone out."""
    with freeze_time("2026-11-25 10:00:00") as frozen:
        console = Console(live_sqlite.app.test_client(), admin_key)
        console.sign_in()
        frozen.move_to("2026-11-25 09:59:30")
        assert console.get("/").status_code == 200
        frozen.move_to("2026-11-25 09:57:00")
        assert console.get("/").status_code == 302


# ----------------------------------------------------------------------------- CSRF


def test_a_form_posted_without_its_csrf_token_is_refused(admin: Console, live_sqlite: LiveIssuer) -> None:
    """A page elsewhere that posts to the console (with the admin's cookie, were SameSite to fail) changes nothing."""
    resp = admin.post("/tools", NEW_TOOL, csrf=False)
    assert resp.status_code == 403
    assert "security token" in resp.get_data(as_text=True)
    assert "hr" not in tool_names(live_sqlite)


def test_a_csrf_token_from_another_session_is_refused(admin: Console, live_sqlite: LiveIssuer,
                                                      admin_key: str) -> None:
    attacker = Console(live_sqlite.app.test_client(), admin_key)
    attacker.get("/sign-in")  # the attacker's own, valid token
    resp = admin.post("/tools", {**NEW_TOOL, "csrf_token": attacker.csrf})
    assert resp.status_code == 403
    assert "hr" not in tool_names(live_sqlite)


def test_sign_in_itself_needs_the_csrf_token(live_sqlite: LiveIssuer, admin_key: str) -> None:
    """Login CSRF: another site cannot sign the browser in to a session of its choosing."""
    console = Console(live_sqlite.app.test_client(), admin_key)
    assert console.post("/sign-in", {"admin_key": admin_key}, csrf=False).status_code == 403
    assert console.get("/").status_code == 302


def test_every_form_carries_the_csrf_token(admin: Console) -> None:
    for path in PAGES:
        page = admin.get(path).get_data(as_text=True)
        for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", page, re.S):
            assert f'name="csrf_token" value="{admin.csrf}"' in form, (path, form[:200])


# ----------------------------------------------------------------------------- content security policy


def test_every_page_has_a_strict_csp_and_no_inline_script(admin: Console) -> None:
    """Markup injected through a tool description or an audit field can neither run nor load anything."""
    assert "script-src 'none'" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
    for path in [*PAGES, "/sign-in"]:
        resp = admin.get(path)
        assert resp.headers["Content-Security-Policy"] == CSP, path
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Cache-Control"] == "no-store"
        page = resp.get_data(as_text=True)
        assert "<script" not in page and " style=" not in page and not re.search(r"\son[a-z]+=", page), path


def test_markup_in_data_is_escaped(admin: Console, live_sqlite: LiveIssuer) -> None:
    resp = admin.post("/tools", {**NEW_TOOL, "description": "<img src=x onerror=alert(1)>"})
    assert resp.status_code == 303
    page = admin.get("/tools/hr").get_data(as_text=True)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_refusals_are_html_pages_with_the_same_headers(admin: Console) -> None:
    resp = admin.post("/tools", NEW_TOOL, csrf=False)
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.headers["Content-Security-Policy"] == CSP


# ----------------------------------------------------------------------------- roles


def test_an_auditor_sees_every_page_but_no_form_that_changes_anything(auditor: Console) -> None:
    read_only = ("/console/sign-out", "/console/policy/test")
    for path in PAGES:
        resp = auditor.get(path)
        assert resp.status_code == 200, path
        actions = re.findall(r"<form[^>]*method=\"post\"[^>]*action=\"([^\"]+)\"", resp.get_data(as_text=True))
        assert all(a.split("#")[0] in read_only for a in actions), (path, actions)


@pytest.mark.parametrize(("path", "data"), [
    ("/tools", NEW_TOOL),
    ("/tools/tickets", {"description": "changed"}),
    ("/tools/tickets/enabled", {"enabled": "false"}),
    ("/clients", {"client_id": "evil", "resource_uri": "https://evil.example"}),
    ("/clients/mcp-helpdesk/secret", {}),
    ("/clients/mcp-helpdesk/enabled", {"enabled": "false"}),
    ("/idps/idp-a/enabled", {"enabled": "false"}),
    ("/policy", {"document": "rules: []"}),
    ("/revocation", {"kind": "sub", "value": "idp-a:alice", "confirm": "on"}),
    ("/admin-keys", {"name": "escalated", "role": "admin"}),
])
def test_a_forged_post_by_an_auditor_is_refused(auditor: Console, live_sqlite: LiveIssuer, path: str,
                                                data: dict[str, str]) -> None:
    """The buttons are hidden, but hiding is not the control: a hand-made POST with a valid token gets 403."""
    service = AdminService(live_sqlite.db, live_sqlite.keys, live_sqlite.settings, actor="cli:tests")
    before = service.list_changes(limit=1000)
    resp = auditor.post(path, data)
    assert resp.status_code == 403, path
    assert "may look but not change" in resp.get_data(as_text=True)
    assert service.list_changes(limit=1000) == before


def test_an_auditor_may_test_a_decision(auditor: Console) -> None:
    resp = auditor.post("/policy/test", {"sub": "alice", "idp": "idp-a", "groups": "support",
                                         "client_id": "mcp-helpdesk", "tool": "tickets"})
    assert resp.status_code == 200 and "GRANTED" in resp.get_data(as_text=True)


# ----------------------------------------------------------------------------- secrets and the change log


def test_a_new_client_secret_is_shown_once_and_never_again(admin: Console, live_sqlite: LiveIssuer) -> None:
    resp = admin.post("/clients", {"client_id": "mcp-new", "resource_uri": "https://mcp.new.example",
                                   "tools": "tickets", "auth_methods": "client_secret_basic"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    secret = re.search(r'id="secret" class="secret" readonly value="([^"]+)"', resp.get_data(as_text=True))
    assert secret and len(secret.group(1)) >= 40
    assert live_sqlite.exchange("mcp-new", secret=secret.group(1)).status_code in (200, 400)  # authenticates
    for path in [*PAGES, "/clients/mcp-new", "/audit/export"]:
        assert secret.group(1) not in admin.get(path).get_data(as_text=True), path


def test_a_rotated_secret_is_shown_once(admin: Console) -> None:
    resp = admin.post("/clients/mcp-helpdesk/secret")
    secret = re.search(r'readonly value="([^"]+)"', resp.get_data(as_text=True))
    assert resp.status_code == 200 and secret
    assert secret.group(1) not in admin.get("/clients/mcp-helpdesk").get_data(as_text=True)


def test_no_page_renders_a_key_or_a_token(admin: Console, live_sqlite: LiveIssuer) -> None:
    """The audit trail shows jtis, never capabilities; no page shows the admin key or a private key."""
    token = live_sqlite.exchange().json()["access_token"]
    pem = next(live_sqlite.settings.keys_dir.glob("*.pem")).read_text()
    body = pem.split("-----")[2].strip().splitlines()[0]
    pepper = live_sqlite.pepper.hex()
    for path in [*PAGES, "/audit/export", "/audit/1"]:
        page = admin.get(path).get_data(as_text=True)
        for secret in (token, token.split(".")[2], admin.key, admin.key.split("_", 2)[2], body, pepper):
            assert secret not in page, path


def test_changes_are_recorded_with_the_admin_and_before_after(admin: Console, live_sqlite: LiveIssuer) -> None:
    assert admin.post("/tools/tickets", {"description": "The ticket system", "rate_limit": "30/minute"}
                      ).status_code == 303
    service = AdminService(live_sqlite.db, live_sqlite.keys, live_sqlite.settings, actor="cli:tests")
    change = service.list_changes(newest_first=True, limit=1)[0]
    key_id = admin.key.split("_")[1]
    assert change["action"] == "tool.update" and change["target"] == "tickets"
    assert change["actor"] == f"admin-key:{key_id} (ops) via console"
    assert change["before"]["rate_limit"] is None and change["after"]["rate_limit"] == "30/minute"
