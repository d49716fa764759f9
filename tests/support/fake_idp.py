"""A real identity provider for tests: keys, discovery and JWKS served over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from issuer import clock

__all__ = ["FakeIdP", "running_idp"]


class FakeIdP:
    def __init__(self, name: str = "idp-a") -> None:
        self.name = name
        self.keys: dict[str, tuple[str, Any]] = {}
        self.fetches = 0
        self.down = False
        self.add_key("ES256")
        self.add_key("RS256")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_uri = f"{self.issuer}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    # -- keys ---------------------------------------------------------------------
    def add_key(self, alg: str) -> str:
        """A new key (rotation at the IdP); it is published at once."""
        key = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else rsa.generate_private_key(65537, 2048)
        kid = f"{alg.lower()}-{secrets.token_hex(3)}"
        self.keys[kid] = (alg, key)
        return kid

    def kid_for(self, alg: str) -> str:
        return [k for k, (a, _) in self.keys.items() if a == alg][-1]

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, (alg, key) in self.keys.items():
            conv = ECAlgorithm if alg == "ES256" else RSAAlgorithm
            jwk = conv.to_jwk(key.public_key(), as_dict=True)
            jwk.update(kid=kid, alg=alg, use="sig")
            out.append(jwk)
        return {"keys": out}

    def private_key(self, kid: str) -> Any:
        return self.keys[kid][1]

    # -- tokens -------------------------------------------------------------------
    def token(self, sub: str = "alice", aud: Any = "https://mcp.helpdesk.example", *, alg: str = "ES256",
              kid: str | None = None, headers: dict[str, Any] | None = None, lifetime: int = 300,
              drop: tuple[str, ...] = (), **claims: Any) -> str:
        now = int(clock.now())
        body: dict[str, Any] = {"iss": self.issuer, "sub": sub, "aud": aud, "iat": now, "nbf": now,
                                "exp": now + lifetime, "jti": secrets.token_hex(8), "client_id": "portal",
                                "groups": ["support"]}
        body.update(claims)
        for k in drop:
            body.pop(k, None)
        kid = kid or self.kid_for(alg)
        hdr = {"kid": kid, "typ": "at+jwt", **(headers or {})}
        return jwt.encode(body, self.keys[kid][1], algorithm=alg, headers=hdr)

    # -- HTTP ---------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if idp.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path == "/jwks.json":
                    idp.fetches += 1
                    body = idp.jwks()
                elif self.path == "/.well-known/openid-configuration":
                    body = {"issuer": idp.issuer, "jwks_uri": idp.jwks_uri}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
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


@contextmanager
def running_idp(name: str = "idp-a") -> Iterator[FakeIdP]:
    idp = FakeIdP(name)
    try:
        yield idp
    finally:
        idp.close()
