"""A fake capability issuer on 127.0.0.1: real keys, RFC 8414 metadata, JWKS and a revocation feed over HTTP.

The real issuer is used in test_live_issuer.py; this one lets tests break
things the real one never would (wrong algorithms, bad metadata, an outage).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from issuer import clock
from issuer.sdk.verifier import CapabilityVerifier
from issuer.sdk.verifier._revocation import FEED_TYP

AUDIENCE = "https://tickets.example"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWS built by hand, for tokens PyJWT refuses to make (alg none, HS256 keyed with a public key)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}".encode()
    return signing_input.decode() + "." + b64(sign(signing_input))


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


class FakeIssuer:
    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, Any]] = {}
        self.extra_jwks: list[dict[str, Any]] = []
        self.hits: Counter[str] = Counter()
        self.queries: list[dict[str, list[str]]] = []
        self.feed_requested = threading.Condition()
        self.down = False
        self.feed_down = False
        self.metadata_overrides: dict[str, Any] = {}
        self.feed: dict[str, Any] = {"jtis": [], "subjects": [], "clients": []}
        self.feed_version = 0
        self.feed_body: Any = None  #: when set, signed and served instead of the feed (malformed feeds)
        self.feed_raw: bytes | None = None  #: when set, served as it is (unsigned or forged feeds)
        self.ec_kid = self.add_key("ES256")
        self.ed_kid = self.add_key("EdDSA")
        self.feed_kid = self.ec_kid
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    # -- keys and tokens --------------------------------------------------------------
    def add_key(self, alg: str) -> str:
        if alg == "ES256":
            key: Any = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            key = rsa.generate_private_key(65537, 2048)
        kid = f"{alg.lower()}-{secrets.token_hex(4)}"
        self.keys[kid] = (alg, key)
        return kid

    def public_jwk(self, kid: str, **extra: Any) -> dict[str, Any]:
        alg, key = self.keys[kid]
        conv: Any = {"ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}.get(alg, RSAAlgorithm)
        jwk: dict[str, Any] = conv.to_jwk(key.public_key(), as_dict=True)
        jwk.update(kid=kid, alg=alg, use="sig", **extra)
        return jwk

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk(k) for k in self.keys] + self.extra_jwks}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(clock.now())
        body: dict[str, Any] = {
            "iss": self.url, "sub": "alice", "aud": AUDIENCE, "client_id": "mcp-helpdesk",
            "act": {"sub": "mcp-helpdesk", "act": {"sub": "portal"}}, "scope": "tickets:read tickets:write",
            "iat": now, "nbf": now, "exp": now + 300, "jti": secrets.token_urlsafe(12), "pol": 7,
            "txn": "txn-1", "groups": ["support"],
        }
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not None}

    def token(self, *, kid: str | None = None, alg: str | None = None, headers: dict[str, Any] | None = None,
              **overrides: Any) -> str:
        kid = kid or self.ec_kid
        key_alg, key = self.keys[kid]
        hdr = {"kid": kid, "typ": "at+jwt", **(headers or {})}
        return jwt.encode(self.claims(**overrides), key, algorithm=alg or key_alg, headers=hdr)

    def metadata(self) -> dict[str, Any]:
        doc = {"issuer": self.url, "jwks_uri": self.url + "/jwks.json",
               "revocation_feed_endpoint": self.url + "/revocations"}
        doc.update(self.metadata_overrides)
        return {k: v for k, v in doc.items() if v is not None}

    # -- the feed ---------------------------------------------------------------------
    def revoke_jti(self, jti: str, exp: int) -> None:
        self.feed["jtis"].append({"jti": jti, "exp": exp})
        self.feed_version += 1

    def revoke_subject(self, sub: str, revoked_before: int) -> None:
        digest = b64(hashlib.sha256(sub.encode()).digest())
        self.feed["subjects"].append({"sub_sha256": digest, "revoked_before": revoked_before})
        self.feed_version += 1

    def revoke_client(self, client_id: str, revoked_before: int) -> None:
        self.feed.setdefault("clients", []).append({"client_id": client_id, "revoked_before": revoked_before})
        self.feed_version += 1

    def feed_document(self, payload: Any = None, *, kid: str | None = None, typ: str = FEED_TYP,
                      **overrides: Any) -> bytes:
        """The feed as the issuer signs it: the current entries, or ``payload``, with ``overrides``."""
        if payload is None:
            payload = {"iss": self.url, "iat": int(clock.now()), "issued_at": clock.now(),
                       "version": self.feed_version, **self.feed}
        if isinstance(payload, dict):
            payload = {**payload, **overrides}
        kid = kid or self.feed_kid
        alg, key = self.keys[kid]
        return jwt.api_jws.encode(json.dumps(payload).encode(), key, algorithm=alg,
                                  headers={"kid": kid, "typ": typ}).encode()

    def wait_for_feed_requests(self, n: int, timeout: float = 10.0) -> bool:
        with self.feed_requested:
            return self.feed_requested.wait_for(lambda: self.hits["/revocations"] >= n, timeout)

    # -- HTTP -------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                path = parts.path
                fake.hits[path] += 1
                if fake.down or (fake.feed_down and path == "/revocations"):
                    self._send(503, {"error": "down"})
                    return
                if path == "/.well-known/oauth-authorization-server":
                    self._send(200, fake.metadata())
                elif path == "/jwks.json":
                    self._send(200, fake.jwks())
                elif path == "/revocations":
                    fake.queries.append(parse_qs(parts.query))
                    if fake.feed_raw is not None:
                        self._send_raw(fake.feed_raw)
                    elif fake.feed_body is not None:
                        self._send_raw(fake.feed_document({"iss": fake.url, "iat": int(clock.now()), "version": 0,
                                                           **fake.feed_body}
                                                          if isinstance(fake.feed_body, dict) else fake.feed_body))
                    else:
                        self._send_raw(fake.feed_document())
                    with fake.feed_requested:
                        fake.feed_requested.notify_all()
                elif path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", fake.url + "/jwks.json")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._send(404, {"error": "not found"})

            def _send_raw(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/jwt")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeIssuer]:
    issuer = FakeIssuer()
    yield issuer
    issuer.close()


@pytest.fixture
def make_verifier(fake: FakeIssuer) -> Iterator[Callable[..., CapabilityVerifier]]:
    """Build verifiers pointed at the fake issuer; all are closed after the test."""
    made: list[CapabilityVerifier] = []

    def build(**kw: Any) -> CapabilityVerifier:
        kw.setdefault("issuer", fake.url)
        kw.setdefault("audience", AUDIENCE)
        kw.setdefault("allow_insecure_loopback", True)
        kw.setdefault("timeout", 2.0)
        v = CapabilityVerifier(**kw)
        made.append(v)
        return v

    yield build
    for v in made:
        v.close()


@pytest.fixture
def verifier(make_verifier: Callable[..., CapabilityVerifier]) -> CapabilityVerifier:
    return make_verifier()
