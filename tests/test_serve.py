"""The production path: `issuer init` and `issuer serve` (gunicorn) as a newcomer runs them, over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import ACCESS_TOKEN, TOKEN_EXCHANGE, free_port
from tests.support.fake_idp import FakeIdP

BIN = Path(sys.executable).parent / "issuer"


@pytest.fixture
def served(tmp_path: Path, idp: FakeIdP):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(ISSUER_URL=f"http://127.0.0.1:{port}", ISSUER_PORT=str(port), ISSUER_WORKERS="2",
               ISSUER_DATABASE_URL=f"sqlite:///{tmp_path}/issuer.db", ISSUER_KEYS_DIR=str(tmp_path / "keys"),
               ISSUER_ALLOW_INSECURE_LOOPBACK="true", ISSUER_REFRESH_INTERVAL="0")

    def run(*args: str, stdin: str | None = None) -> str:
        res = subprocess.run([str(BIN), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    run("init")
    proc = subprocess.Popen([str(BIN), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield base, run, tmp_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_cli_configured_gunicorn_issuer_exchanges(served, idp: FakeIdP) -> None:  # type: ignore[no-untyped-def]
    base, run, tmp_path = served
    run("idp", "add", "idp-a", "--issuer", idp.issuer, "--alg", "ES256")  # keys found by discovery
    run("tool", "add", "tickets", "--resource", "https://tickets.example", "--scope", "tickets:read")
    out = run("client", "add", "mcp-helpdesk", "--resource", "https://mcp.helpdesk.example", "--tool", "tickets")
    secret = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("client_secret: "))
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("rules:\n  - id: r1\n    idp: idp-a\n    groups: [support]\n    clients: [mcp-helpdesk]\n"
                           "    tool: tickets\n    scopes: [tickets:read]\n")
    assert "policy version 1" in run("policy", "apply", str(policy_file))
    resp = httpx.post(base + "/token", auth=("mcp-helpdesk", secret), data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": idp.token(), "subject_token_type": ACCESS_TOKEN,
        "resource": "https://tickets.example", "scope": "tickets:read"})
    assert resp.status_code == 200, resp.text
    jwks = httpx.get(base + "/jwks.json").json()
    token = resp.json()["access_token"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"]))
    claims = jwt.decode(token, key, algorithms=["ES256"], audience="https://tickets.example", issuer=base)
    assert claims["sub"] == "idp-a:alice" and claims["act"] == {"sub": "mcp-helpdesk"}


def test_serve_before_init_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(ISSUER_DATABASE_URL=f"sqlite:///{tmp_path}/issuer.db", ISSUER_KEYS_DIR=str(tmp_path / "keys"))
    res = subprocess.run([str(BIN), "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    [line] = res.stderr.splitlines()
    assert line.startswith("error: ") and "issuer init" in line


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    """Workers bind with SO_REUSEPORT; without the up-front check they would quietly share a port that
    another server already listens on, and take half its traffic."""
    import socket

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(ISSUER_DATABASE_URL=f"sqlite:///{tmp_path}/issuer.db", ISSUER_KEYS_DIR=str(tmp_path / "keys"),
               ISSUER_URL=f"http://127.0.0.1:{port}", ISSUER_PORT=str(port))
    assert subprocess.run([str(BIN), "init"], env=env, capture_output=True, timeout=60).returncode == 0
    for reuse_port in (False, True):
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
            other.bind(("127.0.0.1", port))
            other.listen()
            res = subprocess.run([str(BIN), "serve"], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2
        [line] = res.stderr.splitlines()
        assert line.startswith("error: ") and f"cannot listen on 127.0.0.1:{port}" in line


def test_metrics_sum_over_gunicorn_workers(served, idp: FakeIdP) -> None:  # type: ignore[no-untyped-def]
    base = served[0]
    for _ in range(6):  # refused exchanges are decisions too; several land on each worker
        httpx.post(base + "/token", auth=("nobody", "nothing-at-all-here"),
                   data={"grant_type": TOKEN_EXCHANGE, "subject_token": "x", "subject_token_type": ACCESS_TOKEN})
    text = httpx.get(base + "/metrics").text
    line = next(x for x in text.splitlines()
                if x.startswith("issuer_exchanges_total{") and 'reason="invalid_client"' in x)
    assert float(line.rsplit(" ", 1)[1]) == 6.0
    assert "issuer_exchange_seconds_bucket" in text


def test_logs_are_json_with_the_request_id(tmp_path: Path, idp: FakeIdP) -> None:
    """A failing JWKS fetch is logged as one JSON line that carries the request's id (and no token)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(ISSUER_URL=f"http://127.0.0.1:{port}", ISSUER_PORT=str(port), ISSUER_WORKERS="1",
               ISSUER_DATABASE_URL=f"sqlite:///{tmp_path}/issuer.db", ISSUER_KEYS_DIR=str(tmp_path / "keys"),
               ISSUER_ALLOW_INSECURE_LOOPBACK="true", ISSUER_REFRESH_INTERVAL="0")

    def run(*args: str) -> str:
        res = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    run("init")
    run("idp", "add", "idp-a", "--issuer", idp.issuer, "--jwks-uri", f"http://127.0.0.1:{free_port()}/jwks.json",
        "--alg", "ES256")
    run("tool", "add", "tickets", "--resource", "https://tickets.example", "--scope", "tickets:read")
    out = run("client", "add", "mcp-helpdesk", "--resource", "https://mcp.helpdesk.example", "--tool", "tickets")
    secret = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("client_secret: "))
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(BIN), "serve"], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        token = idp.token()
        resp = httpx.post(f"http://127.0.0.1:{port}/token", auth=("mcp-helpdesk", secret),
                          headers={"X-Request-Id": "req-log-check-1"},
                          data={"grant_type": TOKEN_EXCHANGE, "subject_token": token,
                                "subject_token_type": ACCESS_TOKEN, "resource": "https://tickets.example"})
        assert resp.status_code == 503  # the provider's keys cannot be had: a dependency failed
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    import json

    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    fetch = [x for x in lines if "jwks fetch" in x.get("event", "")]
    assert fetch and fetch[0]["request_id"] == "req-log-check-1" and fetch[0]["level"] == "warning"
    assert token not in log.read_text() and secret not in log.read_text()


