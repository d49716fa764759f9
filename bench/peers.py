"""``python -m bench.peers``: our issuer measured by the peers' own harness, in the same run as the peers.

The peer anchors (``/work/shared/peers``, see its README) measure existing
token-exchange servers with wrk: a hello-world route and the exchange
(``POST /token`` with client authentication), the same request replayed, at
each of ``CONNS`` connection counts, through ``common/bench.sh``'s
``bench_pair``. The figure compared is exchange ok/s ÷ hello req/s at the
same connection count. This tool puts our issuer through that very function,
then runs every peer's ``run.sh`` with the same ``RESULTS`` file, so that all
the rows come from one run on one machine:

1. our issuer as ``make bench`` runs its primary configuration (``issuer
   init`` + ``issuer serve`` with PostgreSQL and Redis, a fresh schema, the
   benchmark scenario registered); ONE exchange request of a
   ``client_secret_basic`` client is taken from the scenario (its form body
   to a file, its ``Authorization`` value) and checked to be a 200 whose
   capability verifies against the live JWKS;
2. ``bench_pair issuer-<sha> .../healthz .../token BODY AUTH`` with
   ``SERVER_PID`` = our gunicorn master; the sample exchange is checked again;
   the server is stopped, its audit rows are counted against the exchanges
   wrk reports as answered, and the schema and Redis keys are removed;
3. each peer's ``run.sh`` (``--peers`` / ``PEERS``), continuing past failures;
4. the peers' ``common/table.py`` on the rows, and a verdict: our ratio
   against every peer's at each connection count.

``CONNS``, ``DURATION``, ``WARMUP``, ``SETTLE`` (and bench.sh's other knobs)
pass through from the environment. Outputs: ``bench/results/peers-<UTC
time>.tsv`` (the RESULT rows) and ``.txt`` (table and verdict).

Exit status: 0 when the run completed (whatever the verdict), 1 when our
part failed, 2 when the peers folder is missing.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from . import scenario, server
from .runner import DEFAULT_DB, DEFAULT_REDIS, REPO, _git

__all__ = ["Row", "Verdict", "format_verdict", "main", "parse_results", "ratios", "split_request", "verdict"]

#: The same list, in the same order, as the peers' run_all.sh.
DEFAULT_PEERS = ("flask-baseline", "idpyoidc", "authgent-server", "oidc-provider", "delcred")

_BENCH_PAIR = """
set -eu
source "$PEERS_DIR/common/lib.sh"
source "$PEERS_DIR/common/bench.sh"
need_wrk
bench_pair "$1" "$2" "$3" "$4" "$5"
"""


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Row:
    """One RESULT line of bench.sh: ``peer<TAB>route<TAB>conns<TAB>RESULT k=v ...``."""

    peer: str
    route: str
    conns: int
    kv: dict[str, str]

    @property
    def secs(self) -> float:
        return float(self.kv["secs"])

    @property
    def rps(self) -> float:
        return float(self.kv["rps"])

    @property
    def ok(self) -> int:
        """Responses below 400, as table.py counts them."""
        return int(self.kv["requests"]) - int(self.kv["http_ge400"])

    @property
    def ok_rps(self) -> float:
        return self.ok / self.secs if self.secs else 0.0

    @property
    def errors(self) -> int:
        """Socket errors and timeouts."""
        return sum(int(self.kv.get(k, "0")) for k in ("connect_err", "read_err", "write_err", "timeouts"))


def parse_results(text: str) -> list[Row]:
    """The RESULT rows of a results file; other lines are skipped, as table.py does."""
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 4 or not parts[3].startswith("RESULT"):
            continue
        kv = dict(p.split("=", 1) for p in parts[3].split()[1:] if "=" in p)
        rows.append(Row(parts[0], parts[1], int(parts[2]), kv))
    return rows


def ratios(rows: Iterable[Row]) -> dict[tuple[str, int], float]:
    """(peer, conns) -> exchange ok/s ÷ hello req/s, table.py's definition (the last row of each wins)."""
    rows = list(rows)
    hello = {(r.peer, r.conns): r.rps for r in rows if r.route == "hello"}
    out = {}
    for r in rows:
        if r.route != "hello" and hello.get((r.peer, r.conns)):
            out[(r.peer, r.conns)] = r.ok_rps / hello[(r.peer, r.conns)]
    return out


