"""Replicas behind a load balancer share nothing but the session key: a session opened on one works on another."""

from __future__ import annotations

import dataclasses
import secrets

from issuer.demo.servers import BackgroundAsgi
from issuer.gateway import Gateway
from tests.gateway.conftest import Raw, World, messages

LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def test_a_session_moves_between_replicas_with_the_same_key_only(world: World, raw: Raw) -> None:
    same = BackgroundAsgi(Gateway(world.gateway.config))
    other_key = dataclasses.replace(world.gateway.config, session_key=secrets.token_bytes(32))
    other = BackgroundAsgi(Gateway(other_key))
    try:
        alice = world.token()
        sid = raw.initialize(alice)  # on the first replica
        h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        moved = raw.post(LIST, alice, headers=h, url=f"{same.url}/mcp")
        assert moved.status_code == 200 and messages(moved)[0]["result"]["tools"]
        stranger = raw.post(LIST, alice, headers=h, url=f"{other.url}/mcp")
        assert stranger.status_code == 404
    finally:
        same.close()
        other.close()
