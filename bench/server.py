"""The issuer under test: ``issuer serve`` (gunicorn) as a subprocess, with its own storage.

Production configuration means the same entry point and settings an operator
uses: ``issuer init`` then ``issuer serve`` with ``ISSUER_*`` variables, its
default workers and threads, on a free 127.0.0.1 port. Each run gets a fresh
PostgreSQL schema (dropped afterwards) or SQLite file, a temporary keys
folder, and identity-provider namespaces unique to the run, so its Redis
rate-limit keys can be found and deleted afterwards without touching anyone
else's.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["IssuerProcess", "Storage", "free_port", "pg_storage", "sqlite_storage"]

#: ISSUER_* variables a caller may pass through to the server (sizing); all others are set here.
PASSTHROUGH = ("ISSUER_WORKERS", "ISSUER_THREADS", "ISSUER_SIGNING_ALG", "ISSUER_LOG_LEVEL")
#: High enough that the load is never refused (errors must be 0) while every grant still spends it in Redis.
BENCH_RATE_LIMIT = "1000000/minute;100000/second"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Storage:
    """Where one configuration keeps its state, and how to clean it up."""

    label: str
    database_url: str
    redis_url: str
    cleanup_db: Any = None  #: callable, or None
    notes: dict[str, str] = field(default_factory=dict)


def pg_storage(base_url: str, redis_url: str) -> Storage:
    """A fresh schema ``bench_<pid>_<hex>``, reached through the URL's search_path, dropped at the end."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if base_url.startswith("postgresql://"):
        base_url = "postgresql+psycopg://" + base_url.removeprefix("postgresql://")
    schema = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    return Storage("postgresql+redis", url.render_as_string(hide_password=False), redis_url, drop,
                   {"schema": schema})


def sqlite_storage(folder: Path) -> Storage:
    return Storage("sqlite+memory", f"sqlite:///{folder}/issuer.db", "")


def delete_redis_keys(redis_url: str, namespaces: list[str]) -> int:
    """Delete the rate-limit keys this run's users left (they name the run-unique IdP namespaces,
    percent-encoded: ``{user/<namespace>%3A<sub>/<tool>}``)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    n = 0
    try:
        for ns in namespaces:
            batch = list(r.scan_iter(match=f"issuer-rl*{ns}%3A*", count=1000))
            for i in range(0, len(batch), 500):
                n += int(r.delete(*batch[i:i + 500]))
    finally:
        r.close()
    return n


def release(issuer: IssuerProcess | None, storage: Storage | None, namespaces: list[str], workdir: Path) -> int:
    """Stop the server, drop its schema, delete its rate-limit keys and its folder; the keys deleted."""
    deleted = 0
    if issuer is not None:
        issuer.stop()
    if storage is not None:
        if storage.cleanup_db is not None:
            storage.cleanup_db()
        if storage.redis_url:
            deleted = delete_redis_keys(storage.redis_url, namespaces)
    remove_workdir(workdir)
    return deleted


class IssuerProcess:
    """One ``issuer serve`` master and its workers, started and stopped by PID."""

    def __init__(self, storage: Storage, workdir: Path) -> None:
        self.storage = storage
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.keys_dir = workdir / "keys"
        self.log_path = workdir / "issuer.log"
        self.proc: subprocess.Popen[bytes] | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_") or k in PASSTHROUGH}
        env.update(
            ISSUER_URL=self.url, ISSUER_HOST="127.0.0.1", ISSUER_PORT=str(self.port),
            ISSUER_DATABASE_URL=storage.database_url, ISSUER_KEYS_DIR=str(self.keys_dir),
            ISSUER_REDIS_URL=storage.redis_url, ISSUER_RATE_LIMIT=BENCH_RATE_LIMIT,
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env = env
        self.issuer_bin = str(Path(sys.executable).with_name("issuer"))

    def init(self) -> None:
        """`issuer init`: migrations and signing keys, exactly as an operator does it."""
        subprocess.run([self.issuer_bin, "init"], env=self.env, check=True, capture_output=True, timeout=120)

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen([self.issuer_bin, "serve"], env=self.env, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"issuer serve exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:  # noqa: S310 (loopback)
                    if r.status == 200 and len(self.worker_pids()) >= self.expected_workers():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"issuer serve did not answer /healthz within {timeout:.0f}s: {self.log_tail()}")

    def expected_workers(self) -> int:
        return int(self.env.get("ISSUER_WORKERS", "2"))

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ processes
    def pids(self) -> list[int]:
        """The master and every descendant (the gunicorn workers)."""
        if self.proc is None:
            return []
        return [self.proc.pid, *_descendants(self.proc.pid)]

    def worker_pids(self) -> list[int]:
        return _descendants(self.proc.pid) if self.proc else []

    def worker_peak_rss(self) -> dict[int, int]:
        """VmHWM (peak resident set) of each worker, in KiB."""
        out = {}
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out[pid] = int(line.split()[1])
            except OSError:
                continue
        return out

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # gunicorn: graceful shutdown of the master and its workers
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    # ------------------------------------------------------------------ audit
    def audit_counts(self) -> dict[str, int]:
        """Rows in audit_events by decision (the tokens the issuer vouches it issued)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.storage.database_url)
        try:
            with engine.connect() as c:
                rows = c.execute(text("SELECT decision, COUNT(*) FROM audit_events GROUP BY decision")).all()
        finally:
            engine.dispose()
        return {str(d): int(n) for d, n in rows}


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in kids:
            out.append(int(k))
            todo.append(int(k))
    return out


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="issuer-bench-"))


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
