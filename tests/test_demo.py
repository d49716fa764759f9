"""`issuer demo` end to end: the real command plays the scenario and exits 0; a policy that lets the
escape through makes it fail; the two compose subcommands serve /healthz."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from mcp.server.auth.provider import AccessToken

from issuer.cli import cli
from issuer.demo import scenario
from issuer.demo.dev_idp import DevIdentityProvider
from issuer.demo.mcp_server import UserTokenVerifier
from issuer.demo.world import DEMO_POLICY, MCP_RESOURCE, TICKETS_RESOURCE, USERS
from tests.conftest import free_port

ISSUER = str(Path(sys.executable).with_name("issuer"))
HOME_PREFIX = '    constraints:\n      path: {prefix: "/home/${sub}/"}\n'
# The demo policy with the home-directory constraint dropped: a file grant that trusts the MCP server's arguments.
PERMISSIVE = DEMO_POLICY.replace(HOME_PREFIX, "")


def audit_rows(output: str) -> list[list[str]]:
    """The audit table's data rows after the time, split into columns."""
    lines = output.split("Audit trail of this run", 1)[1].splitlines()[2:]
    return [line.split()[1:] for line in lines if re.match(r"^  \d\d:\d\d:\d\d ", line)]


def test_the_demo_plays_every_expected_outcome() -> None:
    # The user's own issuer settings (a `make run` in another shell) must not leak into the demo's issuer.
    env = {**os.environ, "ISSUER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
           "ISSUER_REDIS_URL": "redis://127.0.0.1:1", "ISSUER_KEYS_DIR": "/nonexistent"}
    run = subprocess.run([ISSUER, "demo"], capture_output=True, text=True, timeout=60, env=env)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert run.stderr == ""
    assert "DEVELOPMENT ONLY" in out

    step1 = out.split("\n1. ", 1)[1].split("\n2. ", 1)[0]
    assert 'model calls list_tickets(project="apollo") for alice' in step1
    assert "2 ticket(s) in apollo: #101" in step1 and "#3" not in step1
    assert "served:    to dev-idp:alice, acting: mcp-helpdesk, scopes tickets:read" in step1

    step2 = out.split("\n2. ", 1)[1].split("\n3. ", 1)[0]
    assert 'model calls list_tickets(project="hr") for mallory' in step2
    assert ("tool error: refused by the issuer: invalid_scope: argument project is outside the granted constraints"
            in step2)
    assert "audit:     denied (invalid_scope) by rule contractor-tickets, policy v1" in step2
    assert "upstream:  no request arrived" in step2

    step3 = out.split("\n3. ", 1)[1].split("\n4. ", 1)[0]
    injected = step3.split('read_file(path="/home/alice/../bob/salary.txt") for alice', 1)[1]
    assert injected.startswith("   <- the instruction hidden in the pasted document")
    assert ("tool error: refused by the issuer: invalid_scope: argument path is outside the granted constraints "
            "(prefix: contains a '.' or '..' segment)") in injected
    assert "audit:     denied (invalid_scope) by rule home-files" in injected
    assert "EUR 7,250" not in out  # bob's salary never reached anyone

    step4 = out.split("\n4. ", 1)[1].split("\n5. ", 1)[0]
    assert "HTTP 403 insufficient_scope: arguments not admitted: path prefix" in step4

    step5 = out.split("\n5. ", 1)[1].split("Audit trail", 1)[0]
    assert "alice's client asks for the tool list\n     answer:    list_tickets, read_file\n" in step5
    assert "server:    ran list_tickets for dev-idp:alice, acting: mcp-gateway" in step5
    assert "JSON-RPC error -32001: argument path is outside its constraint (reason argument_refused)" in step5
    assert "mallory's client asks for the tool list\n     answer:    (no tools)\n" in step5
    assert "JSON-RPC error -32001: list_tickets is not permitted for this user (reason not_permitted)" in step5
    assert "HTTP 401, WWW-Authenticate: Bearer resource_metadata=" in step5
    assert "the MCP server served only dev-idp:alice and never received a user's own token" in step5

    assert [r[:7] for r in audit_rows(out)] == [
        ["granted", "granted", "dev-idp:alice", "mcp-helpdesk", "tickets", "tickets:read", "v1"],
        ["denied", "invalid_scope", "dev-idp:mallory", "mcp-helpdesk", "tickets", "tickets:read", "v1"],
        ["granted", "granted", "dev-idp:alice", "mcp-helpdesk", "files", "files:read", "v1"],
        ["denied", "invalid_scope", "dev-idp:alice", "mcp-helpdesk", "files", "files:read", "v1"],
        ["granted", "granted", "dev-idp:alice", "mcp-helpdesk", "files", "files:read", "v1"],
        ["granted", "granted", "dev-idp:alice", "mcp-gateway", "helpdesk-tools", "mcp:connect", "tool:list_tickets"],
        ["granted", "granted", "dev-idp:alice", "mcp-gateway", "helpdesk-tools", "tool:list_tickets", "v1"],
        ["denied", "invalid_scope", "dev-idp:alice", "mcp-gateway", "helpdesk-tools", "tool:read_file", "v1"],
        ["granted", "granted", "dev-idp:mallory", "mcp-gateway", "helpdesk-tools", "mcp:connect", "v1"],
        ["denied", "scope_not_entitled", "dev-idp:mallory", "mcp-gateway", "helpdesk-tools", "tool:list_tickets", "v1"],
    ]
    assert "`issuer audit verify`: 10 records, every row tag intact" in out
    assert "UNEXPECTED" not in out
    assert out.rstrip().endswith("RESULT: all 13 expected outcomes happened.")


