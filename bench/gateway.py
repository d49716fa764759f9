"""The MCP gateway's cost: a ``tools/call`` through the gateway against the same call made directly.

Three processes, as an operator runs them: ``issuer serve`` (SQLite,
in-process rate limits), an MCP server built with the official ``mcp`` SDK
that accepts capabilities (:class:`issuer.demo.gated_mcp.GatedHelpdesk`,
under uvicorn), and ``issuer gateway`` in front of it. The load generator
speaks MCP Streamable HTTP with plain keep-alive HTTP (one session each way,
JSON responses), so its own cost is small and the same on both paths.

*direct*: the client holds a capability for the MCP server (a session
capability from one exchange) and calls it itself, as a deployment without
the gateway would. *gateway*: the client sends the user's token to the
gateway, which makes a call-bound exchange at the issuer for every call
(never cached: it depends on the arguments) and forwards the call with the
capability. Figures:

* latency, one call at a time, direct and gateway interleaved in blocks so
  a disturbance hits both: p50/p99 of each and the added p50/p99;
* the same for ``tools/list`` (gateway: the user's cached session grant and
  the list filter, no issuer round trip): the proxy's own cost;
* the call-bound exchange alone (``POST /token``), with the client SDK and as
  the gateway makes it, to show how much of the added latency is the
  issuer's decision;
* calls per second with 8 concurrent clients, direct and through the gateway.

Run alone: ``.venv/bin/python -m bench.gateway [--calls N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from . import server, stats

__all__ = ["format_table", "main", "run"]

GATEWAY_RESOURCE = "https://gateway.bench.example/mcp"
IDP_ISSUER = "https://idp.bench.example"
POLICY = """
rules:
  - id: tickets
    idp: bench-idp
    groups: [support]
    clients: [mcp-gateway]
    tool: helpdesk-tools
    scopes: [mcp:connect, tool:list_tickets]
    constraints:
      project: {max_length: 40}
"""
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "list_tickets", "arguments": {"project": "apollo"}}}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _register(issuer: server.IssuerProcess, public_jwk: dict[str, Any], secret: str) -> None:
    from issuer.db import Database
    from issuer.demo.gated_mcp import GATED_RESOURCE
    from issuer.keys import KeyStore
    from issuer.registry import ScopeSpec, add_client, add_idp, add_tool, apply_policy

    pepper = KeyStore(issuer.keys_dir, retention=3600, refresh_interval=0).pepper()
    db = Database(issuer.storage.database_url, pool_size=1)
    try:
        add_idp(db, name="bench-idp", issuer=IDP_ISSUER, jwks={"keys": [public_jwk]}, algorithms=("ES256",),
                attribute_claims=("projects",), discover=False)
        add_tool(db, name="helpdesk-tools", resource_uri=GATED_RESOURCE,
                 scopes=[ScopeSpec("mcp:connect"), ScopeSpec("tool:list_tickets", actions=("list_tickets",))])
        add_client(db, client_id="mcp-gateway", resource_uri=GATEWAY_RESOURCE, tools=["helpdesk-tools"],
                   pepper=pepper, secret=secret)
        apply_policy(db, POLICY, source="bench/gateway.py", created_by="bench")
    finally:
        db.dispose()


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 (loopback)
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f}s")


class Session:
    """One MCP session over keep-alive HTTP: initialize, then calls; JSON responses only."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=30, headers={**HEADERS, "Authorization": f"Bearer {token}"},
                                 trust_env=False)
        init = self.http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
        if init.status_code != 200:
            raise RuntimeError(f"initialize at {url} answered {init.status_code}: {init.text[:200]}")
        self.http.headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
        self.http.headers["MCP-Protocol-Version"] = "2025-11-25"
        self.http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, message: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        resp = self.http.post(self.url, content=json.dumps(message))
        elapsed = time.perf_counter() - t0
        body = resp.json()
        if resp.status_code != 200 or "error" in body or body.get("result", {}).get("isError"):
            raise RuntimeError(f"{message['method']} at {self.url} failed: {resp.status_code} {resp.text[:300]}")
        return elapsed

    def close(self) -> None:
        self.http.close()