def test_two_issuer_processes_share_one_rate_budget_through_redis(tmp_path: Path, idp: FakeIdP) -> None:
    from tests.conftest import need_service

    redis_url = need_service("ISSUER_TEST_REDIS_URL", "Redis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(ISSUER_DATABASE_URL=f"sqlite:///{tmp_path}/issuer.db", ISSUER_KEYS_DIR=str(tmp_path / "keys"),
               ISSUER_ALLOW_INSECURE_LOOPBACK="true", ISSUER_REFRESH_INTERVAL="0", ISSUER_WORKERS="1",
               ISSUER_REDIS_URL=redis_url, ISSUER_RATE_LIMIT="4/minute")

    def run(*args: str) -> str:
        res = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    run("init")
    run("idp", "add", "idp-a", "--issuer", idp.issuer, "--alg", "ES256")
    run("tool", "add", "tickets", "--resource", "https://tickets.example", "--scope", "tickets:read")
    out = run("client", "add", "mcp-helpdesk", "--resource", "https://mcp.helpdesk.example", "--tool", "tickets")
    secret = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("client_secret: "))
    (tmp_path / "p.yaml").write_text("rules:\n  - id: r\n    idp: idp-a\n    groups: [support]\n"
                                     "    clients: [mcp-helpdesk]\n    tool: tickets\n    scopes: [tickets:read]\n")
    run("policy", "apply", str(tmp_path / "p.yaml"))
    procs, bases = [], []
    try:
        for _ in range(2):
            port = free_port()
            procs.append(subprocess.Popen(
                [str(BIN), "serve"], env={**env, "ISSUER_PORT": str(port), "ISSUER_URL": f"http://127.0.0.1:{port}"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            bases.append(f"http://127.0.0.1:{port}")
        for base in bases:
            for _ in range(300):
                try:
                    if httpx.get(base + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
        sub = f"shared-{time.time_ns()}"  # a fresh identity: Redis keeps its windows between runs
        codes = []
        for i in range(6):
            resp = httpx.post(bases[i % 2] + "/token", auth=("mcp-helpdesk", secret), data={
                "grant_type": TOKEN_EXCHANGE, "subject_token": idp.token(sub=sub), "subject_token_type": ACCESS_TOKEN,
                "resource": "https://tickets.example"})
            codes.append(resp.status_code)
        assert codes == [200, 200, 200, 200, 429, 429]  # one budget of 4, spent alternately on both processes
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=20)
