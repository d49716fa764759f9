"""Console fixtures: admin and auditor keys on the live issuer, and a Flask test client signed in with one.

The live issuer and its registry are tests/conftest.py's (``live_sqlite``);
keys are made through the service layer, as ``issuer admin-key create`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from issuer.admin.service import AdminService
from tests.conftest import LiveIssuer

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_key(live: LiveIssuer, role: str, name: str) -> str:
    service = AdminService(live.db, live.keys, live.settings, actor="cli:tests")
    _, key = service.create_admin_key(name=name, role=role)
    return key


def csrf_of(resp: TestResponse) -> str:
    match = _CSRF.search(resp.get_data(as_text=True))
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


@dataclass
class Console:
    """A browser stand-in: one cookie jar, the CSRF token of the last page."""

    client: FlaskClient
    key: str
    csrf: str = ""

    def get(self, path: str, **kw: object) -> TestResponse:
        resp = self.client.get("/console" + path, **kw)  # type: ignore[arg-type]
        if resp.status_code == 200 and 'name="csrf_token"' in resp.get_data(as_text=True):
            self.csrf = csrf_of(resp)
        return resp

    def post(self, path: str, data: dict[str, object] | None = None, *, csrf: bool = True) -> TestResponse:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        return self.client.post("/console" + path, data=form)

    def sign_in(self) -> TestResponse:
        self.get("/sign-in")
        resp = self.post("/sign-in", {"admin_key": self.key})
        assert resp.status_code == 303, resp.get_data(as_text=True)
        self.get("/")
        return resp


@pytest.fixture
def admin_key(live_sqlite: LiveIssuer) -> str:
    return make_key(live_sqlite, "admin", "ops")


@pytest.fixture
def auditor_key(live_sqlite: LiveIssuer) -> str:
    return make_key(live_sqlite, "auditor", "audit-team")


@pytest.fixture
def admin(live_sqlite: LiveIssuer, admin_key: str) -> Console:
    console = Console(live_sqlite.app.test_client(), admin_key)
    console.sign_in()
    return console


@pytest.fixture
def auditor(live_sqlite: LiveIssuer, auditor_key: str) -> Console:
    console = Console(live_sqlite.app.test_client(), auditor_key)
    console.sign_in()
    return console


from tests.console.browser import chromium, screenshots  # noqa: E402, F401  (fixtures for test_browser.py)
