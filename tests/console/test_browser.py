"""The console in a real browser (headless Chromium) against the real issuer on 127.0.0.1.

Each scenario is something an admin or an auditor does after an incident;
together they pass through every page, and each page's screenshot is saved
(docs/console.md shows the committed set).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LiveIssuer
from tests.console.browser import Screenshots
from tests.console.conftest import make_key

pytestmark = pytest.mark.usefixtures("chromium")


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    ctx = chromium.new_context(viewport={"width": 1366, "height": 768})
    try:
        yield ctx
    finally:
        ctx.close()


def sign_in(context: Any, live: LiveIssuer, key: str) -> Any:
    page = context.new_page()
    page.goto(live.url + "/console/")
    assert page.url.endswith("/console/sign-in")
    page.get_by_label("Admin key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live.url + "/console/")
    return page


@pytest.fixture
def admin_page(context: Any, live_sqlite: LiveIssuer) -> Any:
    return sign_in(context, live_sqlite, make_key(live_sqlite, "admin", "ops"))


def csrf(page: Any) -> str:
    value: str = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    return value


# ----------------------------------------------------------------------------- the admin's scenarios


def test_sign_in_shows_the_overview(context: Any, live_sqlite: LiveIssuer, screenshots: Screenshots) -> None:
    page = context.new_page()
    page.goto(live_sqlite.url + "/console/sign-in")
    screenshots.take(page, "sign-in")
    assert live_sqlite.exchange().status_code == 200
    assert live_sqlite.exchange(scope="tickets:write").status_code == 400
    page.get_by_label("Admin key").fill(make_key(live_sqlite, "admin", "ops"))
    page.keyboard.press("Enter")  # the keyboard is enough
    page.wait_for_url(live_sqlite.url + "/console/")
    assert page.get_by_role("heading", name="Overview").is_visible()
    assert "1 granted, 1 denied" in page.inner_text("main")
    assert page.locator("svg rect.bar-granted").count() == 1 and page.locator("svg rect.bar-denied").count() == 1
    assert page.locator(".checks").inner_text().count("ok") >= 2
    screenshots.take(page, "overview")


def test_register_a_tool(admin_page: Any, live_sqlite: LiveIssuer, screenshots: Screenshots) -> None:
    page = admin_page
    page.get_by_role("link", name="Tools").click()
    page.get_by_label("Name").fill("hr")
    page.get_by_label("Resource URI").fill("https://hr.example")
    page.get_by_label("Scopes").fill("hr:read = list, read\nhr:write")
    page.get_by_label("Description").fill("HR records")
    screenshots.take(page, "tools")
    page.get_by_role("button", name="Register tool").click()
    assert "Nobody can reach it until a policy grants it" in page.inner_text("main")
    assert page.get_by_role("heading", name="Tool hr").is_visible()
    screenshots.take(page, "tool")
    page.get_by_role("link", name="All tools").click()
    assert page.get_by_role("link", name="hr", exact=True).is_visible()
    # A mistake gets the CLI's message, and what was typed stays in the form.
    page.get_by_label("Name").fill("hr2")
    page.get_by_label("Resource URI").fill("https://hr2.example#frag")
    page.get_by_label("Scopes").fill("hr:read")
    page.get_by_role("button", name="Register tool").click()
    assert "resource" in page.locator(".error").inner_text()
    assert page.get_by_label("Name").input_value() == "hr2"


def test_apply_a_policy_with_an_error_and_see_its_line(admin_page: Any, screenshots: Screenshots) -> None:
    page = admin_page
    page.get_by_role("link", name="Policy").click()
    broken = "rules:\n  - id: support-tickets-read\n    idp: idp-a\n    groups: [support]\n" \
             "    clients: [mcp-helpdesk]\n    tool: tickets\n    scopes: [tickets:read, tickets:delete]\n"
    page.get_by_label("Policy document (YAML or JSON)").fill(broken)
    page.get_by_role("button", name="Validate and apply").click()
    line = page.locator("#line-7")
    assert "has-error" in (line.get_attribute("class") or "")
    assert "tickets:delete" in line.inner_text()
    assert "console:7:" in page.locator("#apply-error").inner_text()
    assert page.get_by_label("Policy document (YAML or JSON)").input_value() == broken  # not lost
    screenshots.take(page, "policy-error")
    fixed = broken.replace(", tickets:delete", "")
    page.get_by_label("Policy document (YAML or JSON)").fill(fixed)
    page.get_by_role("button", name="Validate and apply").click()
    assert "Policy version 2 is active." in page.inner_text("main")
    screenshots.take(page, "policy")
    page.get_by_role("button", name="Show diff").click()
    assert page.locator(".diff .del").count() >= 1
    screenshots.take(page, "policy-diff")
    page.go_back()
    page.get_by_role("link", name="1", exact=True).click()
    assert page.get_by_role("heading", name="Policy version 1").is_visible()
    screenshots.take(page, "policy-version")


def test_test_a_decision(admin_page: Any, live_sqlite: LiveIssuer, screenshots: Screenshots) -> None:
    live_sqlite.apply("""
