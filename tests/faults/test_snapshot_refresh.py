"""A registry refresh that hangs on a silent database holds no lock: the worker's other threads keep
serving the last snapshot, and the refreshing thread itself gets a 503 within the deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from issuer.db import Database
from issuer.errors import TemporarilyUnavailable
from issuer.migrate import upgrade
from issuer.registry import Snapshot, SnapshotCache
from tests.support.tcp_proxy import FaultProxy

from .conftest import DB_TIMEOUT


@pytest.fixture
def proxied_db(pg_url: str, pg_proxy: FaultProxy) -> Iterator[Database]:
    upgrade(pg_url)
    db = Database(pg_proxy.url_for(pg_url), timeout=DB_TIMEOUT)
    yield db
    pg_proxy.resume()
    db.dispose()


def test_a_hung_refresh_leaves_other_threads_serving_the_last_snapshot(proxied_db: Database,
                                                                        pg_proxy: FaultProxy) -> None:
    cache = SnapshotCache(proxied_db, b"p" * 32, interval=0.0, wait_timeout=DB_TIMEOUT)
    first = cache.get()
    pg_proxy.freeze()
    outcome: list[object] = []
    refresher = threading.Thread(target=lambda: outcome.append(_get(cache)))
    refresher.start()
    deadline = time.monotonic() + 5
    while not cache._refreshing and time.monotonic() < deadline:  # the refresher waits on the frozen database
        time.sleep(0.01)
    assert cache._refreshing
    served: list[object] = []
    reader = threading.Thread(target=lambda: served.extend(_get(cache) for _ in range(20)))
    started = time.monotonic()
    reader.start()
    reader.join(timeout=8 * DB_TIMEOUT)
    elapsed = time.monotonic() - started
    refresher.join(timeout=8 * DB_TIMEOUT)
    frozen = pg_proxy.frozen
    pg_proxy.resume()
    assert frozen
    assert served and all(s is first for s in served), served[:3]
    assert elapsed < DB_TIMEOUT, elapsed  # never behind the refresher's wait
    assert len(outcome) == 1 and isinstance(outcome[0], TemporarilyUnavailable), outcome
    assert cache.get().generation == first.generation  # the database back: refreshed again


def _get(cache: SnapshotCache) -> Snapshot | Exception:
    try:
        return cache.get()
    except TemporarilyUnavailable as e:
        return e
