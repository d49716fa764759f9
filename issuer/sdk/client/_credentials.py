"""How the client authenticates at the token endpoint (RFC 6749 section 2.3, RFC 7523 section 2.2).

* :class:`ClientSecret`: ``client_secret_basic`` (HTTP Basic, id and secret
  form-urlencoded first, RFC 6749 section 2.3.1) or ``client_secret_post``
  (``client_id`` and ``client_secret`` in the form body);
* :class:`PrivateKeyJwt`: ``private_key_jwt`` (RFC 7523), a fresh assertion
  signed with the client's key for every request.

Neither object shows its secret in ``repr()`` or ``str()``.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Literal
from urllib.parse import quote_plus

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

__all__ = ["ASSERTION_LIFETIME", "CLIENT_ASSERTION_TYPE", "ClientSecret", "PrivateKeyJwt"]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Seconds an RFC 7523 client assertion is valid; a new one is signed for every request.
ASSERTION_LIFETIME = 60

SecretMethod = Literal["client_secret_basic", "client_secret_post"]
SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
#: Form pairs and headers that authenticate one request.
Authentication = tuple[list[tuple[str, str]], dict[str, str]]


class ClientSecret:
    """A client secret, sent with ``client_secret_basic`` (the default) or ``client_secret_post``."""

    __slots__ = ("_secret", "method")

    def __init__(self, secret: str, *, method: SecretMethod = "client_secret_basic") -> None:
        if not isinstance(secret, str) or not secret:
            raise ValueError("ClientSecret: the secret must be a non-empty string")
        if method not in ("client_secret_basic", "client_secret_post"):
            raise ValueError("ClientSecret: method must be client_secret_basic or client_secret_post")
        self._secret = secret
        self.method: SecretMethod = method

    def __repr__(self) -> str:
        return f"ClientSecret(method={self.method!r}, secret='***')"

    def _authenticate(self, client_id: str, token_endpoint: str) -> Authentication:
        if self.method == "client_secret_post":
            return [("client_id", client_id), ("client_secret", self._secret)], {}
        # RFC 6749 section 2.3.1: each part is application/x-www-form-urlencoded before base64.
        userpass = f"{quote_plus(client_id, safe='')}:{quote_plus(self._secret, safe='')}"
        return [], {"Authorization": "Basic " + base64.b64encode(userpass.encode("utf-8")).decode("ascii")}

    def _sensitive(self) -> tuple[str, ...]:
        return (self._secret,)


class PrivateKeyJwt:
    """``private_key_jwt`` (RFC 7523): sign a short assertion with the client's registered key.

    ``private_key`` is a cryptography private key, or an unencrypted PEM
    (``str`` or ``bytes``). ``alg`` is ``ES256`` (a P-256 key) or ``EdDSA``
    (an Ed25519 or Ed448 key); ``kid`` names the public key the issuer holds
    for this client.
    """

    __slots__ = ("_key", "alg", "kid")

    def __init__(self, private_key: SigningKey | str | bytes, *, kid: str,
                 alg: Literal["ES256", "EdDSA"] = "ES256") -> None:
        if not isinstance(kid, str) or not kid:
            raise ValueError("PrivateKeyJwt: kid must be a non-empty string")
        key = _load_key(private_key)
        if alg == "ES256":
            if not (isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
                raise ValueError("PrivateKeyJwt: ES256 needs a P-256 elliptic-curve private key")
        elif alg == "EdDSA":
            if not isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
                raise ValueError("PrivateKeyJwt: EdDSA needs an Ed25519 or Ed448 private key")
        else:
            raise ValueError("PrivateKeyJwt: alg must be ES256 or EdDSA")
        self._key: SigningKey = key
        self.kid = kid
        self.alg: Literal["ES256", "EdDSA"] = alg

    def __repr__(self) -> str:
        return f"PrivateKeyJwt(kid={self.kid!r}, alg={self.alg!r})"

    def _authenticate(self, client_id: str, token_endpoint: str) -> Authentication:
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": token_endpoint, "iat": now,
                  "exp": now + ASSERTION_LIFETIME, "jti": secrets.token_urlsafe(24)}
        assertion = jwt.encode(claims, self._key, algorithm=self.alg, headers={"kid": self.kid})
        return [("client_assertion_type", CLIENT_ASSERTION_TYPE), ("client_assertion", assertion)], {}

    def _sensitive(self) -> tuple[str, ...]:
        return ()


def _load_key(private_key: SigningKey | str | bytes) -> SigningKey:
    if isinstance(private_key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return private_key
    if isinstance(private_key, str):
        private_key = private_key.encode("utf-8")
    if not isinstance(private_key, bytes):
        raise TypeError("PrivateKeyJwt: private_key must be an EC or EdDSA private key, or its PEM")
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # the exception text may quote the key material: never chain it
        raise ValueError("PrivateKeyJwt: private_key is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        raise ValueError("PrivateKeyJwt: private_key must be an EC or EdDSA key")
    return key
