"""Shared fixtures: a migrated database (SQLite, and PostgreSQL when configured),
signing keys, a fake identity provider over real HTTP, and a live issuer.

PostgreSQL and Redis come from ISSUER_TEST_DATABASE_URL / ISSUER_TEST_REDIS_URL.
Outside CI a test that needs one is skipped with a message saying how to enable
it; with CI=true it fails instead, so a broken service can never pass silently.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from issuer.app import create_app
from issuer.db import Database
from issuer.keys import KeyStore
from issuer.migrate import upgrade
from issuer.registry import ScopeSpec, add_client, add_idp, add_tool, apply_policy
from issuer.settings import Settings
from tests.support.fake_idp import FakeIdP

IN_CI = os.environ.get("CI", "").lower() == "true"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


def need_service(var: str, what: str) -> str:
    url = os.environ.get(var, "")
    if not url:
        if IN_CI:
            pytest.fail(f"CI=true but {var} is not set: {what} tests must run in CI")
        pytest.skip(f"{what} not configured: set {var} to run this test (see .ci/run)")
    return url


@pytest.fixture
def redis_url() -> str:
    return need_service("ISSUER_TEST_REDIS_URL", "Redis")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A plain client, to look at what the code under test left in Redis."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"ISSUER_TEST_REDIS_URL is set but Redis does not answer: {e}")
    yield client
    client.close()


def _pg_schema_url(base: str) -> Iterator[str]:
    """A fresh schema per test, so tests never see each other's rows."""
    schema = f"t_{secrets.token_hex(6)}"
    try:
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as e:
        if IN_CI:
            pytest.fail(f"PostgreSQL at ISSUER_TEST_DATABASE_URL unreachable in CI: {type(e).__name__}: {e}")
        pytest.skip(f"PostgreSQL unreachable ({type(e).__name__}); check ISSUER_TEST_DATABASE_URL")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/issuer.db"
        return
    base = need_service("ISSUER_TEST_DATABASE_URL", "PostgreSQL")
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base.removeprefix("postgresql://")
    yield from _pg_schema_url(base)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/issuer.db"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    port = overrides.pop("port", None) or free_port()
    values: dict[str, Any] = dict(
        url=f"http://127.0.0.1:{port}", port=port, database_url=database_url, keys_dir=tmp_path / "keys",
        allow_insecure_loopback=True, refresh_interval=0.0, jwks_refetch_cooldown=1.0,
    )
    values.update(overrides)
    return Settings(**values)


def initialise(settings: Settings) -> KeyStore:
    upgrade(settings.database_url)
    ks = KeyStore(settings.keys_dir, retention=settings.key_retention, refresh_interval=0)
    ks.ensure(settings.signing_alg)
    return ks


class LiveIssuer:
    """The real app on a real socket (werkzeug, threaded) plus the registry it serves."""

    def __init__(self, settings: Settings, idp: FakeIdP) -> None:
        self.settings = settings
        self.idp = idp
        self.keys = initialise(settings)
        self.db = Database(settings.database_url, pool_size=2)
        self.app = create_app(settings)
        self._server = make_server("127.0.0.1", settings.port, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.url = settings.url
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.secrets: dict[str, str] = {}

    @property
    def pepper(self) -> bytes:
        return self.keys.pepper()

    def close(self) -> None:
        self.http.close()
        self._server.shutdown()
        self._server.server_close()
        self.app.extensions["issuer"].db.dispose()
        self.db.dispose()

    # -- registry -----------------------------------------------------------------
    def standard_setup(self) -> None:
        """The scenario most tests use: idp-a, tools tickets/files, clients helpdesk/other, a policy."""
        add_idp(self.db, name=self.idp.name, issuer=self.idp.issuer, jwks_uri=self.idp.jwks_uri,
                algorithms=("ES256", "RS256"), attribute_claims=("projects", "tenant"),
                allow_insecure_loopback=True)
        add_tool(self.db, name="tickets", resource_uri="https://tickets.example",
                 scopes=[ScopeSpec("tickets:read"), ScopeSpec("tickets:write")])
        add_tool(self.db, name="files", resource_uri="https://files.example", scopes=[ScopeSpec("files:read")])
        self.add_client("mcp-helpdesk", "https://mcp.helpdesk.example", ["tickets", "files"])
        self.add_client("mcp-other", "https://mcp.other.example", ["tickets"])
        self.apply("""
rules:
  - id: support-tickets-read
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk, mcp-other]
    tool: tickets
    scopes: [tickets:read]
  - id: support-files
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: files
    scopes: [files:read]
    max_lifetime: 120
""")

    def add_client(self, client_id: str, resource: str, tools: list[str], **kw: Any) -> str:
        _, secret = add_client(self.db, client_id=client_id, resource_uri=resource, tools=tools,
                               pepper=self.pepper, **kw)
        assert secret is not None or kw.get("auth_methods") == ("private_key_jwt",)
        self.secrets[client_id] = secret or ""
        return secret or ""

    def apply(self, policy: str) -> int:
        return apply_policy(self.db, policy, source="test-policy", created_by="tests")

    # -- requests -----------------------------------------------------------------
    def exchange(self, client_id: str = "mcp-helpdesk", subject_token: str | None = None, *,
                 resource: str | None = "https://tickets.example", scope: str | None = "tickets:read",
                 extra: list[tuple[str, str]] | None = None, auth: str = "basic",
                 secret: str | None = None) -> httpx.Response:
        if subject_token is None:
            subject_token = self.idp.token()
        data: list[tuple[str, str]] = [("grant_type", TOKEN_EXCHANGE), ("subject_token", subject_token),
                                       ("subject_token_type", ACCESS_TOKEN)]
        if resource is not None:
            data.append(("resource", resource))
        if scope is not None:
            data.append(("scope", scope))
        data += extra or []
        secret = self.secrets.get(client_id, "") if secret is None else secret
        kw: dict[str, Any] = {}
        if auth == "basic":
            kw["auth"] = (client_id, secret)
        elif auth == "post":
            data += [("client_id", client_id), ("client_secret", secret)]
        return self.post_form("/token", data, **kw)

    def post_form(self, path: str, pairs: list[tuple[str, str]], **kw: Any) -> httpx.Response:
        """POST form pairs (repeated names allowed, which httpx's `data=` does not take)."""
        headers = {"Content-Type": "application/x-www-form-urlencoded", **kw.pop("headers", {})}
        return self.http.post(path, content=urlencode(pairs), headers=headers, **kw)


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    p = FakeIdP("idp-a")
    yield p
    p.close()


@pytest.fixture
def live(tmp_path: Path, database_url: str, idp: FakeIdP) -> Iterator[LiveIssuer]:
    issuer = LiveIssuer(make_settings(tmp_path, database_url), idp)
    issuer.standard_setup()
    yield issuer
    issuer.close()


@pytest.fixture
def live_sqlite(tmp_path: Path, sqlite_url: str, idp: FakeIdP) -> Iterator[LiveIssuer]:
    """The live issuer on SQLite only: for tests whose subject is not storage."""
    issuer = LiveIssuer(make_settings(tmp_path, sqlite_url), idp)
    issuer.standard_setup()
    yield issuer
    issuer.close()
