"""Verify a subject or actor token from a trusted identity provider.

Everything in a token is attacker-controlled until its signature has been
checked with a key from the provider's registered key set, so the order of
the checks matters: the header and the claimed issuer only ever select among
things we already trust (an allowlisted algorithm, a registered provider, a
key from its registered set); they never supply a key or an algorithm.

Failure descriptions are fixed strings: a client sees why its token was
refused, but nothing of the token is echoed back (into responses or logs).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import jwt

from .. import clock
from ..errors import InvalidGrant
from ..kernel import strictjson
from .types import ASYMMETRIC_ALGORITHMS, TrustedIdp, VerifiedSubject

__all__ = ["MAX_GROUPS", "MAX_TOKEN_LENGTH", "KeyResolver", "VerifiedTokenCache", "peek_issuer", "verify_token"]

#: Larger than any reasonable access or ID token, small enough that parsing an
#: unauthenticated one costs next to nothing.
MAX_TOKEN_LENGTH = 16 * 1024
MAX_GROUPS = 1000
MAX_SUBJECT_LENGTH = 255
#: ``act`` nests one level per delegation hop; real chains are short.
MAX_ACT_DEPTH = 16

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
#: Control, format (bidi overrides, zero-width), surrogate and line/paragraph
#: separator characters: none belongs in an identifier that policy matches and
#: audit logs print.
_UNCLEAN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class KeyResolver(Protocol):
    """Where verification keys come from (JwksCache in production)."""

    def key_for(self, idp: TrustedIdp, kid: str | None, alg: str) -> jwt.PyJWK: ...


class _Malformed(Exception):
    pass


def _json_object(segment: str) -> dict[str, Any]:
    """A segment under the project's one strict decoder (duplicate members, NaN, NUL, surrogates, depth)."""
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = strictjson.loads(raw)
    except (binascii.Error, ValueError):  # StrictJSONError is a ValueError
        raise _Malformed from None
    if not isinstance(value, dict):
        raise _Malformed
    return value


def _plain_json(segment: str) -> dict[str, Any]:
    """The verified-cache fast path only: this exact text already passed :func:`_json_object` (the strict
    decoder) when its signature was checked, and the same text decodes to the same value, so the plain
    decoder cannot accept anything the strict one refused here. Never use it on text not seen before."""
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value


def peek_issuer(token: str) -> str | None:
    """The unverified ``iss``, only to choose a verification path; everything is verified after."""
    segments = token.split(".") if isinstance(token, str) and len(token) <= MAX_TOKEN_LENGTH else []
    if len(segments) != 3 or not _SEGMENT.fullmatch(segments[1]):
        return None
    try:
        iss = _json_object(segments[1]).get("iss")
    except _Malformed:
        return None
    return iss if isinstance(iss, str) else None


@dataclass(frozen=True, slots=True)
class _Verified:
    """What a signature check established: the token's text is the key, so only who vouched for it.

    The claims are parsed again on every use rather than kept: ten thousand cached subjects
    with their sets, lists and dicts were eighty thousand objects for the garbage collector to
    walk, a pause of 15-30 ms every few seconds under load; this entry is one."""

    idp: TrustedIdp
    kid: str | None
    alg: str
    key: jwt.PyJWK
    exp: float


