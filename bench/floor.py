"""What bounds the exchange/hello ratio on this machine: ``python -m bench.floor``.

Serves :mod:`bench.floor_app` (a bare Flask app doing only the work no token
exchange can skip) under the issuer's own server configuration, loads each
route closed-loop from separate processes as ``make bench`` does, and prints
each route's peak against the hello route's. Needs the machine's PostgreSQL
and Redis (``BENCH_DATABASE_URL``, ``BENCH_REDIS_URL``, as ``make bench``).
About a minute. Not part of ``make test``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import server, stats
from .loadgen import save_requests
from .runner import DEFAULT_DB, DEFAULT_REDIS
from .scenario import raw_request

REPO = Path(__file__).resolve().parent.parent
ROUTES = ("hello", "crypto", "io")
TOKENS = 2000  #: distinct subject tokens, so every signature check is a first one


def _requests(key: ec.EllipticCurvePrivateKey) -> dict[str, list[bytes]]:
    now = int(time.time())
    auth = {"Authorization": "Basic Y2xpZW50OnMzY3JldA==", "Content-Type": "application/x-www-form-urlencoded"}
    bodies = []
    for i in range(TOKENS):
        token = jwt.encode({"iss": "https://idp.example", "sub": f"user{i}", "aud": "floor", "iat": now,
                            "exp": now + 3600, "groups": ["support"]}, key, algorithm="ES256")
        bodies.append(urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                                 "subject_token": token, "resource": f"https://tool{i % 50}.example/mcp",
                                 "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                                 "scope": "tickets.read"}).encode())
    return {"hello": [raw_request("GET", "/healthz", {})],
            "crypto": [raw_request("POST", "/floor/crypto", auth, b) for b in bodies],
            "io": [raw_request("POST", "/floor/io", auth, b) for b in bodies]}


def _load(port: int, path: Path, work: Path, connections: int, duration: float) -> dict[str, Any]:
    spec = {"port": port, "requests_file": str(path), "mode": "closed", "duration": duration,
            "connections": connections, "rate": 0, "start_index": 0, "latency_file": str(work / "lat.bin")}
    (work / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "bench.loadgen", str(work / "spec.json")], cwd=REPO,
                          capture_output=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main(duration: float = 5.0) -> int:
    storage = server.pg_storage(os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DB,
                                os.environ.get("BENCH_REDIS_URL") or DEFAULT_REDIS)
    work = Path(tempfile.mkdtemp(prefix="issuer-floor-"))
    key = ec.generate_private_key(ec.SECP256R1())
    (work / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    port = server.free_port()
    env = {**os.environ, "FLOOR_KEY": str(work / "key.pem"), "FLOOR_REDIS_URL": storage.redis_url,
           "FLOOR_DATABASE_URL": storage.database_url.replace("postgresql+psycopg://", "postgresql://")}
    # The issuer's own server settings (issuer/wsgi.py): gthread, 2 workers x 4 threads, no preload.
    proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-k", "gthread", "-w", "2",
                             "--threads", "4", "-b", f"127.0.0.1:{port}", "--keep-alive", "5",
                             "bench.floor_app:create()"], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks: dict[str, float] = {}
    cpu: dict[str, float] = {}
    try:
        for _ in range(150):  # both workers up and answering
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                if len(server._descendants(proc.pid)) >= 2:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        files = {}
        for route, reqs in _requests(key).items():
            files[route] = work / f"{route}.req"
            save_requests(files[route], reqs)
        for route in ROUTES:
            _load(port, files[route], work, 4, 1.0)  # warm-up: connections, keys, prepared statements
        pids = [proc.pid, *server._descendants(proc.pid)]
        for connections in (4, 16):
            for route in ROUTES:
                stats.wait_quiet(10, 25)
                before = stats.CpuSnapshot.take(pids)
                r = _load(port, files[route], work, connections, duration)
                after = stats.CpuSnapshot.take(pids)
                ok = r["statuses"].get("200", 0)
                bad = sum(v for k, v in r["statuses"].items() if k != "200") + sum(r["errors"].values())
                if bad:
                    raise RuntimeError(f"{route}: {bad} answers were not 200: {r['statuses']} {r['errors']}")
                if r["throughput"] > peaks.get(route, 0.0):
                    peaks[route] = r["throughput"]
                    cpu[route] = 1000.0 * stats.jiffies_to_seconds(after.ours - before.ours) / max(ok, 1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        if storage.cleanup_db is not None:
            storage.cleanup_db()
        server.remove_workdir(work)
    print("== the floor: a bare Flask app doing only what no exchange can skip, under the issuer's server settings")
    print(f"{'route':<10} {'peak/s':>9} {'vs hello':>9} {'server CPU ms/request':>22}")
    for route in ROUTES:
        print(f"{route:<10} {peaks[route]:9.1f} {peaks[route] / peaks['hello']:9.3f} {cpu[route]:22.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0))