@dataclass
class Verdict:
    ours: str
    #: conns -> our ratio (None: no exchange/hello pair of ours at that count)
    our_ratio: dict[int, float | None] = field(default_factory=dict)
    #: conns -> peer -> its ratio
    peers: dict[int, dict[str, float]] = field(default_factory=dict)
    #: peers with rows but no exchange/hello ratio (e.g. the hello-only reference)
    hello_only: list[str] = field(default_factory=list)

    def beats_at(self, conns: int) -> bool | None:
        """True/False when there is something to compare at this count, else None."""
        mine = self.our_ratio.get(conns)
        theirs = self.peers.get(conns, {})
        if mine is None:
            return False if theirs else None
        if not theirs:
            return None
        return all(mine > r for r in theirs.values())

    @property
    def beats_all(self) -> bool | None:
        """Yes only if ours beats every peer at every connection count; None when no peer ratio was measured."""
        per = [self.beats_at(c) for c in sorted(set(self.our_ratio) | set(self.peers))]
        known = [b for b in per if b is not None]
        if not known:
            return None
        return all(known)


def verdict(rows: Sequence[Row], ours: str) -> Verdict:
    r = ratios(rows)
    v = Verdict(ours)
    for c in sorted({row.conns for row in rows if row.peer == ours}):
        v.our_ratio[c] = r.get((ours, c))
    for (peer, c), ratio in sorted(r.items()):
        if peer != ours:
            v.peers.setdefault(c, {})[peer] = ratio
    with_ratio = {peer for peer, _ in r}
    v.hello_only = sorted({row.peer for row in rows if row.peer != ours and row.peer not in with_ratio})
    return v


def _yes_no(b: bool | None) -> str:
    return "n/a" if b is None else ("yes" if b else "no")


def format_verdict(v: Verdict, *, failed: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
    lines = [f"Verdict: {v.ours}, exchange ok/s ÷ hello req/s, against each peer at the same connection count"]
    for c in sorted(set(v.our_ratio) | set(v.peers)):
        mine = v.our_ratio.get(c)
        lines.append(f"  c={c}: {v.ours} {'-' if mine is None else f'{mine:.3f}'}")
        for peer, ratio in sorted(v.peers.get(c, {}).items(), key=lambda kv: -kv[1]):
            ahead = "n/a" if mine is None else ("ours ahead" if mine > ratio else "ours NOT ahead")
            lines.append(f"    vs {peer:<34} {ratio:.3f}  ({ahead}"
                         f"{'' if mine is None or not ratio else f', {mine / ratio:.1f}x'})")
        lines.append(f"    beats every peer at c={c}: {_yes_no(v.beats_at(c))}")
    if v.hello_only:
        lines.append(f"  hello-only rows (reference, no exchange to compare): {', '.join(v.hello_only)}")
    if failed:
        lines.append(f"  peers whose run.sh failed (their rows may be missing or partial): {', '.join(failed)}")
    lines += [f"  {n}" for n in notes]
    suffix = " (no peer exchange rows in this run)" if v.beats_all is None else ""
    lines.append(f"beats every peer: {_yes_no(v.beats_all)}{suffix}")
    return "\n".join(lines)


def split_request(raw: bytes) -> tuple[dict[str, str], bytes]:
    """Headers (by lower-case name) and body of one raw HTTP/1.1 request built by bench.scenario."""
    head, body = raw.split(b"\r\n\r\n", 1)
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


# --------------------------------------------------------------------------- the run


def find_peers_dir(arg: str | None) -> Path | None:
    p = Path(arg or os.environ.get("PEERS_DIR") or REPO.parent / "shared" / "peers")
    return p.resolve() if (p / "common" / "bench.sh").is_file() else None


def _pick_basic(requests: Sequence[bytes]) -> tuple[bytes, str]:
    """The first request (the scenario's order is fixed by its seed) of a client_secret_basic client."""
    for raw in requests:
        headers, body = split_request(raw)
        auth = headers.get("authorization", "")
        if auth.startswith("Basic "):
            return body, auth
    raise RuntimeError("the scenario has no client_secret_basic request")


def _describe(body: bytes, auth: str) -> str:
    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    client = base64.b64decode(auth.removeprefix("Basic ")).decode().split(":", 1)[0]
    payload = form["subject_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    header = form["subject_token"].split(".")[0]
    alg = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))).get("alg")
    return (f"client {client} (client_secret_basic), subject {claims.get('sub')} of {claims.get('iss')} "
            f"({alg}), resource {form.get('resource')}, scope {form.get('scope', '(defaults)')}")


