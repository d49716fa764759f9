"""DPoP proofs (RFC 9449): checked at the token endpoint, and shared with the verifier SDK.

Standard library, PyJWT and cryptography only, like :mod:`issuer.constraints`,
so the SDK's base install can use it. Each check of RFC 9449 section 4.3 is a
named refusal: a client or a tool's log says which one failed, never echoes
the proof.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import jwt

from .kernel import strictjson

__all__ = ["ALGORITHMS", "DPoPError", "DPoPProof", "NonceSource", "access_token_hash", "htu_matches",
           "jwk_thumbprint", "verify_proof"]

#: Asymmetric only: never ``none``, never HMAC (a proof must prove possession of a private key).
ALGORITHMS = ("ES256", "EdDSA")
MAX_PROOF_LENGTH = 8 * 1024
_KEY_MEMBERS = {"ES256": ("EC", "P-256", ("crv", "kty", "x", "y")), "EdDSA": ("OKP", "Ed25519", ("crv", "kty", "x"))}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_DEFAULT_PORTS = {"https": 443, "http": 80}


class DPoPError(Exception):
    """A proof that fails one check; ``str()`` names the check."""


@dataclass(frozen=True)
class DPoPProof:
    jkt: str  #: RFC 7638 thumbprint of the proof's key: what ``cnf.jkt`` binds a token to
    jti: str
    iat: int
    claims: Mapping[str, Any]


def _fail(reason: str) -> NoReturn:
    raise DPoPError(reason) from None


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK (EC, OKP or RSA)."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(token: str) -> str:
    """``ath``: base64url of the SHA-256 of the access token (RFC 9449 section 4.2)."""
    return _b64url(hashlib.sha256(token.encode("ascii")).digest())


class NonceSource:
    """Server nonces (RFC 9449 section 8) that need no shared store: a time window and its HMAC.

    Every replica derives the same nonces from the server pepper, so a nonce
    issued by one is accepted by all. A nonce is good in its own window and the
    next, so it lives between one and two periods; the proof's ``jti`` is still
    seen only once.
    """

    PERIOD = 60

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"dpop-nonce", hashlib.sha256).digest()

    def _for(self, window: int) -> str:
        stamp = window.to_bytes(8, "big")
        return _b64url(stamp + hmac.new(self._key, stamp, hashlib.sha256).digest()[:16])

    def current(self, now: float) -> str:
        return self._for(int(now // self.PERIOD))

    def valid(self, nonce: Any, now: float) -> bool:
        if not isinstance(nonce, str) or len(nonce) > 64:
            return False
        window = int(now // self.PERIOD)
        return any(hmac.compare_digest(nonce, self._for(w)) for w in (window, window - 1))


def _normal_url(url: str) -> tuple[str, str, str] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return scheme, host, parts.path or "/"


def htu_matches(htu: str, url: str) -> bool:
    """RFC 9449 section 4.3: the request URI without query and fragment; scheme and host case-insensitive."""
    a, b = _normal_url(htu), _normal_url(url)
    return a is not None and a == b


@functools.lru_cache(maxsize=1024)
def _public_key(alg: str, values: tuple[str, ...]) -> tuple[Any, Any]:
    """A proof key parsed once: a client proves with one key for many requests, and parsing (a point
    decompression and check) costs as much as the signature. Public values only; errors are not cached."""
    members = _KEY_MEMBERS[alg][2]
    algorithm = jwt.get_algorithm_by_name(alg)
    return algorithm, algorithm.from_jwk(dict(zip(members, values, strict=True)))


def verify_proof(proof: str, *, method: str, url: str, now: float, max_age: int = 60, leeway: int = 5,
                 access_token: str | None = None) -> DPoPProof:
    """Every check of RFC 9449 section 4.3 but the one-time use of ``jti``, which needs shared state.

    ``url`` is the request's URI as this server is known to clients; with an
    ``access_token`` (a resource server) the proof must carry its ``ath``.
    Raises :class:`DPoPError` naming the first failed check.
    """
    if not isinstance(proof, str) or not proof:
        _fail("no proof")
    if len(proof) > MAX_PROOF_LENGTH:
        _fail("the proof is too large")
    segments = proof.split(".")
    if len(segments) != 3 or not all(_SEGMENT.fullmatch(s) for s in segments):
        _fail("the proof is not a compact JWS")
    try:
        header = strictjson.loads(_b64(segments[0]))
        claims = strictjson.loads(_b64(segments[1]))
        signature = _b64(segments[2])
    except (ValueError, binascii.Error):  # StrictJSONError is a ValueError
        _fail("the proof is not a compact JWS")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        _fail("the proof is not a compact JWS")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() != "dpop+jwt":
        _fail("typ must be dpop+jwt")
    if "crit" in header:
        _fail("critical header parameters are not supported")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        _fail(f"alg must be one of {', '.join(ALGORITHMS)}")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        _fail("the jwk header must hold the public key")
    if _PRIVATE_MEMBERS & jwk.keys():
        _fail("the jwk header holds a private key")
    kty, crv, members = _KEY_MEMBERS[alg]
    if jwk.get("kty") != kty or jwk.get("crv") != crv or not all(isinstance(jwk.get(m), str) for m in members):
        _fail("the jwk does not fit alg")
    try:
        algorithm, key = _public_key(alg, tuple(jwk[m] for m in members))
        valid = algorithm.verify(f"{segments[0]}.{segments[1]}".encode(), key, signature)
    except (jwt.PyJWTError, ValueError, TypeError):
        _fail("the jwk is not a usable public key")
    if not valid:
        _fail("the signature does not verify with the jwk")
    jti, htm, htu, iat = claims.get("jti"), claims.get("htm"), claims.get("htu"), claims.get("iat")
    if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
        _fail("jti is missing or malformed")
    if htm != method:
        _fail("htm does not match the request method")
    if not isinstance(htu, str) or not htu_matches(htu, url):
        _fail("htu does not match the request URI")
    # A finite number and not a boolean: NaN would pass both window checks below (every comparison with
    # NaN is false) and then crash int(); the strict decoder already refuses it, this holds for any caller.
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        _fail("iat is missing or malformed")
    if iat > now + leeway:
        _fail("iat is in the future")
    if iat < now - max_age - leeway:
        _fail("the proof is too old")
    if access_token is not None and claims.get("ath") != access_token_hash(access_token):
        _fail("ath does not match the access token")
    return DPoPProof(jkt=jwk_thumbprint({m: jwk[m] for m in members}), jti=jti, iat=int(iat), claims=claims)
