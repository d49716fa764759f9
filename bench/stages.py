"""Where the time of one exchange goes: CPU microseconds per stage, in-process, one request at a time.

``python -m bench.stages [N]`` registers the benchmark's scenario in a fresh
PostgreSQL schema (Redis for rate limits), builds the app in this process and
sends N exchanges through Flask's test client, timing each stage with the
CPU clock of the thread that runs it. The audit committer runs in its own
thread; its CPU is counted separately. A second pass over the same tokens
shows what the verified-token cache saves. Not a throughput figure: no HTTP
server, no concurrency (that is ``python -m bench``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import scenario, server

STAGES = (
    ("verify_token", "exchange", "subject token: parse, key, signature, claims"),
    ("_spend", "Exchanger", "rate limits (one Redis round trip per budget)"),
    ("decide", "exchange", "client allowlist and policy"),
    ("policy_constraints", "exchange", "constraint templates filled"),
    ("policy_grant", "exchange", "the grant policy decided, as one value"),
    ("apply_request", "exchange", "the request's authorization_details applied to it"),
    ("build_claims", "exchange", "capability claims"),
    ("sign", "exchange", "capability signed"),
    ("commit_grant", "AuditWriter", "audit row: built, tagged, handed to the committer, waited for"),
    ("_execute", "GroupCommitter", "audit committer thread: INSERT and COMMIT"),
    ("exchange", "Exchanger", "the whole exchange (the stages above and glue)"),
)


def _timed(owner: Any, name: str, totals: dict[str, float]) -> Callable[[], None]:
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return real(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.thread_time() - started

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, real)


def _split(raw: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    headers.pop("Content-Length", None)
    return headers, body


def main(n: int = 2000) -> None:
    from issuer import audit, audit_commit, exchange
    from issuer.app import create_app
    from issuer.settings import Settings

    base = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("ISSUER_TEST_DATABASE_URL") or \
        "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("ISSUER_TEST_REDIS_URL") or \
        "redis://127.0.0.1:6379/0"
    storage = server.pg_storage(base, redis_url)
    folder = Path(tempfile.mkdtemp(prefix="issuer-stages-"))
    try:
        s = scenario.Scenario(users=n)
        settings = Settings(url="http://127.0.0.1:8000", database_url=storage.database_url,
                            keys_dir=folder / "keys", redis_url=redis_url, rate_limit=server.BENCH_RATE_LIMIT,
                            allow_insecure_loopback=True)
        from issuer.keys import KeyStore
        from issuer.migrate import upgrade

        upgrade(settings.database_url)
        KeyStore(settings.keys_dir, retention=settings.key_retention).ensure(settings.signing_alg)
        s.register(settings.database_url, settings.keys_dir)
        requests = [_split(r) for r in s.exchange_requests()]
        app = create_app(settings)
        client = app.test_client()
        for headers, body in requests[:50]:  # warm: keys parsed, snapshot loaded, connections open
            assert client.post("/token", data=body, headers=headers).status_code == 200
        totals: dict[str, float] = {}
        owners = {"exchange": exchange, "Exchanger": exchange.Exchanger, "AuditWriter": audit.AuditWriter,
                  "GroupCommitter": audit_commit.GroupCommitter}
        undo = [_timed(owners[o], name, totals) for name, o, _ in STAGES]
        measured = requests[50:]
        started, cpu = time.perf_counter(), time.thread_time()
        for headers, body in measured:
            assert client.post("/token", data=body, headers=headers).status_code == 200
        request_cpu = (time.thread_time() - cpu) / len(measured) * 1e6
        wall = (time.perf_counter() - started) / len(measured) * 1e6
        first = {k: v / len(measured) * 1e6 for k, v in totals.items()}
        totals.clear()
        cpu = time.thread_time()
        for headers, body in measured:  # the same subject tokens again: verified-token cache hits
            assert client.post("/token", data=body, headers=headers).status_code == 200
        again_cpu = (time.thread_time() - cpu) / len(measured) * 1e6
        again = {k: v / len(measured) * 1e6 for k, v in totals.items()}
        for u in undo:
            u()
        cpu = time.thread_time()
        for _ in measured:
            client.get("/healthz")
        hello = (time.thread_time() - cpu) / len(measured) * 1e6
        app.extensions["issuer"].db.dispose()
    finally:
        if storage.cleanup_db is not None:
            storage.cleanup_db()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    print(f"{len(measured)} exchanges, PostgreSQL + Redis, in-process (Flask test client), one at a time")
    print(f"{'stage':<20} {'first use µs':>12} {'token again µs':>15}   what")
    for name, _, what in STAGES:
        print(f"{name:<20} {first.get(name, 0):12.0f} {again.get(name, 0):15.0f}   {what}")
    print(f"{'request thread':<20} {request_cpu:12.0f} {again_cpu:15.0f}   CPU of the request thread per "
          "exchange: Flask, Authlib, the exchange")
    print(f"{'hello-world':<20} {hello:12.0f} {'':>15}   CPU of GET /healthz through the same test client")
    print(f"wall time per exchange {wall:.0f} µs (includes the audit commit's round trip)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
