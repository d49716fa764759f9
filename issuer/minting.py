"""Capability tokens: the claims of DESIGN section 3, signed as an RFC 9068 JWT.

Minting is pure computation on an already-made decision; it does no I/O.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from .keys import SigningKey

__all__ = ["ACCESS_TOKEN_TYPE", "CAPABILITY_TYP", "Capability", "actor_claim", "build_claims", "chain_depth", "new_txn",
           "sign"]

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
CAPABILITY_TYP = "at+jwt"


@dataclass(frozen=True)
class Capability:
    token: str
    claims: Mapping[str, Any]
    expires_in: int


def new_jti() -> str:
    """128 random bits in hex: never starts with '-', so an admin can paste it into any command line."""
    return secrets.token_hex(16)


def new_txn() -> str:
    """A transaction id when the caller brings none: unguessable, so it names one action only."""
    return secrets.token_urlsafe(12)


def build_claims(
    *,
    issuer: str,
    principal: str,
    audience: str,
    client_id: str,
    subject_act: Mapping[str, Any] | None,
    scopes: Sequence[str],
    groups: Sequence[str],
    now: int,
    lifetime: int,
    policy_version: int,
    txn: str | None,
    jti: str | None = None,
    authorization_details: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The payload. ``act`` names the client and nests the subject token's own
    delegation chain (RFC 8693 section 4.1), so the upstream sees every hop."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": principal,
        "aud": audience,
        "client_id": client_id,
        "act": actor_claim(client_id, subject_act),
        "scope": " ".join(scopes),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": jti or new_jti(),
        "pol": policy_version,
        "txn": txn or new_txn(),
    }
    if groups:
        claims["groups"] = sorted(groups)
    if authorization_details:
        claims["authorization_details"] = [dict(d) for d in authorization_details]
    return claims


def actor_claim(client_id: str, subject_act: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"sub": client}``, nesting the subject token's own ``act`` (RFC 8693 section 4.1)."""
    act: dict[str, Any] = {"sub": client_id}
    if subject_act:
        act["act"] = dict(subject_act)
    return act


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=16)
def _header(kid: str, alg: str, typ: str) -> bytes:
    """The protected header of every capability signed with one key: encoded once, not per token."""
    return _b64url(json.dumps({"alg": alg, "kid": kid, "typ": typ}, separators=(",", ":")).encode())


def sign(claims: Mapping[str, Any], key: SigningKey, typ: str = CAPABILITY_TYP) -> str:
    """Compact JWS (RFC 7515): the signature by PyJWT's algorithm object for the key's alg.

    ``typ`` tells documents signed with the same key apart (RFC 8725 section 3.11): a signed
    revocation feed can never pass for a capability, nor the reverse."""
    signing_input = _header(key.kid, key.alg, typ) + b"." + _b64url(
        json.dumps(claims, separators=(",", ":"), allow_nan=False).encode())
    signature = jwt.get_algorithm_by_name(key.alg).sign(signing_input, key.private_key)
    return (signing_input + b"." + _b64url(signature)).decode()


def chain_depth(act: Mapping[str, Any] | None) -> int:
    """Number of actors in a nested ``act`` chain."""
    depth = 0
    while isinstance(act, Mapping):
        depth += 1
        act = act.get("act")
    return depth
