"""A live issuer whose PostgreSQL and Redis are reached through fault proxies the tests control."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import LiveIssuer, _pg_schema_url, make_settings, need_service
from tests.support.fake_idp import FakeIdP
from tests.support.tcp_proxy import FaultProxy

#: The deadline the tests give every database call, seconds (libpq's connect timeout is at least 2 s).
DB_TIMEOUT = 2.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema on the real PostgreSQL, reached directly."""
    base = need_service("ISSUER_TEST_DATABASE_URL", "PostgreSQL")
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base.removeprefix("postgresql://")
    yield from _pg_schema_url(base)


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[FaultProxy]:
    u = make_url(pg_url)
    with FaultProxy(u.host or "127.0.0.1", u.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[FaultProxy]:
    from urllib.parse import urlsplit

    u = urlsplit(redis_url)
    with FaultProxy(u.hostname or "127.0.0.1", u.port or 6379) as proxy:
        yield proxy


def proxied_issuer(tmp_path: Path, idp: FakeIdP, database_url: str, redis_url: str = "",
                   **overrides: Any) -> LiveIssuer:
    """A live issuer with the standard registry on these (proxied) URLs and the tests' deadlines."""
    values: dict[str, Any] = {"db_timeout": DB_TIMEOUT, "redis_timeout": 0.5, "redis_url": redis_url}
    values.update(overrides)
    issuer = LiveIssuer(make_settings(tmp_path, database_url, **values), idp)
    issuer.standard_setup()
    return issuer


@pytest.fixture
def live_pg(tmp_path: Path, idp: FakeIdP, pg_url: str, pg_proxy: FaultProxy) -> Iterator[LiveIssuer]:
    """The live issuer on PostgreSQL behind ``pg_proxy``."""
    issuer = proxied_issuer(tmp_path, idp, pg_proxy.url_for(pg_url))
    yield issuer
    pg_proxy.resume()
    issuer.close()


@pytest.fixture
def live_pg_redis(tmp_path: Path, idp: FakeIdP, pg_url: str, pg_proxy: FaultProxy, redis_url: str,
                  redis_proxy: FaultProxy) -> Iterator[LiveIssuer]:
    """The live issuer on PostgreSQL and Redis, each behind its proxy."""
    issuer = proxied_issuer(tmp_path, idp, pg_proxy.url_for(pg_url), redis_proxy.url_for(redis_url))
    yield issuer
    pg_proxy.resume()
    redis_proxy.resume()
    issuer.close()
