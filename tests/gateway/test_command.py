"""`issuer gateway`: one-line errors on bad input, and the real command serving under uvicorn."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from issuer.cli import cli
from tests.conftest import free_port

ISSUER = str(Path(sys.executable).with_name("issuer"))
BASE = ["gateway", "--upstream", "http://127.0.0.1:8082/mcp", "--resource", "https://gw.example/mcp",
        "--issuer", "http://127.0.0.1:8000", "--upstream-resource", "https://files-mcp.example"]


@pytest.mark.parametrize(("change", "env", "message"), [
    (["--upstream", "http://mcp.internal/mcp"], {"GATEWAY_CLIENT_SECRET": "s"},
     "error: --upstream 'http://mcp.internal/mcp' must use https (plain http only to a loopback address)"),
    (["--issuer", "ftp://issuer"], {"GATEWAY_CLIENT_SECRET": "s"}, "error: --issuer 'ftp://issuer' must use https"),
    ([], {}, "error: the client secret is missing: set GATEWAY_CLIENT_SECRET"),
    (["--listen", "8090"], {"GATEWAY_CLIENT_SECRET": "s"}, "error: --listen '8090': expected HOST:PORT"),
    (["--resource", "not-a-uri"], {"GATEWAY_CLIENT_SECRET": "s"}, "error: --resource 'not-a-uri' must be an absolute"),
    ([], {"GATEWAY_CLIENT_SECRET": "s", "GATEWAY_SESSION_KEY": "short"},
     "error: GATEWAY_SESSION_KEY must be at least 32 bytes"),
])
def test_bad_input_is_one_line_and_exit_2(change: list[str], env: dict[str, str], message: str) -> None:
    result = CliRunner().invoke(cli, BASE + change, env={"GATEWAY_CLIENT_SECRET": "", **env})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_help() -> None:
    result = CliRunner().invoke(cli, ["gateway", "--help"])
    assert result.exit_code == 0 and "--upstream-resource" in result.stdout


def test_the_command_serves_under_uvicorn() -> None:
    port = free_port()
    env = {**os.environ, "GATEWAY_CLIENT_SECRET": "not-on-the-command-line"}
    proc = subprocess.Popen([ISSUER, *BASE, "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert health.json() == {"status": "ok"} and "server" not in health.headers
        meta = httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp").json()
        assert meta["resource"] == "https://gw.example/mcp"
        anonymous = httpx.post(f"http://127.0.0.1:{port}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert anonymous.status_code == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert b"not-on-the-command-line" not in err


def test_a_token_in_the_query_string_reaches_no_log_not_even_the_access_log() -> None:
    """uvicorn's access log writes the request line, query string included: the command logs the path only."""
    port = free_port()
    env = {**os.environ, "GATEWAY_CLIENT_SECRET": "not-on-the-command-line"}
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.query-string-secret"
    proc = subprocess.Popen([ISSUER, *BASE, "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        refused = httpx.post(f"http://127.0.0.1:{port}/mcp?access_token={token}", timeout=5,
                             json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert refused.status_code == 400
        assert httpx.get(f"http://127.0.0.1:{port}/healthz?access_token={token}", timeout=5).status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    logs = out.decode() + err.decode()
    assert '"POST /mcp HTTP/1.1" 400' in logs and '"GET /healthz HTTP/1.1" 200' in logs  # the access log is on
    assert "query-string-secret" not in logs and "access_token" not in logs
    assert '"event":"gateway.query_token"' in logs  # the refusal is audited, without the token
