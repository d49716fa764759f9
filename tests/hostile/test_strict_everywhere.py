"""Every JSON text the token side reads goes through the one strict decoder (issuer.kernel.strictjson).

Each site is shown with a duplicate member, the text two parsers can read two ways: Python's json keeps the
last value, another parser the first. Before, each of these was accepted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from issuer.errors import ConfigurationError, InvalidRequest
from issuer.grant_details import parse_authorization_details
from issuer.identity import jwks as idp_jwks
from issuer.keys import KeyStore
from issuer.sdk.client import ProtocolError
from issuer.sdk.verifier import CapabilityVerifier, InvalidToken
from issuer.sdk.verifier import _http as sdk_http
from tests.sdk.client.conftest import TICKETS, Scripted
from tests.sdk.verifier.conftest import FakeIssuer


@contextmanager
def serving(body: bytes) -> Iterator[str]:
    """A URL on 127.0.0.1 that answers every GET with ``body`` as JSON."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/doc"
    finally:
        server.shutdown()
        server.server_close()


HOSTILE = {
    "duplicate member": b'{"keys": [], "keys": [{"kty": "oct"}]}',
    "NaN": b'{"keys": [], "n": NaN}',
    "NUL": b'{"keys": [], "n": "\\u0000"}',
    "not UTF-8": b'{"keys": [], "n": "\xff"}',
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_key_set_or_metadata_document_is_decoded_strictly(case: str) -> None:
    with serving(HOSTILE[case]) as url:
        with pytest.raises(sdk_http.FetchError, match="not JSON"):
            sdk_http.fetch_json(url, timeout=2.0, allow_insecure_loopback=True)
        with httpx.Client() as client, pytest.raises(idp_jwks.FetchError, match="not JSON"):
            idp_jwks.fetch_json(client, url, allow_insecure_loopback=True, timeout=2.0)


def test_authorization_details_with_a_duplicate_member_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="duplicate"):
        parse_authorization_details('[{"type": "tool_invocation", "actions": ["list"], "actions": ["delete"]}]')
    with pytest.raises(InvalidRequest, match="nested deeper"):
        parse_authorization_details('[{"type": "tool_invocation", "constraints": {"a": ' + "[" * 40 + "]" * 40 + "}}]")


def test_a_capability_with_a_duplicate_claim_is_refused_by_the_verifier(fake: FakeIssuer,
                                                                         verifier: CapabilityVerifier) -> None:
    claims = json.dumps(fake.claims(sub="alice"))
    doubled = claims[:-1] + ', "sub": "mallory"}'
    _, key = fake.keys[fake.ec_kid]
    token = jwt.api_jws.encode(doubled.encode(), key, algorithm="ES256", headers={"kid": fake.ec_kid, "typ": "at+jwt"})
    with pytest.raises(InvalidToken, match="payload is not JSON"):
        verifier.verify(token)
    assert verifier.verify(fake.token()).sub == "alice"


def test_a_token_answer_with_a_duplicate_member_is_a_protocol_error(scripted: Scripted) -> None:
    ok = {"access_token": "cap.jwt.value", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
          "token_type": "Bearer", "expires_in": 300, "scope": "tickets:read"}
    scripted.answer(200, json.dumps(ok)[:-1].encode() + b', "scope": "tickets:write"}')
    with pytest.raises(ProtocolError):
        scripted.client().exchange("user-token", tool=TICKETS)


def test_a_key_state_file_with_a_duplicate_member_is_unreadable(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, retention=3600, refresh_interval=0)
    store.ensure("ES256")
    state = tmp_path / "keyset.json"
    text = state.read_text()
    state.write_text(text.rstrip()[:-1] + ', "keys": []}')
    with pytest.raises(ConfigurationError, match="unreadable key state"):
        store.infos()
