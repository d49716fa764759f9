"""Two issuer processes on one machine: throughput adds up, one rate budget, one audit trail.

``python -m bench.scaleout`` starts two ``issuer serve`` processes (one worker
each) on their own ports, sharing one PostgreSQL schema, one Redis and one key
folder, as two replicas behind a load balancer would. It then shows:

1. throughput: the exchange peak of one process alone, then of both at once
   (one load generator per process), until the cores are full;
2. one rate budget: both restarted with ``ISSUER_RATE_LIMIT=20/minute``, one
   user's token sent 40 times, alternating between the two: exactly 20 are
   granted in total, not 20 per process;
3. one audit trail: the granted rows in the shared database equal the 200s
   both processes answered.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import scenario, server
from .loadgen import save_requests
from .runner import DEFAULT_DB, DEFAULT_REDIS, REPO, _roundtrip

LOW_LIMIT = "20/minute"


def _load(ports: list[int], requests_file: Path, duration: float, connections: int, work: Path) -> list[dict[str, Any]]:
    """One closed-loop generator per port, all at once; their results."""
    handles = []
    for k, port in enumerate(ports):
        spec = {"port": port, "requests_file": str(requests_file), "mode": "closed", "duration": duration,
                "connections": connections, "start_index": k * 997, "latency_file": str(work / f"lat-{port}.bin")}
        path = work / f"spec-{port}.json"
        path.write_text(json.dumps(spec))
        handles.append(subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(path)], cwd=REPO,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    out = []
    for h in handles:
        stdout, stderr = h.communicate(timeout=duration + 60)
        if h.returncode != 0:
            raise RuntimeError(f"load generator failed: {stderr.decode(errors='replace')[-1000:]}")
        out.append(json.loads(stdout))
    return out


def _replica(storage: server.Storage, workdir: Path, keys_dir: Path, **env: str) -> server.IssuerProcess:
    p = server.IssuerProcess(storage, workdir)
    p.keys_dir = keys_dir
    p.env.update(ISSUER_KEYS_DIR=str(keys_dir), ISSUER_WORKERS="1", **env)
    return p


def main(users: int = 4000, duration: float = 6.0, connections: int = 8) -> int:
    db = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("ISSUER_TEST_DATABASE_URL") or DEFAULT_DB
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("ISSUER_TEST_REDIS_URL") or DEFAULT_REDIS
    scen = scenario.Scenario(users=users)
    requests = scen.exchange_requests()
    storage = server.pg_storage(db, redis_url)
    work = server.make_workdir()
    keys = work / "shared-keys"
    replicas: list[server.IssuerProcess] = []
    ok = 0
    try:
        a = _replica(storage, work / "a", keys)
        b = _replica(storage, work / "b", keys)
        for d in (work / "a", work / "b"):
            d.mkdir(exist_ok=True)
        a.init()
        scen.register(storage.database_url, keys)
        replicas = [a, b]
        for r in replicas:
            r.start()
        req_file = work / "exchange.req"
        save_requests(req_file, requests)

        print("== throughput (exchanges/s, closed loop, "
              f"{connections} connections per process, {duration:.0f} s, one worker per process)")
        alone = _load([a.port], req_file, duration, connections, work)
        both = _load([a.port, b.port], req_file, duration, connections, work)
        one = alone[0]["throughput"]
        two = sum(o["throughput"] for o in both)
        ok += sum(o["statuses"].get("200", 0) for o in alone + both)
        bad = sum(v for o in alone + both for k, v in o["statuses"].items() if k != "200")
        print(f"   one process:   {one:8.1f}/s")
        parts = " + ".join(f"{o['throughput']:.1f}" for o in both)
        print(f"   two processes: {two:8.1f}/s  ({parts}), "
              f"{two / max(one, 1e-9):.2f}x one process on {os.cpu_count()} cores shared with PostgreSQL, "
              "Redis and the load generators;  non-200: " + str(bad))

        print(f"== one rate budget: both restarted with ISSUER_RATE_LIMIT={LOW_LIMIT}; one user's token, "
              "40 exchanges alternating between the processes")
        for r in replicas:
            r.stop()
            r.env["ISSUER_RATE_LIMIT"] = LOW_LIMIT
            r.start()
        raw = requests[-1]  # a user the throughput phases never sent: its budget is untouched
        statuses = [_roundtrip((a if i % 2 == 0 else b).port, raw)[0] for i in range(40)]
        granted = statuses.count(200)
        ok += granted
        refused = statuses.count(429)
        print(f"   granted {granted}, refused with 429 {refused}, other {40 - granted - refused}"
              f"  -> {'one shared budget' if granted == 20 else 'NOT one shared budget'}")

        time.sleep(0.5)
        rows = a.audit_counts()
        print(f"== one audit trail: {rows.get('granted', 0)} granted rows in the shared database for {ok} "
              f"200s answered by both processes -> {'equal' if rows.get('granted', 0) == ok else 'NOT equal'}")
        return 0 if granted == 20 and rows.get("granted", 0) == ok and bad == 0 else 1
    finally:
        for r in replicas:
            r.stop()
        if storage.cleanup_db is not None:
            storage.cleanup_db()
        server.delete_redis_keys(redis_url, [scen.namespace(i.name) for i in scen.idps])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
