"""Part two of ``issuer demo``: the same story through the MCP gateway, in front of an MCP server that cannot
exchange tokens itself.

The helpdesk MCP server here (:mod:`.gated_mcp`) holds its data and has no
client registration: it only accepts capabilities. The gateway in front of
it is the policy point: every tool call is a call-bound exchange at the
issuer, lists are filtered, and the server receives a capability naming the
user instead of the user's token. Each outcome is checked like part one's.
"""

from __future__ import annotations

import asyncio
import hashlib
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import mcp_types
from mcp.shared.exceptions import MCPError

from ..gateway import Gateway, GatewayConfig
from .dev_idp import DevIdentityProvider
from .gated_mcp import GATED_PATH, GatedHelpdesk
from .local_issuer import LocalIssuer
from .model import mcp_session
from .servers import BackgroundAsgi
from .transcript import Transcript
from .world import GATED_RESOURCE, GATEWAY_CLIENT_ID, GATEWAY_RESOURCE, IDP_NAME, USERS

__all__ = ["GatewayStage", "play_gateway", "start_gateway"]


@dataclass
class GatewayStage:
    idp: DevIdentityProvider
    issuer: LocalIssuer
    helpdesk: GatedHelpdesk
    mcp_url: str
    gateway_url: str


def start_gateway(stack: ExitStack, idp: DevIdentityProvider, issuer: LocalIssuer, secret: str) -> GatewayStage:
    helpdesk = GatedHelpdesk(issuer.url)
    stack.callback(helpdesk.close)
    mcp = BackgroundAsgi(helpdesk.app())
    stack.callback(mcp.close)
    config = GatewayConfig(upstream=mcp.url + GATED_PATH, resource=GATEWAY_RESOURCE, issuer=issuer.url,
                           upstream_resource=GATED_RESOURCE, client_id=GATEWAY_CLIENT_ID, client_secret=secret,
                           authorization_server=idp.issuer)
    front = BackgroundAsgi(Gateway(config))
    stack.callback(front.close)
    return GatewayStage(idp, issuer, helpdesk, mcp.url + GATED_PATH, front.url + config.path)


def play_gateway(stage: GatewayStage, t: Transcript, number: str) -> None:
    t.step(number, "The same story through the MCP gateway, in front of an MCP server that holds its data itself "
                   "and has no exchange of its own (it accepts capabilities only)")
    tokens = asyncio.run(_story(stage, t))
    _no_token(stage, t)
    _what_the_server_saw(stage, t, tokens)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _story(stage: GatewayStage, t: Transcript) -> list[str]:
    alice, mallory = USERS["alice"], USERS["mallory"]
    alice_token = stage.idp.token(alice, GATEWAY_RESOURCE)
    mallory_token = stage.idp.token(mallory, GATEWAY_RESOURCE)
    async with mcp_session(stage.gateway_url, alice_token) as session:
        await _list(t, session, "alice", ["list_tickets", "read_file"],
                    "alice sees list_tickets and read_file only (delete_ticket is granted to nobody)")
        await _call(stage, t, session, "alice", "list_tickets", {"project": "apollo"}, None,
                    "granted; the MCP server runs it for dev-idp:alice, acting: mcp-gateway")
        await _call(stage, t, session, "alice", "read_file", {"path": "/home/alice/../bob/salary.txt"},
                    "argument_refused", "refused by the gateway: argument path is outside its constraint; "
                    "nothing reaches the MCP server", injected=True)
    async with mcp_session(stage.gateway_url, mallory_token) as session:
        await _list(t, session, "mallory", [], "mallory sees no tool at all")
        await _call(stage, t, session, "mallory", "list_tickets", {"project": "hr"}, "not_permitted",
                    "refused by the gateway: list_tickets is not permitted for mallory; nothing reaches the MCP server")
    return [alice_token, mallory_token]


