"""Real keys, a fake identity provider (httpx.MockTransport), and a real loopback HTTP server."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from issuer import clock
from issuer.identity.jwks import JwksCache
from issuer.identity.types import TrustedIdp

ISSUER = "https://idp.example.com"
JWKS_URI = "https://idp.example.com/jwks"
AUDIENCE = "client-a"
START = "2030-01-01T00:00:00Z"


@dataclass(frozen=True)
class SigningKey:
    private: Any
    alg: str
    kid: str

    def jwk(self, **extra: Any) -> dict[str, Any]:
        """The public JWK, as an IdP publishes it."""
        pub = self.private.public_key()
        if self.alg.startswith(("RS", "PS")):
            d = RSAAlgorithm.to_jwk(pub, as_dict=True)
        elif self.alg == "EdDSA":
            d = OKPAlgorithm.to_jwk(pub, as_dict=True)
        else:
            d = ECAlgorithm.to_jwk(pub, as_dict=True)
        d.update({"kid": self.kid, "use": "sig"})
        d.update(extra)
        return d


@pytest.fixture(scope="session")
def ec_key() -> SigningKey:
    return SigningKey(ec.generate_private_key(ec.SECP256R1()), "ES256", "ec-1")


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", "rsa-1")


@pytest.fixture(scope="session")
def ed_key() -> SigningKey:
    return SigningKey(ed25519.Ed25519PrivateKey.generate(), "EdDSA", "ed-1")


@pytest.fixture(scope="session")
def attacker_key() -> SigningKey:
    return SigningKey(ec.generate_private_key(ec.SECP256R1()), "ES256", "attacker-1")


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims at the current (frozen) time; pass ``name=None`` to drop one."""
    now = int(clock.now())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "groups": ["eng", "oncall"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: SigningKey, payload: dict[str, Any] | None = None, **headers: Any) -> str:
    hdr: dict[str, Any] = {"kid": key.kid}
    hdr.update(headers)
    hdr = {k: v for k, v in hdr.items() if v is not None}
    return jwt.encode(
        payload if payload is not None else claims(), key.private, algorithm=key.alg, headers=hdr
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


@dataclass
class FakeIdp:
    """An identity provider behind httpx.MockTransport, whose behaviour tests change."""

    keys: list[Any]  #: JWKs, or junk that a broken provider might publish
    status: int = 200
    body: bytes | None = None  #: overrides the JSON body
    down: bool = False  #: raise a connection error
    cache_control: str | None = None
    calls: int = 0
    paths: list[str] = field(default_factory=list)
    on_request: Callable[[], None] | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.paths.append(request.url.path)
        if self.on_request is not None:
            self.on_request()
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        headers = {"content-type": "application/json"}
        if self.cache_control:
            headers["cache-control"] = self.cache_control
        body = self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
        return httpx.Response(self.status, content=body, headers=headers)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


@pytest.fixture
def frozen() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(START) as f:
        assert isinstance(f, FrozenDateTimeFactory)
        yield f


@pytest.fixture
def fake_idp(ec_key: SigningKey, rsa_key: SigningKey, ed_key: SigningKey) -> FakeIdp:
    return FakeIdp(keys=[ec_key.jwk(), rsa_key.jwk(), ed_key.jwk()])


@pytest.fixture
def cache(fake_idp: FakeIdp) -> Iterator[JwksCache]:
    c = JwksCache(transport=fake_idp.transport)
    yield c
    c.close()


@pytest.fixture
def idp() -> TrustedIdp:
    return TrustedIdp(
        name="corp",
        issuer=ISSUER,
        namespace="corp",
        algorithms=("ES256", "RS256", "EdDSA"),
        jwks_uri=JWKS_URI,
        attribute_claims=("department", "level", "email_verified", "roles", "address"),
    )


# --------------------------------------------------------------------------- a real HTTP server


@dataclass
class Route:
    status: int = 200
    body: Any = None  #: JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0


class LoopbackServer:
    """http.server on 127.0.0.1, on a free port, serving fixed routes; counts hits per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route.hits += 1
                body = route.body if isinstance(route.body, bytes) else json.dumps(route.body).encode()
                self.send_response(route.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def route(
        self, path: str, body: Any = None, status: int = 200, headers: dict[str, str] | None = None
    ) -> Route:
        self.routes[path] = r = Route(status=status, body=body, headers=headers or {})
        return r

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    s = LoopbackServer()
    s.start()
    try:
        yield s
    finally:
        s.stop()