def _latency(direct: Session, gateway: Session, message: dict[str, Any], n: int) -> dict[str, Any]:
    d: list[float] = []
    g: list[float] = []
    for _ in range(max(1, n // 50)):  # interleaved blocks of 50
        d += [direct.send(message) for _ in range(50)]
        g += [gateway.send(message) for _ in range(50)]
    d.sort()
    g.sort()
    out = {"direct": stats.summarise(d), "gateway": stats.summarise(g), "n": len(d)}
    out["added_p50_ms"] = out["gateway"]["p50_ms"] - out["direct"]["p50_ms"]
    out["added_p99_ms"] = out["gateway"]["p99_ms"] - out["direct"]["p99_ms"]
    return out


def _throughput(url: str, token: str, seconds: float, clients: int) -> float:
    sessions = [Session(url, token) for _ in range(clients)]
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def work(i: int) -> None:
        while time.monotonic() < stop:
            sessions[i].send(CALL)
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = sum(counts) / (time.monotonic() - t0)
    for s in sessions:
        s.close()
    return rate


def _exchange_latency(issuer_url: str, token: str, secret: str, n: int) -> dict[str, float]:
    from issuer.demo.gated_mcp import GATED_RESOURCE
    from issuer.sdk.client import ClientSecret, ExchangeClient

    client = ExchangeClient(issuer=issuer_url, client_id="mcp-gateway", credentials=ClientSecret(secret),
                            allow_insecure_loopback=True, max_cache_entries=0)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.exchange(token, tool=GATED_RESOURCE, scope="tool:list_tickets", actions=["list_tickets"],
                        arguments={"project": "apollo"})
        times.append(time.perf_counter() - t0)
    return stats.summarise(sorted(times))


def _exchange_latency_async(issuer_url: str, token: str, secret: str, n: int) -> dict[str, float]:
    """The same exchange as the gateway makes it: from an event loop, over a kept-alive connection."""
    import asyncio

    from issuer.demo.gated_mcp import GATED_RESOURCE
    from issuer.gateway.exchange import AsyncExchange

    async def go() -> list[float]:
        client = AsyncExchange(issuer=issuer_url, client_id="mcp-gateway", secret=secret, timeout=5)
        times = []
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                await client.exchange(token, tool=GATED_RESOURCE, scope="tool:list_tickets", actions=["list_tickets"],
                                      arguments={"project": "apollo"})
                times.append(time.perf_counter() - t0)
        finally:
            await client.aclose()
        return times

    return stats.summarise(sorted(asyncio.run(go())))


def run(calls: int = 1000, seconds: float = 5.0, clients: int = 8) -> dict[str, Any]:
    from issuer.demo.gated_mcp import GATED_RESOURCE
    from issuer.sdk.client import ClientSecret, ExchangeClient

    workdir = server.make_workdir()
    issuer = server.IssuerProcess(server.sqlite_storage(workdir), workdir)
    procs: list[subprocess.Popen[bytes]] = []
    sessions: list[Session] = []
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": "bench-1", "alg": "ES256"}
    secret = secrets.token_urlsafe(32)
    python = sys.executable
    try:
        issuer.init()
        _register(issuer, jwk, secret)
        issuer.start()
        now = int(time.time())
        token = jwt.encode({"iss": IDP_ISSUER, "sub": "alice", "aud": GATEWAY_RESOURCE, "iat": now,
                            "exp": now + 3600, "groups": ["support"], "projects": ["apollo"]},
                           key, algorithm="ES256", headers={"kid": "bench-1"})
        mcp_port, gw_port = server.free_port(), server.free_port()
        log = (workdir / "servers.log").open("wb")
        procs.append(subprocess.Popen([python, "-m", "bench.gateway", "mcp-server", "--issuer", issuer.url,
                                       "--port", str(mcp_port)], stdout=log, stderr=log, start_new_session=True))
        env = {**os.environ, "GATEWAY_CLIENT_SECRET": secret}
        procs.append(subprocess.Popen([issuer.issuer_bin, "gateway", "--upstream", f"http://127.0.0.1:{mcp_port}/mcp",
                                       "--resource", GATEWAY_RESOURCE, "--issuer", issuer.url,
                                       "--upstream-resource", GATED_RESOURCE, "--listen", f"127.0.0.1:{gw_port}"],
                                      env=env, stdout=log, stderr=log, start_new_session=True))
        log.close()
        _wait(f"http://127.0.0.1:{mcp_port}/healthz", procs[0], "the MCP server")
        _wait(f"http://127.0.0.1:{gw_port}/healthz", procs[1], "the gateway")
        # Direct: the capability a deployment without the gateway would hold (one exchange, reused).
        capability = ExchangeClient(issuer=issuer.url, client_id="mcp-gateway", credentials=ClientSecret(secret),
                                    allow_insecure_loopback=True).exchange(
            token, tool=GATED_RESOURCE, scope="tool:list_tickets").access_token
        direct = Session(f"http://127.0.0.1:{mcp_port}/mcp", capability)
        gateway = Session(f"http://127.0.0.1:{gw_port}/mcp", token)
        sessions += [direct, gateway]
        for s in (direct, gateway):  # warm-up: connections, JWKS, caches
            for _ in range(50):
                s.send(CALL)
                s.send(LIST)
        result: dict[str, Any] = {
            "tools_call": _latency(direct, gateway, CALL, calls),
            "tools_list": _latency(direct, gateway, LIST, calls),
            "exchange_alone": _exchange_latency(issuer.url, token, secret, max(100, calls // 4)),
            "exchange_keepalive": _exchange_latency_async(issuer.url, token, secret, max(100, calls // 4)),
            "clients": clients,
            "calls_per_s": {"direct": _throughput(direct.url, capability, seconds, clients),
                            "gateway": _throughput(gateway.url, token, seconds, clients)},
        }
        return result
    finally:
        for s in sessions:
            s.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        issuer.stop()
        server.remove_workdir(workdir)


def format_table(r: dict[str, Any]) -> str:
    lines = ["gateway            direct p50   p99 | gateway p50   p99 | added p50   p99 ms"]
    for name in ("tools_call", "tools_list"):
        x = r[name]
        lines.append(f"  {name:<16} {x['direct']['p50_ms']:9.2f} {x['direct']['p99_ms']:5.2f} | "
                     f"{x['gateway']['p50_ms']:11.2f} {x['gateway']['p99_ms']:5.2f} | "
                     f"{x['added_p50_ms']:9.2f} {x['added_p99_ms']:5.2f}")
    e = r["exchange_alone"]
    lines.append(f"  call-bound exchange alone (POST /token): p50 {e['p50_ms']:.2f} ms, p99 {e['p99_ms']:.2f} ms "
                 "(client SDK, a connection per request)")
    k = r.get("exchange_keepalive")
    if k:
        lines.append(f"  the same as the gateway makes it (event loop, kept-alive connection): "
                     f"p50 {k['p50_ms']:.2f} ms, p99 {k['p99_ms']:.2f} ms")
    c = r["calls_per_s"]
    lines.append(f"  tools/call per second, {r['clients']} clients: direct {c['direct']:.0f}, "
                 f"gateway {c['gateway']:.0f}")
    return "\n".join(lines)


def _serve_mcp(issuer_url: str, port: int) -> None:
    import uvicorn

    from issuer.demo.gated_mcp import GatedHelpdesk

    mcp_app = GatedHelpdesk(issuer_url).app(json_response=True)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await mcp_app(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    mcp = sub.add_parser("mcp-server", help="(internal) the MCP server under test")
    mcp.add_argument("--issuer", required=True)
    mcp.add_argument("--port", type=int, required=True)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args(argv)
    if a.cmd == "mcp-server":
        _serve_mcp(a.issuer, a.port)
        return 0
    print(format_table(run(a.calls, a.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
