"""A database that stops answering on connections already open is a 503 within a bound, never a hang.

The proxy freezes every connection (open and new) without closing any: no error ever reaches the
issuer, only silence, so only its own deadlines can end a wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from issuer.db import Database
from tests.conftest import LiveIssuer
from tests.support.tcp_proxy import FaultProxy

from .conftest import DB_TIMEOUT

#: Generous on a loaded 2-core machine; the documented bound is about twice the database timeout.
#: Eight exchanges at once: writers queued behind a failed audit commit must fail with it, not one
#: deadline after another (the last would answer after eight).
BOUND = 5 * DB_TIMEOUT


def timed_calls(calls: dict[str, Callable[[], httpx.Response]]) -> dict[str, tuple[object, float]]:
    """Run the calls at once; (status or exception name, seconds) per call."""
    out: dict[str, tuple[object, float]] = {}

    def run(name: str, call: Callable[[], httpx.Response]) -> None:
        started = time.monotonic()
        try:
            out[name] = (call().status_code, time.monotonic() - started)
        except httpx.HTTPError as e:
            out[name] = (type(e).__name__, time.monotonic() - started)

    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=4 * BOUND)
    return out


def patient(live: LiveIssuer) -> None:
    """The test client waits longer than any bound, so a hang shows as a timeout, not a client error."""
    live.http.close()
    live.http = httpx.Client(base_url=live.url, timeout=3 * BOUND)


def test_frozen_database_is_a_503_within_the_bound_and_readyz_answers(live_pg: LiveIssuer,
                                                                       pg_proxy: FaultProxy) -> None:
    live = live_pg
    patient(live)
    assert live.exchange().status_code == 200
    tokens = [live.idp.token() for _ in range(8)]
    pg_proxy.freeze()
    try:
        calls: dict[str, Callable[[], httpx.Response]] = {
            f"exchange-{i}": (lambda t=t: live.exchange(subject_token=t)) for i, t in enumerate(tokens)}
        calls["readyz"] = lambda: live.http.get("/readyz")
        results = timed_calls(calls)
        assert pg_proxy.frozen  # the outage outlasted every answer: no answer waited for it to end
    finally:
        pg_proxy.resume()
    assert set(results) == set(calls), results
    for name, (status, seconds) in results.items():
        assert status == 503, (name, results)
        assert seconds < BOUND, (name, results)
    assert live.exchange().status_code == 200  # the database back: served again at once


def test_a_slow_statement_ends_within_the_deadline_and_the_pool_goes_on(pg_url: str) -> None:
    """Slow, not silent: the server cancels the statement (statement_timeout, below the client's deadline)."""
    db = Database(pg_url, timeout=DB_TIMEOUT)
    try:
        started = time.monotonic()
        with pytest.raises(SQLAlchemyError, match="statement timeout"), db.session() as s:
            s.execute(text("SELECT pg_sleep(60)"))
        assert time.monotonic() - started < BOUND
        with db.session() as s:
            assert s.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        db.dispose()
