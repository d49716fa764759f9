"""DPoP end to end over real HTTP: the exchange client SDK binds a capability to its key at the issuer, and a
real upstream tool (the verifier SDK's Flask decorator on a socket) admits it only with a proof of that key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import httpx
import jwt
import pytest
from werkzeug.serving import make_server

from issuer.dpop import access_token_hash
from issuer.sdk.client import ClientSecret, DPoPKey, ExchangeClient
from issuer.sdk.client.httpx_auth import CapabilityAuth
from issuer.sdk.verifier import CapabilityVerifier
from issuer.sdk.verifier.flask import CapabilityProtect
from tests.conftest import LiveIssuer, free_port, make_settings
from tests.dpop.test_proof import Holder
from tests.support.fake_idp import FakeIdP

TICKETS = "https://tickets.example"


class Tool:
    """The tickets tool on 127.0.0.1: its capabilities' audience is its resource URI, its URL is local."""

    def __init__(self, issuer: str) -> None:
        self.verifier = CapabilityVerifier(issuer=issuer, audience=TICKETS, allow_insecure_loopback=True,
                                           revocation_poll_interval=30)
        app = flask.Flask(__name__)

        @app.get("/tickets")
        @CapabilityProtect(self.verifier)("tickets:read")
        def tickets() -> dict[str, Any]:
            cap = flask.g.capability
            return {"user": cap.sub, "bound": cap.dpop_jkt}

        port = free_port()
        self.url = f"http://127.0.0.1:{port}/tickets"
        self._server = make_server("127.0.0.1", port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self.verifier.close()


@pytest.fixture
def tool(live: LiveIssuer) -> Iterator[Tool]:
    t = Tool(live.url)
    yield t
    t.close()


def _client(live: LiveIssuer, **kw: Any) -> ExchangeClient:
    return ExchangeClient(issuer=live.url, client_id="mcp-helpdesk", credentials=ClientSecret(
        live.secrets["mcp-helpdesk"]), allow_insecure_loopback=True, **kw)


def test_a_bound_capability_works_upstream_only_with_a_proof_of_its_key(live: LiveIssuer, tool: Tool) -> None:
    client = _client(live, dpop=True)
    auth = CapabilityAuth(client, live.idp.token(), tool=TICKETS, scope="tickets:read")
    resp = httpx.get(tool.url, auth=auth)
    assert resp.status_code == 200, resp.text
    assert client.dpop is not None and resp.json() == {"user": "idp-a:alice", "bound": client.dpop.jkt}
    assert httpx.get(tool.url, auth=auth).status_code == 200  # a fresh proof per request

    stolen = auth.capability().access_token  # copied from a log by someone without the key
    assert jwt.decode(stolen, options={"verify_signature": False})["cnf"] == {"jkt": client.dpop.jkt}
    thief = Holder()
    for headers in (
        {"Authorization": f"Bearer {stolen}"},
        {"Authorization": f"DPoP {stolen}"},
        {"Authorization": f"DPoP {stolen}", "DPoP": thief.proof(htm="GET", htu=tool.url,
                                                                 ath=access_token_hash(stolen))},
    ):
        refused = httpx.get(tool.url, headers=headers)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_dpop_proof", headers
        assert refused.headers["WWW-Authenticate"].startswith('DPoP error="invalid_dpop_proof"')

    # a proof captured with the request it went with is refused the second time
    proof = client.dpop.proof("GET", tool.url, access_token=stolen)
    captured = {"Authorization": f"DPoP {stolen}", "DPoP": proof}
    assert httpx.get(tool.url, headers=captured).status_code == 200
    again = httpx.get(tool.url, headers=captured)
    assert again.status_code == 401 and "already used" in again.json()["error_description"]


def test_a_proof_for_another_tool_url_or_method_is_refused(live: LiveIssuer, tool: Tool) -> None:
    key = DPoPKey()
    cap = _client(live, dpop=key).exchange(live.idp.token(), tool=TICKETS, scope="tickets:read")
    for proof in (key.proof("GET", tool.url.replace("/tickets", "/admin"), access_token=cap.access_token),
                  key.proof("POST", tool.url, access_token=cap.access_token),
                  key.proof("GET", tool.url)):  # no ath: a proof made for no token in particular
        resp = httpx.get(tool.url, headers={"Authorization": f"DPoP {cap.access_token}", "DPoP": proof})
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_dpop_proof"


def test_revoking_a_bound_capability_reaches_the_tool(live: LiveIssuer, tool: Tool) -> None:
    client = _client(live, dpop=True)
    auth = CapabilityAuth(client, live.idp.token(), tool=TICKETS, scope="tickets:read")
    assert httpx.get(tool.url, auth=auth).status_code == 200
    token = auth.capability().access_token
    live.post_form("/revoke", [("token", token)], auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    tool.verifier.poll_revocations()
    client.clear_cache()
    resp = httpx.get(tool.url, headers={"Authorization": f"DPoP {token}",
                                        "DPoP": client.dpop.proof("GET", tool.url, access_token=token)})  # type: ignore[union-attr]
    assert resp.status_code == 401 and "revoked" in resp.json()["error_description"]


def test_the_client_follows_the_issuers_nonce(tmp_path: Path, sqlite_url: str, idp: FakeIdP) -> None:
    live = LiveIssuer(make_settings(tmp_path, sqlite_url, dpop_nonce=True), idp)
    try:
        live.standard_setup()
        cap = _client(live, dpop=True).exchange(live.idp.token(), tool=TICKETS, scope="tickets:read")
        assert cap.token_type == "DPoP"
    finally:
        live.close()


def test_a_dpop_required_client_gets_bound_capabilities_only(live: LiveIssuer) -> None:
    from issuer.registry import set_client_dpop_required
    from issuer.sdk.client import ExchangeError

    set_client_dpop_required(live.db, "mcp-helpdesk", True)
    live.app.extensions["issuer"].snapshots.invalidate()
    with pytest.raises(ExchangeError) as info:
        _client(live).exchange(live.idp.token(), tool=TICKETS, scope="tickets:read")
    assert info.value.error == "invalid_dpop_proof"
    assert _client(live, dpop=True).exchange(live.idp.token(), tool=TICKETS).token_type == "DPoP"