class VerifiedTokenCache:
    """Tokens that passed every check, by their exact text, until they expire.

    An MCP server exchanges the same user token for several tools and calls,
    and the signature check is most of the cost of an exchange. A hit is
    returned only while the provider's registration is the very object that
    verified it (any registry change makes a new one) and the key that
    verified it is still the provider's current key object (a refetched key
    set makes new ones); the checks that depend on the request or the time
    (audience, type, expiry, not-before) run again on every use. Bounded: the
    least recently used entry goes first, and expired entries as they are met.
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        self._maxsize = maxsize
        self._entries: OrderedDict[str, _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, leeway: int) -> _Verified | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if entry.exp <= clock.now() - leeway:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry

    def put(self, token: str, entry: _Verified) -> None:
        with self._lock:
            self._entries[token] = entry
            self._entries.move_to_end(token)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _clean(text: str) -> bool:
    return not any(unicodedata.category(ch) in _UNCLEAN_CATEGORIES for ch in text)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    # math.isfinite would overflow on a huge int; ints are finite anyway.
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _normalise_typ(typ: str) -> str:
    typ = typ.lower()
    return typ[len("application/") :] if typ.startswith("application/") else typ


_REQUIRED = ("exp", "iss", "aud")


def verify_token(
    token: str,
    *,
    idps_by_issuer: Mapping[str, TrustedIdp],
    keys: KeyResolver,
    audience: str,
    leeway: int,
    what: str = "subject_token",
    required_typ: str | None = None,
    cache: VerifiedTokenCache | None = None,
) -> VerifiedSubject:
    """Verify ``token`` and say who it is about, or raise InvalidGrant.

    ``audience`` is this client's identifier: a token issued for anyone else
    is refused, so a client cannot pass through a token that was meant for a
    different service. KeyResolver errors other than InvalidGrant (a provider
    outage: TemporarilyUnavailable) propagate unchanged. With a ``cache``, a
    token verified before skips the signature check (see VerifiedTokenCache).
    """

    def fail(reason: str) -> NoReturn:
        # "from None" even outside an except block: no PyJWT exception (or
        # token fragment in its message) ever rides along as __context__.
        raise InvalidGrant(f"{what}: {reason}") from None

    hit = cache.get(token, leeway) if cache is not None else None
    if hit is not None and _still_vouched(hit, idps_by_issuer, keys):
        # This exact text passed steps 1-5 under this registration and key: only its claims are read
        # again, and every check that depends on the request or the time runs as for a new token.
        # Parsed strictly (duplicates, constants) when it was first verified; the same text parses the same.
        head, payload, _ = token.split(".", 2)
        header, claims = _plain_json(head), _plain_json(payload)
        idp = hit.idp
    else:
        header, claims, idp, key = _verify_signature(token, idps_by_issuer, keys, what, fail)
        hit = None
    subject = _subject(claims, header, idp=idp, audience=audience, leeway=leeway, required_typ=required_typ,
                       fail=fail)
    if cache is not None and hit is None:
        cache.put(token, _Verified(idp=idp, kid=header.get("kid"), alg=header["alg"], key=key, exp=subject.exp))
    return subject


def _still_vouched(hit: _Verified, idps_by_issuer: Mapping[str, TrustedIdp], keys: KeyResolver) -> bool:
    """The registration and the key that verified a cached token are still the current ones."""
    if idps_by_issuer.get(hit.idp.issuer) is not hit.idp:
        return False  # the registration changed (or the provider is gone): verify afresh
    try:
        return keys.key_for(hit.idp, hit.kid, hit.alg) is hit.key
    except InvalidGrant:
        return False  # the full path gives the precise reason


def _verify_signature(token: str, idps_by_issuer: Mapping[str, TrustedIdp], keys: KeyResolver, what: str,
                      fail: _Fail) -> tuple[dict[str, Any], dict[str, Any], TrustedIdp, jwt.PyJWK]:
    """Steps 1-5: the token's header, its claims (signed), the provider and the key that vouch for it."""
    # 1. Shape, before any parsing work worth the name.
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        fail("malformed token" if not isinstance(token, str) else "token too large")
    segments = token.split(".")
    if len(segments) != 3 or not all(_SEGMENT.fullmatch(s) for s in segments):
        fail("malformed token")
    try:
        header = _json_object(segments[0])
        unverified = _json_object(segments[1])
    except _Malformed:
        fail("malformed token")
    if "crit" in header:
        fail("unsupported critical header")

    # 2. Algorithm: asymmetric only. "none" and HS* (the "public key as HMAC
    # secret" attack) end here, before any key is looked up.
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
        fail("algorithm not allowed")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        fail("malformed token")

    # 3. Issuer: exact match against the registry, no normalisation.
    iss = unverified.get("iss")
    idp = idps_by_issuer.get(iss) if isinstance(iss, str) else None
    if idp is None:
        fail("untrusted issuer")
    if not idp.enabled:
        fail("issuer is disabled")
    if alg not in idp.algorithms:
        fail("algorithm not allowed for this issuer")

    # 4. Key: from the provider's registered set only. Header members that
    # name a key (jku, x5u, x5c, jwk) are never read.
    try:
        key = keys.key_for(idp, kid, alg)
    except InvalidGrant as exc:
        fail(str(exc.description).removeprefix(f"{what}: "))

    # 5. Signature, with the algorithm object of the key, which is bound to the header's alg.
    # The header and payload were parsed above, strictly; PyJWT's decode would parse them again.
    if getattr(key, "algorithm_name", alg) != alg:
        fail("algorithm not allowed")
    try:
        prepared = key.Algorithm.prepare_key(key.key)
        signature = base64.urlsafe_b64decode(segments[2] + "=" * (-len(segments[2]) % 4))
        valid = key.Algorithm.verify(f"{segments[0]}.{segments[1]}".encode(), prepared, signature)
    except (jwt.PyJWTError, TypeError, ValueError, binascii.Error):
        fail("key is unusable")
    if not valid:
        fail("bad signature")
    return header, unverified, idp, key