rules:
  - id: own-tickets
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
    constraints:
      project: {eq: "${claims.tenant}"}
""")
    page = admin_page
    page.get_by_role("link", name="Policy").click()
    page.get_by_label("User (subject)").fill("alice")
    page.get_by_label("Groups").fill("support")
    page.get_by_label("Claims").fill("tenant=acme")
    page.get_by_label("Client").select_option("mcp-helpdesk")
    page.get_by_label("Tool").select_option("tickets")
    page.get_by_label("Arguments of one call (JSON)").fill('{"project": "acme"}')
    page.get_by_role("button", name="Test").click()
    result = page.locator("#decision")
    assert "GRANTED" in result.inner_text() and "own-tickets" in result.inner_text()
    assert '"eq": "acme"' in page.locator("#constraints").inner_text()
    assert "pass the constraints" in result.inner_text()
    screenshots.take(page, "policy-test")
    page.get_by_label("Groups").fill("sales")
    page.get_by_role("button", name="Test").click()
    assert "DENIED" in page.locator("#decision").inner_text()


def test_find_a_refused_exchange_by_user(admin_page: Any, live_sqlite: LiveIssuer, screenshots: Screenshots) -> None:
    assert live_sqlite.exchange().status_code == 200
    refused = live_sqlite.exchange(scope="tickets:write")
    assert refused.status_code == 400
    page = admin_page
    page.get_by_role("link", name="Audit trail").click()
    page.get_by_label("User (NAMESPACE:SUB)").fill("idp-a:alice")
    page.get_by_label("Decision").select_option("denied")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.audit tbody tr")
    assert rows.count() == 1
    assert "denied" in rows.first.inner_text() and "scope_not_entitled" in rows.first.inner_text()
    screenshots.take(page, "audit")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export what is filtered (JSON lines)").click()
    exported = download.value.path().read_text().splitlines()
    assert len(exported) == 1 and '"decision": "denied"' in exported[0]
    rows.first.get_by_role("link").first.click()
    assert page.get_by_role("heading", name="Audit record").is_visible()
    screenshots.take(page, "audit-record")
    page.get_by_role("link", name="Audit trail").first.click()
    page.get_by_role("link", name="Verify the audit chain").click()
    assert page.locator(".state-ok").inner_text() == "Verified"
    screenshots.take(page, "audit-verify")


def test_revoke_a_user_and_the_capability_introspects_inactive(admin_page: Any, live_sqlite: LiveIssuer,
                                                               screenshots: Screenshots) -> None:
    token = live_sqlite.exchange().json()["access_token"]

    def active() -> bool:
        resp = live_sqlite.post_form("/introspect", [("token", token)],
                                     auth=("mcp-helpdesk", live_sqlite.secrets["mcp-helpdesk"]))
        return bool(resp.json()["active"])

    assert active()
    page = admin_page
    page.get_by_role("link", name="Revocation").click()
    screenshots.take(page, "revocation")
    page.get_by_label("User, as capabilities carry it (NAMESPACE:SUB)").fill("idp-a:alice")
    page.get_by_role("button", name="Revoke…").nth(1).click()
    assert "affects 1 live capability" in page.locator("#confirm-count").inner_text()
    assert active()  # nothing happens before the confirmation
    screenshots.take(page, "revocation-confirm")
    page.get_by_role("button", name="Revoke", exact=True).click()
    assert "Revoked" in page.locator(".notice").inner_text()
    assert not active()


def test_clients_and_identity_providers(admin_page: Any, screenshots: Screenshots) -> None:
    page = admin_page
    page.get_by_role("link", name="Clients").click()
    page.get_by_label("Client id").fill("mcp-new")
    page.get_by_label("Its own resource URI").fill("https://mcp.new.example")
    page.get_by_label("tickets").check()
    screenshots.take(page, "clients")
    page.get_by_role("button", name="Register client").click()
    secret = page.get_by_label("Client secret").input_value()
    assert len(secret) >= 40
    page.get_by_role("link", name="Continue to the client").click()
    assert secret not in page.content()
    page.get_by_role("button", name="Require DPoP").click()
    assert "required" in page.locator(".facts").inner_text()
    screenshots.take(page, "client")
    page.get_by_role("link", name="Identity providers").click()
    screenshots.take(page, "idps")
    page.get_by_role("link", name="idp-a").click()
    page.get_by_label("Algorithms").fill("HS256")
    page.get_by_role("button", name="Save").click()
    assert "HS256" in page.locator(".error").inner_text()  # the CLI's message
    screenshots.take(page, "idp")


def test_admin_keys(admin_page: Any, screenshots: Screenshots) -> None:
    page = admin_page
    page.get_by_role("link", name="Admin keys").click()
    page.get_by_label("Held by").fill("night-shift")
    page.get_by_label("Role").select_option("auditor")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("Admin key").input_value()
    assert key.startswith("iak_")
    page.get_by_role("link", name="Back to admin keys").click()
    assert "night-shift" in page.inner_text("main") and key not in page.content()
    screenshots.take(page, "admin-keys")


# ----------------------------------------------------------------------------- the auditor and forged requests


def test_an_auditor_finds_no_button_and_a_forged_post_is_refused(context: Any, live_sqlite: LiveIssuer,
                                                                 screenshots: Screenshots) -> None:
    page = sign_in(context, live_sqlite, make_key(live_sqlite, "auditor", "audit-team"))
    allowed = {"Sign out", "Test", "Filter", "Show diff"}
    for path in ("/", "/tools", "/tools/tickets", "/clients", "/clients/mcp-helpdesk", "/idps", "/idps/idp-a",
                 "/policy", "/audit", "/revocation", "/admin-keys"):
        page.goto(live_sqlite.url + "/console" + path)
        buttons = {b.inner_text().strip() for b in page.get_by_role("button").all()}
        assert buttons <= allowed, (path, buttons - allowed)
    screenshots.take(page, "auditor-revocation")
    # The auditor's own session and a valid CSRF token: the role still decides.
    forged = page.request.post(live_sqlite.url + "/console/tools", form={
        "csrf_token": csrf(page), "name": "hr", "resource_uri": "https://hr.example", "scopes": "hr:read"})
    assert forged.status == 403 and "may look but not change" in forged.text()
    page.goto(live_sqlite.url + "/console/tools")
    assert page.get_by_role("link", name="hr", exact=True).count() == 0


def test_a_form_posted_without_its_csrf_token_is_refused(admin_page: Any, live_sqlite: LiveIssuer) -> None:
    page = admin_page
    page.get_by_role("link", name="Tools").click()
    page.locator('form[action$="/console/tools"] input[name="csrf_token"]').evaluate("e => e.remove()")
    page.get_by_label("Name").fill("hr")
    page.get_by_label("Resource URI").fill("https://hr.example")
    page.get_by_label("Scopes").fill("hr:read")
    with page.expect_response(lambda r: r.url.endswith("/console/tools") and r.request.method == "POST") as sent:
        page.get_by_role("button", name="Register tool").click()
    assert sent.value.status == 403
    assert page.get_by_role("heading", name="Form expired").is_visible()
    page.goto(live_sqlite.url + "/console/tools")
    assert page.get_by_role("link", name="hr", exact=True).count() == 0