def check_exchange(issuer: server.IssuerProcess, body: bytes, auth: str) -> None:
    """One exchange through urllib: must be a 200 whose capability verifies against the live JWKS."""
    from issuer.sdk.verifier import CapabilityVerifier

    req = urllib.request.Request(issuer.url + "/token", data=body, method="POST", headers={  # noqa: S310 (loopback)
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (loopback)
            status, answer = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, answer = e.code, e.read()
    if status != 200:
        raise RuntimeError(f"sample exchange got {status}: {answer[:500].decode(errors='replace')}")
    resource = parse_qs(body.decode())["resource"][0]
    with CapabilityVerifier(issuer=issuer.url, audience=resource, allow_insecure_loopback=True) as v:
        cap = v.verify(json.loads(answer)["access_token"])
    if not cap.sub or cap.client_id is None:
        raise RuntimeError("sample exchange: the minted capability lacks sub or client_id")


def run_ours(label: str, peers_dir: Path, results: Path, db_url: str, redis_url: str) -> list[str]:
    """Our issuer through bench_pair; returns notes for the verdict (audit check). Raises on failure."""
    scen = scenario.Scenario()
    print(f"== scenario: {len(scen.users)} users, signing one token each", flush=True)
    body, auth = _pick_basic(scen.exchange_requests())
    workdir = server.make_workdir()
    storage: server.Storage | None = None
    issuer: server.IssuerProcess | None = None
    try:
        storage = server.pg_storage(db_url, redis_url)
        issuer = server.IssuerProcess(storage, workdir)
        print(f"== {label}: issuer init, registration, issuer serve on {issuer.url} "
              f"({storage.label}, schema {storage.notes.get('schema')})", flush=True)
        issuer.init()
        scen.register(storage.database_url, issuer.keys_dir)
        issuer.start()
        print(f"   request replayed: {_describe(body, auth)}", flush=True)
        check_exchange(issuer, body, auth)
        body_file = workdir / "body.txt"
        body_file.write_bytes(body)
        env = {k: v for k, v in os.environ.items() if k != "CONTENT_TYPE"}
        env.update(PEERS_DIR=str(peers_dir), SERVER_PID=str(issuer.proc.pid if issuer.proc else 0),
                   RESULTS=str(results))
        print(f"== {label}: bench_pair (CONNS={env.get('CONNS', '4 16')} DURATION={env.get('DURATION', '10s')} "
              f"WARMUP={env.get('WARMUP', '3s')} SETTLE={env.get('SETTLE', '3')}), SERVER_PID={env['SERVER_PID']}",
              flush=True)
        subprocess.run(["bash", "-c", _BENCH_PAIR, "bench_pair", label, issuer.url + "/healthz",
                        issuer.url + "/token", str(body_file), auth], env=env, check=True)
        check_exchange(issuer, body, auth)
        issuer.stop()  # graceful: every pending audit commit lands before the workers exit
        audit = issuer.audit_counts()
    finally:
        n = server.release(issuer, storage, [scen.namespace(i.name) for i in scen.idps], workdir)
        if storage is not None:
            print(f"   cleaned up: schema {storage.notes.get('schema')} dropped, {n} Redis keys deleted", flush=True)
    ours = [r for r in parse_results(results.read_text()) if r.peer == label and r.route == "exchange"]
    ok = sum(r.ok for r in ours)
    granted = audit.get("granted", 0)
    other = {k: v for k, v in audit.items() if k != "granted"}
    expected = ok + 2  # the measured rows, plus the two sample exchanges (warm-up requests are not reported by wrk)
    line = (f"audit rows granted {granted} vs exchanges answered below 400: {ok} in the measured rows + 2 sample "
            f"checks = {expected} (wrk does not report its warm-up's count): "
            f"{'ok' if granted >= expected else 'FEWER AUDIT ROWS THAN TOKENS'}"
            f"{f'; other decisions {other}' if other else ''}")
    print(f"   {line}", flush=True)
    notes = [line]
    ge400 = sum(int(r.kv.get("http_ge400", "0")) for r in ours)
    errs = sum(r.errors for r in ours)
    if ge400 or errs:
        notes.append(f"{label} exchange rows: {ge400} responses >= 400, {errs} socket errors/timeouts")
    return notes


def run_peers(peers_dir: Path, peers: Sequence[str], results: Path) -> list[str]:
    """Each peer's run.sh with the shared RESULTS; returns the ones that failed."""
    failed = []
    env = {**os.environ, "RESULTS": str(results)}
    for p in peers:
        script = peers_dir / p / "run.sh"
        print(f"################ {p}  ({datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')})", flush=True)
        if not script.is_file():
            print(f"!!!! {p}: no {script}", flush=True)
            failed.append(p)
            continue
        rc = subprocess.run([str(script)], env=env, check=False).returncode
        if rc != 0:
            print(f"!!!! {p} run.sh failed (exit {rc})", flush=True)
            failed.append(p)
    return failed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--peers-dir", help="the peers folder (default: $PEERS_DIR, else <repo>/../shared/peers)")
    ap.add_argument("--peers", help="peers to run, space- or comma-separated (default: $PEERS, else run_all.sh's "
                    f"list: {' '.join(DEFAULT_PEERS)})")
    ap.add_argument("--no-peers", action="store_true", help="measure only our issuer")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results", help="folder for the TSV and verdict")
    return ap.parse_args(argv)


def _rel(p: Path) -> Path:
    return p.relative_to(REPO) if p.is_relative_to(REPO) else p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    peers_dir = find_peers_dir(args.peers_dir)
    if peers_dir is None:
        where = args.peers_dir or os.environ.get("PEERS_DIR") or REPO.parent / "shared" / "peers"
        print(f"bench.peers: no peers folder at {where} (with common/bench.sh); pass --peers-dir or set PEERS_DIR",
              file=sys.stderr)
        return 2
    peers = [] if args.no_peers else (args.peers or os.environ.get("PEERS") or " ".join(DEFAULT_PEERS)) \
        .replace(",", " ").split()
    db_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("ISSUER_TEST_DATABASE_URL") or DEFAULT_DB
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("ISSUER_TEST_REDIS_URL") or DEFAULT_REDIS
    git: dict[str, Any] = _git()
    label = f"issuer-{git['commit'] or 'unknown'}"
    if git.get("dirty"):
        label += "-dirty"
        print(f"   note: the working tree has uncommitted changes; rows are labelled {label}", flush=True)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    args.results.mkdir(parents=True, exist_ok=True)
    tsv = (args.results / f"peers-{stamp}.tsv").resolve()
    tsv.write_text("")
    print(f"== peers harness {peers_dir}; rows to {tsv}", flush=True)
    try:
        notes = run_ours(label, peers_dir, tsv, db_url, redis_url)
    except Exception as e:
        print(f"!! {label} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    failed = run_peers(peers_dir, peers, tsv)
    table = subprocess.run(["python3", str(peers_dir / "common" / "table.py"), str(tsv)], capture_output=True,
                           text=True, check=False)
    rows = parse_results(tsv.read_text())
    head = (f"# {started.isoformat(timespec='seconds')}, {os.cpu_count()} cores, {label}, peers: "
            f"{' '.join(peers) or '(none)'}; CONNS={os.environ.get('CONNS', '4 16')} "
            f"DURATION={os.environ.get('DURATION', '10s')} WARMUP={os.environ.get('WARMUP', '3s')} "
            f"SETTLE={os.environ.get('SETTLE', '3')}")
    text = "\n".join([head, "", table.stdout.rstrip() or table.stderr.rstrip(), "",
                      format_verdict(verdict(rows, label), failed=failed, notes=notes)])
    print()
    print(text)
    txt = tsv.with_suffix(".txt")
    txt.write_text(text + "\n")
    print(f"\nrows: {_rel(tsv)}\nverdict: {_rel(txt)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
