"""A DEVELOPMENT-ONLY identity provider: it signs a token for whoever the demo names.

It stands in for the company's real identity provider so that the demo
needs no account anywhere. It has no login at all, which is exactly why it
must never be trusted outside the demo: it binds to loopback only, keeps its
key in memory only, and says so everywhere a person or a program could look
(the banner, ``GET /``, an ``X-Development-Only`` header on every answer, a
``development_only`` member in its discovery document and a ``dev_only``
claim in every token).

It serves what the issuer and the MCP server need to verify its tokens over
real HTTP: an OpenID discovery document and its JWKS.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from .world import DemoUser

__all__ = ["BANNER", "DevIdentityProvider"]

BANNER: Final = "DEVELOPMENT ONLY: signs a token for any user it is asked to, no login; never trust it elsewhere"
_KID: Final = "dev-idp-1"


class DevIdentityProvider:
    """Discovery and JWKS on ``http://127.0.0.1:<free port>``, and tokens minted in-process."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        public = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        self._jwks = json.dumps({"keys": [public | {"kid": _KID, "alg": "ES256", "use": "sig"}]}).encode()
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.jwks_uri = f"{self.issuer}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="demo dev-idp", daemon=True)
        self._thread.start()

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": self.jwks_uri, "id_token_signing_alg_values_supported": ["ES256"],
                "development_only": True, "warning": BANNER}

    def token(self, user: DemoUser, audience: str, lifetime: int = 300) -> str:
        """What the user's chat client would hold after signing in: a token for the MCP server only."""
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user.sub, "aud": audience, "iat": now, "exp": now + lifetime,
                  "jti": secrets.token_hex(8), "client_id": "demo-chat", "groups": list(user.groups),
                  "projects": list(user.projects), "dev_only": True}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": _KID, "typ": "at+jwt"})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/jwks.json":
            return 200, "application/json", self._jwks
        if path == "/.well-known/openid-configuration":
            return 200, "application/json", json.dumps(self.discovery()).encode()
        if path == "/":
            return 200, "text/plain; charset=utf-8", (BANNER + "\n").encode()
        return 404, "application/json", b'{"error": "not_found"}'


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone mid-answer (the demo interrupted) is no news; a traceback would bury the transcript."""


def _handler(idp: DevIdentityProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = idp._answer(self.path.split("?", 1)[0])
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Development-Only", "true")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """The transcript is the demo's output; request lines would drown it."""

    return Handler
