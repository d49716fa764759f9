"""``python -m bench`` (``make bench``): the whole benchmark, one run, one table.

Order of a run:

1. Verifier SDK micro-benchmarks (CPU only, before any server runs).
2. The scenario (:mod:`bench.scenario`): its 10,000 user tokens are signed once.
3. For each configuration, PostgreSQL + Redis first (the targets are judged
   on it), then SQLite + in-process limits: ``issuer init``, registration,
   ``issuer serve``, a preflight (sample exchanges must be 200 and the
   capability must verify with the SDK against the live JWKS), then the load:
   a warm-up, closed-loop phases to find the peak of each route, and
   open-loop phases at fixed fractions of that peak. Hello-world and exchange
   phases alternate, so a disturbance on the machine hits both.
4. Audit rows versus 200s, peak RSS per worker, then everything is stopped
   and cleaned up (schema dropped, Redis keys deleted, temp folder removed).
5. Table, JSON and PNG in ``bench/results/``, compared with the previous JSON.

Exit status: 0 when the run completed (targets met or not: they are
reported, and they are the optimiser's work), 1 when the run itself failed
(server did not start, a preflight exchange was refused, storage missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report, scenario, server, stats
from .loadgen import _Conn, save_requests

__all__ = ["Knobs", "main"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
PREFLIGHT = 40


@dataclass(frozen=True)
class Knobs:
    """Phase lengths and load shape. Defaults keep `make bench` near 4 minutes on 2 cores."""

    warmup: float = 2.0
    peak_duration: float = 5.0
    peak_connections: tuple[int, ...] = (4, 16)
    levels: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    level_duration: float = 6.0
    open_connections: int = 64
    procs: int = 1
    settle: float = 1.0
    verifier_n: int = 2000
    quiet_wait: float = 10.0  #: before the verifier and each configuration, wait this long at most ...
    quiet_pct: float = 25.0  #: ... for the machine to be less busy than this
    users: int = 10_000
    configs: tuple[str, ...] = ("postgresql+redis", "sqlite+memory")
    gateway_calls: int = 1000  #: sequential calls per path for the gateway's latency (bench/gateway.py)
    gateway_seconds: float = 5.0  #: per path, for its calls per second


QUICK = Knobs(warmup=1.0, peak_duration=2.0, peak_connections=(8,), levels=(0.5, 0.9), level_duration=2.0,
              settle=0.5, verifier_n=300, quiet_wait=3.0, gateway_calls=200, gateway_seconds=2.0)


@dataclass
class Driver:
    """Runs load phases against one live issuer and keeps the counts the audit check needs."""

    issuer: server.IssuerProcess
    knobs: Knobs
    files: dict[str, Path]
    pool_size: int
    next_index: int = PREFLIGHT
    phases: list[dict[str, Any]] = field(default_factory=list)
    ok: dict[str, int] = field(default_factory=lambda: {"hello": 0, "exchange": 0})
    errors: dict[str, int] = field(default_factory=lambda: {"hello": 0, "exchange": 0})

    def phase(self, route: str, mode: str, *, duration: float, connections: int, rate: float = 0.0,
              label: str = "") -> dict[str, Any]:
        procs = max(1, self.knobs.procs)
        work = self.issuer.workdir
        handles: list[tuple[dict[str, Any], subprocess.Popen[bytes]]] = []
        for k in range(procs):
            spec: dict[str, Any] = {"port": self.issuer.port, "requests_file": str(self.files[route]), "mode": mode,
                    "duration": duration, "connections": max(1, connections // procs), "rate": rate / procs,
                    "start_index": (self.next_index + k * self.pool_size // procs) % self.pool_size,
                    "latency_file": str(work / f"lat-{len(self.phases)}-{k}.bin")}
            path = work / f"spec-{len(self.phases)}-{k}.json"
            path.write_text(json.dumps(spec))
            handles.append((spec, subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(path)], cwd=REPO,
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
        before = stats.CpuSnapshot.take(self.issuer.pids())
        outs = []
        for _spec, h in handles:
            out, err = h.communicate(timeout=duration + 60)
            if h.returncode != 0:
                raise RuntimeError(f"load generator failed: {err.decode(errors='replace')[-2000:]}")
            outs.append(json.loads(out))
        after = stats.CpuSnapshot.take(self.issuer.pids())
        lat = stats.read_latencies(Path(s["latency_file"]) for s, _ in handles)
        statuses: dict[str, int] = {}
        gen_errors: dict[str, int] = {}
        for o in outs:
            for k2, v in o["statuses"].items():
                statuses[k2] = statuses.get(k2, 0) + v
            for k2, v in o["errors"].items():
                gen_errors[k2] = gen_errors.get(k2, 0) + v
        sent = sum(o["sent"] for o in outs)
        if route == "exchange":
            self.next_index = (self.next_index + sent) % self.pool_size
        ok = statuses.get("200", 0)
        bad = sum(v for k2, v in statuses.items() if k2 != "200") + sum(gen_errors.values())
        self.ok[route] += ok
        self.errors[route] += bad
        gen_cpu = sum(o["cpu_seconds"] for o in outs)
        result = {
            "label": label, "route": route, "mode": mode, "duration_s": duration, "connections": connections,
            "offered_rps": rate if mode == "open" else None, "procs": procs,
            "throughput_rps": sum(o["throughput"] for o in outs), "sent": sent, "ok": ok,
            "unsent": sum(o.get("unsent", 0) for o in outs), "statuses": statuses, "errors": gen_errors,
            "latency": stats.summarise(lat),
            "generator_cpu_pct_of_core": 100.0 * gen_cpu / max(duration, 1e-9),
            "cpu": stats.foreign_cpu(before, after, gen_cpu),
            # CPU the issuer's processes spent per answered request: far less sensitive to other load
            # on the machine than a rate is (only cache and frequency effects get through).
            "server_cpu_ms_per_request": 1000.0 * stats.jiffies_to_seconds(after.ours - before.ours) / max(ok, 1),
        }
        self.phases.append(result)
        _progress(result)
        time.sleep(self.knobs.settle)
        return result


def _progress(p: dict[str, Any]) -> None:
    lat = p["latency"]
    offered = f" offered {p['offered_rps']:.0f}/s" if p["offered_rps"] else f" c={p['connections']}"
    print(f"  {p['label']:<14} {p['route']:<8}{offered:<17} got {p['throughput_rps']:8.1f}/s  "
          f"p50 {lat['p50_ms']:7.2f}  p99 {lat['p99_ms']:7.2f} ms  non-200/errors "
          f"{p['sent'] - p['ok']:>3}  foreign CPU {p['cpu']['foreign_pct']:5.1f}%", flush=True)


def _quiet(knobs: Knobs, what: str) -> None:
    busy = stats.wait_quiet(knobs.quiet_wait, knobs.quiet_pct)
    if busy >= knobs.quiet_pct:
        print(f"   machine still {busy:.0f}% busy after {knobs.quiet_wait:.0f}s; measuring {what} anyway", flush=True)


def _roundtrip(port: int, raw: bytes) -> tuple[int, bytes]:
    """One request on its own connection; the body is returned (the generator never keeps bodies)."""
    c = _Conn(port)
    try:
        c.sock.sendall(raw)
        while True:
            data = c.sock.recv(65536)
            if not data:
                raise RuntimeError("connection closed before the response was complete")
            c.buf += data
            end = c.buf.find(b"\r\n\r\n")
            if end >= 0:
                body = bytes(c.buf[end + 4:])
                got = c.response()
                if got is not None:
                    return got[0], body
    finally:
        c.sock.close()


def preflight(issuer: server.IssuerProcess, requests: list[bytes]) -> int:
    """Sample exchanges must be grants, and a minted capability must verify against the live JWKS."""
    from urllib.parse import parse_qs

    from issuer.sdk.verifier import CapabilityVerifier

    for i, raw in enumerate(requests[:PREFLIGHT]):
        status, body = _roundtrip(issuer.port, raw)
        if status != 200:
            raise RuntimeError(f"preflight exchange {i} got {status}: {body[:500].decode(errors='replace')}")
        if i == 0:
            form = parse_qs(raw.split(b"\r\n\r\n", 1)[1].decode())
            resource = form["resource"][0]
            token = json.loads(body)["access_token"]
            with CapabilityVerifier(issuer=issuer.url, audience=resource, allow_insecure_loopback=True) as v:
                cap = v.verify(token)
            if not cap.sub or cap.client_id is None:
                raise RuntimeError("preflight: the minted capability lacks sub or client_id")
    return PREFLIGHT


def run_config(name: str, scen: scenario.Scenario, requests: list[bytes], knobs: Knobs,
               db_url: str, redis_url: str) -> dict[str, Any]:
    workdir = server.make_workdir()
    storage: server.Storage | None = None
    issuer: server.IssuerProcess | None = None
    try:
        storage = server.pg_storage(db_url, redis_url) if name == "postgresql+redis" else \
            server.sqlite_storage(workdir)
        issuer = server.IssuerProcess(storage, workdir)
        print(f"== {name}: issuer init, registration, issuer serve on {issuer.url}", flush=True)
        issuer.init()
        scen.register(storage.database_url, issuer.keys_dir)
        issuer.start()
        _quiet(knobs, name)
        files = {"exchange": workdir / "exchange.req", "hello": workdir / "hello.req"}
        save_requests(files["exchange"], requests)
        save_requests(files["hello"], scenario.hello_request())
        d = Driver(issuer, knobs, files, len(requests))
        d.ok["exchange"] += preflight(issuer, requests)
        routes = ("hello", "exchange")
        for r in routes:
            d.phase(r, "closed", duration=knobs.warmup, connections=knobs.peak_connections[0], label="warm-up")
        peak = {r: 0.0 for r in routes}
        for c in knobs.peak_connections:
            for r in routes:
                peak[r] = max(peak[r], d.phase(r, "closed", duration=knobs.peak_duration, connections=c,
                                               label=f"peak c={c}")["throughput_rps"])
        peak_phases = [p for p in d.phases if p["label"].startswith("peak")]
        cpu_ms = {r: sum(p["server_cpu_ms_per_request"] * p["ok"] for p in peak_phases if p["route"] == r)
                  / max(1, sum(p["ok"] for p in peak_phases if p["route"] == r)) for r in routes}
        levels: dict[str, dict[str, Any]] = {r: {} for r in routes}
        for lvl in knobs.levels:
            for r in routes:
                p = d.phase(r, "open", duration=knobs.level_duration, connections=knobs.open_connections,
                            rate=max(1.0, peak[r] * lvl), label=f"open {lvl:.0%}")
                levels[r][f"{round(lvl * 100)}"] = {
                    "offered_rps": p["offered_rps"], "achieved_rps": p["throughput_rps"], "unsent": p["unsent"],
                    **{k: p["latency"][k] for k in ("p50_ms", "p95_ms", "p99_ms", "p99.9_ms", "max_ms")}}
        time.sleep(0.5)  # let the last commits land before counting
        audit = issuer.audit_counts()
        rss = issuer.worker_peak_rss()
        return {
            "server": {"command": "issuer serve", "workers": issuer.expected_workers(),
                       "threads": int(issuer.env.get("ISSUER_THREADS", "4")),
                       "database": "PostgreSQL" if storage.cleanup_db else "SQLite",
                       "rate_limits": "Redis" if storage.redis_url else "in-process",
                       "rate_limit": server.BENCH_RATE_LIMIT, **storage.notes},
            "hello": {"peak_rps": peak["hello"], "levels": levels["hello"], "server_cpu_ms": cpu_ms["hello"]},
            "exchange": {"peak_rps": peak["exchange"], "levels": levels["exchange"],
                         "server_cpu_ms": cpu_ms["exchange"]},
            "ratio": peak["exchange"] / peak["hello"] if peak["hello"] else 0.0,
            "errors": d.errors, "ok": d.ok,
            "audit": {"granted": audit.get("granted", 0),
                      "other": {k: v for k, v in audit.items() if k != "granted"}},
            "worker_peak_rss_kib": sorted(rss.values()),
            "foreign_cpu_max_pct": max(p["cpu"]["foreign_pct"] for p in d.phases),
            "phases": d.phases,
        }
    finally:
        server.release(issuer, storage, [scen.namespace(i.name) for i in scen.idps], workdir)


def _git() -> dict[str, Any]:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": head, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "", "dirty": None}


def parse_args(argv: list[str] | None) -> tuple[Knobs, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short phases: checks the harness, figures are rough")
    ap.add_argument("--config", choices=("all", "postgresql+redis", "sqlite+memory"), default="all")
    ap.add_argument("--no-verifier", action="store_true", help="skip the verifier SDK micro-benchmarks")
    ap.add_argument("--no-load", action="store_true", help="only the verifier SDK micro-benchmarks")
    ap.add_argument("--no-gateway", action="store_true", help="skip the MCP gateway's added latency")
    ap.add_argument("--procs", type=int, default=None, help="load-generator processes per phase (default 1)")
    ap.add_argument("--strict", action="store_true", help="exit 2 when a target is not met")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results", help="folder for JSON and PNG")
    a = ap.parse_args(argv)
    k = QUICK if a.quick else Knobs()
    if a.config != "all":
        k = replace(k, configs=(a.config,))
    if a.procs:
        k = replace(k, procs=a.procs)
    if a.no_load:
        k = replace(k, configs=())
    return k, a


def main(argv: list[str] | None = None) -> int:
    knobs, args = parse_args(argv)
    db_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("ISSUER_TEST_DATABASE_URL") or DEFAULT_DB
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("ISSUER_TEST_REDIS_URL") or DEFAULT_REDIS
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "format": 1, "started": started.isoformat(timespec="seconds"), "quick": bool(args.quick),
        "git": _git(), "knobs": asdict(knobs),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()},
        "configs": {}, "verifier": {},
    }
    t0 = time.monotonic()
    if not args.no_verifier:
        from . import verifier

        _quiet(knobs, "verifier")
        print(f"== verifier SDK micro-benchmarks (N={knobs.verifier_n})", flush=True)
        result["verifier"] = verifier.run_all(knobs.verifier_n)
        print(verifier.format_table(result["verifier"]), flush=True)
    if not args.no_gateway and not args.no_load:
        from . import gateway

        _quiet(knobs, "gateway")
        print("== MCP gateway: tools/call through the gateway against the same call made directly", flush=True)
        try:
            result["gateway"] = gateway.run(knobs.gateway_calls, knobs.gateway_seconds)
            print(gateway.format_table(result["gateway"]), flush=True)
        except Exception as e:
            print(f"!! gateway failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            result["gateway"] = {"failed": f"{type(e).__name__}: {e}"}
    if knobs.configs:
        print(f"== scenario: {knobs.users} users, signing one token each", flush=True)
        scen = scenario.Scenario(users=knobs.users)
        requests = scen.exchange_requests()
        result["scenario"] = scenario.summary(scen, requests)
        print(f"   {result['scenario']}", flush=True)
        for name in knobs.configs:
            try:
                result["configs"][name] = run_config(name, scen, requests, knobs, db_url, redis_url)
            except Exception as e:
                print(f"!! {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                result["configs"][name] = {"failed": f"{type(e).__name__}: {e}"}
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    previous = report.find_previous(args.results, quick=bool(args.quick))
    report.finish(result, previous)
    json_path = args.results / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    json_path.write_text(json.dumps(result, indent=1, default=float))
    png = json_path.with_suffix(".png")
    plotted = report.plot(result, png)
    print()
    print(report.format_table(result))
    print(f"\nJSON: {json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path}")
    if plotted:
        print(f"plot: {png.relative_to(REPO) if png.is_relative_to(REPO) else png}")
    failed = [n for n, c in result["configs"].items() if "failed" in c]
    if failed:
        return 1
    return 2 if args.strict and any(t["met"] is False for t in result["targets"]) else 0