async def _list(t: Transcript, session: Any, user: str, expected: list[str], text: str) -> None:
    t.action(f"{user}'s client asks for the tool list")
    names = sorted(tool.name for tool in (await session.list_tools()).tools)
    t.detail("answer", ", ".join(names) if names else "(no tools)")
    t.outcome(names == expected, text, f"the list was {names}")


async def _call(stage: GatewayStage, t: Transcript, session: Any, user: str, tool: str, arguments: dict[str, Any],
                refusal: str | None, text: str, injected: bool = False) -> None:
    args = ", ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in arguments.items())
    mark = "   <- the instruction hidden in the pasted document" if injected else ""
    t.action(f"model calls {tool}({args}) for {user}{mark}")
    head = stage.issuer.audit_rows()
    head_id = head[-1].id if head else 0
    seen_before = len(stage.helpdesk.seen)
    problems: list[str] = []
    try:
        result: mcp_types.CallToolResult = await session.call_tool(tool, arguments)
    except MCPError as e:
        reason = (e.error.data or {}).get("reason") if isinstance(e.error.data, dict) else None
        t.detail("answer", f"JSON-RPC error {e.error.code}: {e.error.message} (reason {reason})")
        if refusal is None:
            problems.append(f"it was refused: {e.error.message}")
        elif reason != refusal:
            problems.append(f"the refusal was {reason}: {e.error.message}")
    else:
        body = result.structured_content or {}
        t.detail("answer", f"{len(body.get('tickets', []))} ticket(s) in {body.get('project')}"
                 if "tickets" in body else str(body)[:120])
        if refusal is not None or result.is_error:
            problems.append(f"it was answered: {str(body)[:120]}")
    rows = stage.issuer.audit_rows(after_id=head_id)
    for row in rows:
        t.detail("audit", f"{row.decision} ({row.reason}) by rule {row.rule_id or '-'}, policy v{row.policy_version}")
    ran = stage.helpdesk.seen[seen_before:]
    t.detail("server", ", ".join(f"ran {c.tool} for {c.sub}, acting: {c.actor}" for c in ran) if ran
             else "nothing ran")
    if refusal is None and [(c.sub, c.actor) for c in ran] != [(f"{IDP_NAME}:{user}", GATEWAY_CLIENT_ID)]:
        problems.append(f"the MCP server ran {[(c.tool, c.sub, c.actor) for c in ran]}")
    if refusal is not None and ran:
        problems.append("the call reached the MCP server")
    expected_rows = [("granted", "granted")] if refusal is None else [("denied", r.reason) for r in rows[:1]]
    if [(r.decision, r.reason) for r in rows] != expected_rows or not rows:
        problems.append(f"the audit trail recorded {[(r.decision, r.reason) for r in rows]}")
    t.outcome(not problems, text, "; ".join(problems))


def _no_token(stage: GatewayStage, t: Transcript) -> None:
    t.action("a client without a token sends tools/list to the gateway")
    resp = httpx.post(stage.gateway_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, trust_env=False,
                      headers={"Accept": "application/json, text/event-stream"}, timeout=10)
    challenge = resp.headers.get("WWW-Authenticate", "")
    t.detail("answer", f"HTTP {resp.status_code}, WWW-Authenticate: {challenge}")
    t.outcome(resp.status_code == 401 and "resource_metadata=" in challenge,
              "HTTP 401 naming the RFC 9728 resource metadata (where to get a token for the gateway)",
              f"HTTP {resp.status_code} {challenge}")


def _what_the_server_saw(stage: GatewayStage, t: Transcript, tokens: list[str]) -> None:
    seen = stage.helpdesk.bearer_digests
    users = sorted({c.sub for c in stage.helpdesk.seen})
    leaked = [tok for tok in tokens if _digest(tok) in seen]
    t.detail("server", f"received {len(seen)} distinct bearer token(s), all capabilities; users it served: "
                       f"{', '.join(users)}")
    t.outcome(not leaked and users == [f"{IDP_NAME}:alice"],
              "the MCP server served only dev-idp:alice and never received a user's own token",
              f"{len(leaked)} user token(s) reached it; it served {users}")