def _subject(claims: dict[str, Any], header: Mapping[str, Any], *, idp: TrustedIdp, audience: str, leeway: int,
             required_typ: str | None, fail: _Fail) -> VerifiedSubject:
    """Steps 6-8, on claims whose signature holds: time, audience, type, and who it is about."""
    # 6. Registered claims (RFC 7519 section 4.1), the checks PyJWT's decode makes.
    _registered_claims(claims, issuer=idp.issuer, audience=audience, leeway=leeway, fail=fail)

    # 7. Token type, when the caller requires one (e.g. RFC 9068 at+jwt).
    if required_typ is not None:
        typ = header.get("typ")
        if not isinstance(typ, str) or _normalise_typ(typ) != _normalise_typ(required_typ):
            fail("wrong token type")

    # 8. Subject.
    sub = claims.get(idp.subject_claim)
    if sub is None:
        fail("missing subject")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_LENGTH or not _clean(sub):
        fail("invalid subject")

    return VerifiedSubject(
        idp=idp.name,
        namespace=idp.namespace,
        sub=sub,
        groups=_groups(claims, idp.groups_claim, fail),
        attributes=_attributes(claims, idp.attribute_claims),
        claims=claims,
        exp=int(claims["exp"]),
        act=_actor_claim(claims, "act", fail),
        may_act=_actor_claim(claims, "may_act", fail),
        scope=_scope(claims, fail),
    )


def _registered_claims(claims: Mapping[str, Any], *, issuer: str, audience: str, leeway: int, fail: _Fail) -> None:
    for name in _REQUIRED:
        if claims.get(name) is None:
            fail(f"missing {name} claim")
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _is_number(claims[name]):
            fail(f"malformed {name}")
    now = clock.now()
    if "iat" in claims and claims["iat"] > now + leeway:
        fail("not yet valid")
    if "nbf" in claims and claims["nbf"] > now + leeway:
        fail("not yet valid")
    if claims["exp"] <= now - leeway:
        fail("expired")
    if claims["iss"] != issuer:
        fail("issuer mismatch")
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if audiences is None or not all(isinstance(a, str) for a in audiences) or audience not in audiences:
        fail("audience does not include this client")
    if "sub" in claims and not isinstance(claims["sub"], str):
        fail("malformed sub")
    if "jti" in claims and not isinstance(claims["jti"], str):
        fail("malformed jti")


# ----------------------------------------------------------------------- claim parsers


class _Fail(Protocol):
    def __call__(self, reason: str) -> NoReturn: ...


def _groups(claims: Mapping[str, Any], name: str, fail: _Fail) -> frozenset[str]:
    """Groups feed policy, so an unexpected shape is refused, never guessed at."""
    if name not in claims:
        return frozenset()
    value = claims[name]
    if isinstance(value, str):
        items: list[Any] = value.split()
    elif isinstance(value, list):
        items = value
    else:
        fail("invalid groups claim")
    if len(items) > MAX_GROUPS:
        fail("too many groups")
    if not all(isinstance(g, str) and _clean(g) for g in items):
        fail("invalid groups claim")
    return frozenset(g for g in items if g)


def _attributes(claims: Mapping[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """Copy only allowlisted, simply-typed claims: policy and templates must not see anything richer."""
    out: dict[str, Any] = {}
    for name in allowed:
        value = claims.get(name)
        if isinstance(value, (str, int, bool)):
            out[name] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[name] = list(value)
    return out


def _actor_claim(claims: Mapping[str, Any], name: str, fail: _Fail) -> Mapping[str, Any] | None:
    """``act`` / ``may_act`` (RFC 8693 section 4): objects naming a ``sub``; ``act`` may nest."""
    if name not in claims:
        return None
    value = claims[name]
    node, depth = value, 0
    while True:
        if not isinstance(node, dict) or not isinstance(node.get("sub"), str) or not node["sub"]:
            fail(f"invalid {name} claim")
        if "act" not in node:
            break
        depth += 1
        if depth >= MAX_ACT_DEPTH:
            fail(f"invalid {name} claim")
        node = node["act"]
    return value  # type: ignore[no-any-return]


def _scope(claims: Mapping[str, Any], fail: _Fail) -> frozenset[str]:
    """``scope`` (RFC 8693/9068: a space-separated string) or ``scp`` (a list, or a string at Entra ID)."""
    for name in ("scope", "scp"):
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list) and all(isinstance(v, str) and " " not in v for v in value):
            return frozenset(v for v in value if v)
        fail(f"invalid {name} claim")
    return frozenset()
