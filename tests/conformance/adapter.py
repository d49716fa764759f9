"""Adapter for the external wire-contract suite (../shared/conformance).

It starts this project's issuer with its own CLI, exactly as an admin would:
``issuer init``, ``issuer serve`` (gunicorn), then ``idp add``, ``tool add``,
``client add`` and ``policy apply``. The suite imports this file by path and
runs in its own virtual environment, so only the standard library is used here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["apply_policy", "cli", "register_client", "register_idp", "register_tool", "start_issuer", "stop_issuer"]

ROOT = Path(__file__).resolve().parents[2]
ISSUER_BIN = ROOT / ".venv" / "bin" / "issuer"
_state: dict[str, Any] = {"proc": None, "env": None, "workdir": None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(ISSUER_BIN), *args], env=_state["env"], input=stdin, capture_output=True,
                         text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"issuer {' '.join(args[:2])} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def start_issuer(workdir: Path) -> str:
    if not ISSUER_BIN.exists():
        raise RuntimeError(f"{ISSUER_BIN} missing: run `make test` (or `make run`) first")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(
        ISSUER_URL=base,
        ISSUER_DATABASE_URL=f"sqlite:///{workdir}/issuer.db",
        ISSUER_KEYS_DIR=str(workdir / "keys"),
        ISSUER_ALLOW_INSECURE_LOOPBACK="true",  # the suite's fake IdP serves http on 127.0.0.1
        ISSUER_PORT=str(port),
        ISSUER_REFRESH_INTERVAL="0.2",
        ISSUER_RATE_LIMIT="100000/minute",  # the suite drives hundreds of users at several exchanges a second
    )
    _state.update(env=env, workdir=workdir)
    _run("init")
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    _state["proc"] = subprocess.Popen([str(ISSUER_BIN), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _state["proc"].poll() is not None:
            raise RuntimeError(f"issuer serve exited: {(workdir / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/.well-known/oauth-authorization-server", timeout=2) as r:
                if r.status == 200:
                    return base
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("issuer did not answer within 30 s")


def register_idp(name: str, issuer: str, jwks_uri: str, audiences: list[str], groups_claim: str = "groups") -> None:
    # `audiences` needs no registration: a user token is exchangeable only by the client whose
    # resource URI its `aud` names, and each client registers its own resource URI.
    _run("idp", "add", name, "--issuer", issuer, "--jwks-uri", jwks_uri, "--groups-claim", groups_claim,
         "--alg", "ES256", "--alg", "RS256")


def register_tool(name: str, resource_uri: str, scopes: list[str]) -> None:
    _run("tool", "add", name, "--resource", resource_uri, *[a for s in scopes for a in ("--scope", s)])


def register_client(
    client_id: str,
    client_secret: str,
    tools: list[str],
    resource_uri: str,
    auth_methods: tuple[str, ...] = ("client_secret_basic", "client_secret_post"),
    may_chain: bool = False,
) -> None:
    args = ["client", "add", client_id, "--resource", resource_uri, "--secret-stdin"]
    args += [a for t in tools for a in ("--tool", t)]
    args += [a for m in auth_methods for a in ("--auth-method", m)]
    if may_chain:
        args.append("--may-chain")
    _run(*args, stdin=client_secret + "\n")


def apply_policy(policy: dict[str, Any]) -> None:
    rules = []
    for r in policy["rules"]:
        rule: dict[str, Any] = {"id": r["id"], "clients": r["clients"], "tool": r["tool"], "scopes": r["scopes"]}
        if r.get("idp"):
            rule["idp"] = r["idp"]
        match = r.get("match") or {}
        if match.get("groups"):
            rule["groups"] = match["groups"]
        if match.get("subjects"):
            rule["subjects"] = match["subjects"]
        if not match:
            rule["everyone"] = True
        for k in ("actions", "constraints"):
            if r.get(k):
                rule[k] = r[k]
        rules.append(rule)
    path = Path(_state["workdir"]) / "policy.json"
    path.write_text(json.dumps({"default": "deny", "rules": rules}, indent=2))
    _run("policy", "apply", str(path), "--by", "conformance")


def stop_issuer() -> None:
    proc = _state.get("proc")
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
    _state["proc"] = None


def cli(*args: str) -> tuple[int, str, str]:
    res = subprocess.run([str(ISSUER_BIN), *args], env=_state["env"], capture_output=True, text=True, timeout=60)
    return res.returncode, res.stdout, res.stderr
