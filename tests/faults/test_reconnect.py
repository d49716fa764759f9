"""Connections dropped while the issuer is idle cost no request: the first exchange after the database
is back succeeds, on every path (the pool's liveness check, the audit committer's own connection)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from issuer.models import AuditEvent
from tests.conftest import LiveIssuer
from tests.support.fake_idp import FakeIdP
from tests.support.tcp_proxy import FaultProxy

from .conftest import proxied_issuer

APP_NAME = f"issuer-under-test-{secrets.token_hex(4)}"  #: this run's backends, not another run's


def _terminate_issuer_backends(pg_url: str) -> int:
    """Terminate the issuer's backends and wait until they are gone (their goodbye is then on the wire)."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    alive = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
    try:
        with admin.connect() as c:
            n = len(c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE application_name = :name"), {"name": APP_NAME}).all())
            deadline = time.monotonic() + 10
            while c.execute(alive, {"name": APP_NAME}).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.05)
            return n
    finally:
        admin.dispose()


@pytest.mark.parametrize("drop", ["proxy_cut", "pg_terminate_backend"])
def test_first_exchange_after_connections_dropped_while_idle_succeeds(
        tmp_path: Path, idp: FakeIdP, pg_url: str, pg_proxy: FaultProxy, drop: str) -> None:
    url = pg_proxy.url_for(pg_url) + f"&application_name={APP_NAME}"
    live: LiveIssuer = proxied_issuer(tmp_path, idp, url)
    try:
        assert live.exchange().status_code == 200  # the pool and the audit committer hold connections now
        if drop == "proxy_cut":
            pg_proxy.cut()
        else:
            assert _terminate_issuer_backends(pg_url) >= 2
        time.sleep(0.2)  # the goodbye reaches the issuer's sockets while it is idle
        first = live.exchange()
        assert first.status_code == 200, first.text
        with live.db.session() as s:
            granted = s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.decision == "granted"))
        assert granted == 2  # every token has its row
    finally:
        live.close()