def test_a_demo_whose_outcome_does_not_happen_exits_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PERMISSIVE != DEMO_POLICY
    monkeypatch.setattr(scenario, "play", functools.partial(scenario.play, policy=PERMISSIVE))
    result = CliRunner().invoke(cli, ["demo"])
    out = result.stdout
    assert result.exit_code == 1, out
    assert result.stderr == "error: the demo did not go as expected (see RESULT above)\n"

    step3 = out.split("\n3. ", 1)[1].split("\n4. ", 1)[0]
    injected = step3.split("<- the instruction hidden in the pasted document", 1)[1]
    assert "answer:    /home/alice/../bob/salary.txt: bob: EUR 7,250 a month (confidential)" in injected
    assert "UNEXPECTED expected: refused by the issuer (invalid_scope)" in injected
    assert out.count("UNEXPECTED") == 3  # the injected read, the session capability, the audit trail
    assert "RESULT: FAILED: 3 of 13 outcomes were not as expected:" in out
    assert "  - step 3: expected refused by the issuer (invalid_scope): the path leaves /home/alice/" in out
    # The trail records what happened: the escape was granted.
    assert ["granted", "granted", "dev-idp:alice", "mcp-helpdesk", "files", "files:read", "v1", "home-files",
            '{"path":"/home/alice/../bob/salary.txt"}'] in audit_rows(out)


@pytest.fixture
def servers() -> Iterator[tuple[str, str]]:
    """`issuer demo upstream` and `issuer demo mcp-server` as docker-compose.yml runs them (no --idp), by DEMO_*."""
    up, mcp = free_port(), free_port()
    base = {**os.environ, "DEMO_ISSUER": "http://127.0.0.1:1", "DEMO_HOST": "127.0.0.1"}
    procs = [
        subprocess.Popen([ISSUER, "demo", "upstream"], env={**base, "DEMO_PORT": str(up)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([ISSUER, "demo", "mcp-server"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**base, "DEMO_PORT": str(mcp), "DEMO_UPSTREAM": f"http://127.0.0.1:{up}",
                              "DEMO_CLIENT_ID": "mcp-helpdesk", "DEMO_CLIENT_SECRET": "not-on-the-command-line"}),
    ]
    try:
        yield f"http://127.0.0.1:{up}", f"http://127.0.0.1:{mcp}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


def wait_healthy(url: str) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(f"{url}/healthz", timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_compose_subcommands_serve_healthz_and_demand_tokens(servers: tuple[str, str]) -> None:
    upstream, mcp = servers
    for url in servers:
        resp = wait_healthy(url)
        assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    # Neither lets anything through without a token: capabilities upstream, user tokens at the MCP server.
    tickets = httpx.get(f"{upstream}/tickets", params={"project": "apollo"})
    assert tickets.status_code == 401 and tickets.headers["WWW-Authenticate"].startswith("Bearer")
    initialize = httpx.post(f"{mcp}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                            headers={"Accept": "application/json, text/event-stream"})
    assert initialize.status_code == 401


def test_mcp_server_refuses_plain_http_to_a_remote_issuer() -> None:
    result = CliRunner().invoke(cli, ["demo", "mcp-server", "--issuer", "http://issuer.internal:8000",
                                      "--upstream", "http://127.0.0.1:1", "--idp", "http://127.0.0.1:2"],
                                env={"DEMO_CLIENT_SECRET": "x"})
    assert result.exit_code == 2
    assert result.stderr.startswith("error: issuer 'http://issuer.internal:8000' must use https")


# ----------------------------------------------------------------------------- the MCP server's check of user tokens


def access(verifier: UserTokenVerifier, token: str) -> AccessToken | None:
    return asyncio.run(verifier.verify_token(token))


def test_with_idp_the_mcp_server_checks_signature_issuer_and_audience() -> None:
    idp, other = DevIdentityProvider(), DevIdentityProvider()
    try:
        verifier = UserTokenVerifier(idp_issuer=idp.issuer, audience=MCP_RESOURCE)  # keys found by discovery
        alice = USERS["alice"]
        ok = access(verifier, idp.token(alice, MCP_RESOURCE))
        assert ok is not None and ok.subject == "alice" and ok.client_id == "demo-chat"
        assert access(verifier, idp.token(alice, TICKETS_RESOURCE)) is None  # for another audience
        assert access(verifier, other.token(alice, MCP_RESOURCE)) is None  # another provider
        head, payload, sig = idp.token(alice, MCP_RESOURCE).split(".")
        assert access(verifier, f"{head}.{payload}.{sig[::-1]}") is None
    finally:
        idp.close()
        other.close()


def test_without_idp_a_token_is_bound_to_its_session_and_left_to_the_issuer() -> None:
    idp = DevIdentityProvider()
    try:
        verifier = UserTokenVerifier(idp_issuer=None, audience=MCP_RESOURCE)
        token = idp.token(USERS["alice"], MCP_RESOURCE)
        ok = access(verifier, token)
        # The principal is the exact token, so a forged token claiming sub=alice cannot join alice's session.
        assert ok is not None and ok.client_id == "unverified-token:" + hashlib.sha256(token.encode()).hexdigest()
        assert access(verifier, idp.token(USERS["alice"], TICKETS_RESOURCE)) is None
        assert access(verifier, idp.token(USERS["alice"], MCP_RESOURCE, lifetime=-60)) is None
    finally:
        idp.close()
