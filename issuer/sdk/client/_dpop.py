"""DPoP proofs made by the exchange client (RFC 9449): one key per process, a fresh proof per request.

A capability bound to this key (``cnf.jkt``) is worthless to whoever copies
it from a log or a heap dump: every use needs a proof signed by the private
key, which never leaves this object.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from ...dpop import access_token_hash, jwk_thumbprint

__all__ = ["DPoPKey"]

_MAX_NONCES = 1000


class DPoPKey:
    """A DPoP key pair and the server nonces seen so far (RFC 9449 section 8), per origin.

    :param private_key: an EC P-256 (ES256) or Ed25519 (EdDSA) private key from
        ``cryptography``; a new ES256 key when omitted. Keep one per process:
        capabilities bound to it are usable only by this process.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | None = None) -> None:
        key = private_key if private_key is not None else ec.generate_private_key(ec.SECP256R1())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise ValueError("an EC DPoP key must be on P-256 (ES256)")
            self.alg = "ES256"
            jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            self.alg = "EdDSA"
            jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
        else:
            raise TypeError("private_key must be an EC P-256 or Ed25519 private key from cryptography")
        self._key = key
        self._jwk: dict[str, Any] = {k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk}
        self.jkt = jwk_thumbprint(self._jwk)  #: RFC 7638 thumbprint: the ``cnf.jkt`` of bound capabilities
        self._nonces: dict[str, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self.alg!r}, jkt={self.jkt!r})"

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self._jwk)

    def proof(self, method: str, url: str, *, access_token: str | None = None) -> str:
        """A proof for one request: ``htm``, ``htu`` (without query and fragment), a fresh ``jti``, ``iat``,
        the server's latest nonce for this origin, and ``ath`` when a capability goes with it."""
        parts = urlsplit(url)
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", "")),
            "iat": int(time.time()),
        }
        nonce = self._nonces.get(_origin(url))
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        header = {"typ": "dpop+jwt", "jwk": self._jwk}
        return jwt.encode(claims, self._key, algorithm=self.alg, headers=header)

    def remember_nonce(self, url: str, nonce: str | None) -> bool:
        """Keep the ``DPoP-Nonce`` a server sent; True if it is new (a request refused for it may be retried)."""
        if not nonce or len(nonce) > 256 or not nonce.isascii() or not nonce.isprintable():
            return False
        origin = _origin(url)
        with self._lock:
            if self._nonces.get(origin) == nonce:
                return False
            if len(self._nonces) >= _MAX_NONCES:
                self._nonces.clear()
            self._nonces[origin] = nonce
            return True


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return json.dumps([parts.scheme.lower(), (parts.hostname or "").lower(), parts.port])
