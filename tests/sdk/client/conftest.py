"""Fixtures for the exchange client: clients of the live issuer, an upstream tool, a scripted issuer.

* :func:`client_for` builds an :class:`ExchangeClient` for a client
  registered on the live issuer (``live_sqlite`` from ``tests/conftest.py``).
* :func:`exchanges` counts the exchanges the issuer decided: one audit row
  per decision, so it counts what reached the token endpoint.
* ``upstream``: a tool on 127.0.0.1 that records ``Authorization`` headers and
  can answer 401 a number of times.
* ``scripted``: an "issuer" whose token endpoint answers whatever the test
  queues, for the parts of the protocol the real issuer never gets wrong
  (malformed responses, 429, 5xx, redirects).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select

from issuer.models import AuditEvent
from issuer.sdk.client import ClientSecret, ExchangeClient
from tests.conftest import LiveIssuer

TICKETS = "https://tickets.example"
FILES = "https://files.example"
HELPDESK_AUD = "https://mcp.helpdesk.example"


def client_for(live: LiveIssuer, client_id: str = "mcp-helpdesk", *, method: str = "client_secret_basic",
               secret: str | None = None, **kw: Any) -> ExchangeClient:
    creds = ClientSecret(live.secrets[client_id] if secret is None else secret, method=method)  # type: ignore[arg-type]
    kw.setdefault("allow_insecure_loopback", True)
    return ExchangeClient(issuer=live.url, client_id=client_id, credentials=creds, **kw)


def exchanges(live: LiveIssuer) -> int:
    """Exchanges the issuer decided so far (granted or refused): one audit row each."""
    with live.db.session() as s:
        return int(s.execute(select(func.count()).select_from(AuditEvent)).scalar_one())


@pytest.fixture
def client(live_sqlite: LiveIssuer) -> ExchangeClient:
    return client_for(live_sqlite)


# ----------------------------------------------------------------------------- a tiny upstream tool


@dataclass
class Upstream:
    url: str
    seen: list[str | None] = field(default_factory=list)
    reject: int = 0  #: answer 401 to this many of the next requests


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    state = Upstream(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append(self.headers.get("Authorization"))
            if state.reject > 0:
                state.reject -= 1
                status, body = 401, b'{"error":"invalid_token"}'
            else:
                status, body = 200, b'{"ok":true}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# ----------------------------------------------------------------------------- a scripted issuer


@dataclass
class Scripted:
    url: str
    #: the metadata document served at the well-known path (``{url}`` is filled in)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: (status, headers, body) answers for the next token requests, in order
    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    metadata_fetches: int = 0
    #: token requests wait for this before being answered (set: answer at once)
    gate: threading.Event = field(default_factory=threading.Event)
    #: set when a token request has arrived
    arrived: threading.Event = field(default_factory=threading.Event)
    gets: list[str] = field(default_factory=list)
    metadata_status: int = 200

    def answer(self, status: int, body: Any = None, **headers: str) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
        headers.setdefault("Content_Type", "application/json")
        self.answers.append((status, {k.replace("_", "-"): v for k, v in headers.items()}, raw))

    def client(self, **kw: Any) -> ExchangeClient:
        kw.setdefault("credentials", ClientSecret("s3cret-value-for-tests"))
        return ExchangeClient(issuer=self.url, client_id="mcp-helpdesk", allow_insecure_loopback=True, **kw)


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    state = Scripted(url="")
    state.gate.set()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            state.gets.append(self.path)
            if self.path != "/.well-known/oauth-authorization-server":
                self._send(404, {}, b"")
                return
            state.metadata_fetches += 1
            self._send(state.metadata_status, {"Content-Type": "application/json"}, json.dumps(state.metadata).encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.requests.append((self.path, dict(self.headers.items()), self.rfile.read(length)))
            state.arrived.set()
            state.gate.wait(10)
            self._send(*state.answers.pop(0))

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.metadata = {"issuer": state.url, "token_endpoint": state.url + "/token",
                      "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"]}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.gate.set()
    server.shutdown()
    server.server_close()
