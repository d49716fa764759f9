"""The issuer's verification keys: a pinned set, or its JWKS fetched and cached.

Lessons from PyJWT's ``PyJWKClient``, done the other way round:

* A failed fetch never clears anything: the last good set keeps being served,
  past its age, while the issuer is unreachable.
* An unknown ``kid`` triggers a refetch, but at most one per
  ``refetch_cooldown`` and single-flight (one lock), so a flood of tokens with
  random ``kid`` values cannot turn the verifier into a load generator.
* Only ES256 (EC P-256) and EdDSA (OKP Ed25519) signature keys with a ``kid``
  are kept; a key's own ``alg`` must agree.  Keys are built from their public
  members only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from ... import clock
from ._http import FetchError
from .errors import InvalidToken, IssuerUnavailable

__all__ = ["ALGORITHMS", "KeySet", "KeySource"]

log = logging.getLogger("issuer.sdk.verifier")

#: The explicit allowlist: ``none``, HMAC and RSA are never accepted.
ALGORITHMS: frozenset[str] = frozenset({"ES256", "EdDSA"})
_MAX_KID = 256


def _alg_of(raw: Mapping[str, Any]) -> tuple[str, dict[str, str]] | None:
    """The algorithm a JWK is usable with and its public members, or None to skip it."""
    kty = raw.get("kty")
    crv = raw.get("crv")
    members: tuple[str, ...]
    if kty == "EC" and crv == "P-256":
        alg, members = "ES256", ("crv", "x", "y")
    elif kty == "OKP" and crv == "Ed25519":
        alg, members = "EdDSA", ("crv", "x")
    else:
        return None
    public = {"kty": kty}
    for member in members:
        value = raw.get(member)
        if not isinstance(value, str) or not value:
            return None
        public[member] = value
    return alg, public


class KeySet:
    """An immutable ``kid -> (alg, key)`` map parsed from a JWK Set."""

    def __init__(self, keys: Mapping[str, tuple[str, jwt.PyJWK]], fetched_at: float) -> None:
        self._keys = dict(keys)
        self.fetched_at = fetched_at

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def parse(cls, doc: Any, fetched_at: float = 0.0) -> KeySet:
        """Raise ValueError when ``doc`` is not a JWK Set or holds no usable key."""
        if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
            raise ValueError("not a JWK Set")
        keys: dict[str, tuple[str, jwt.PyJWK]] = {}
        ambiguous: set[str] = set()
        for raw in doc["keys"]:
            if not isinstance(raw, Mapping):
                continue
            kid = raw.get("kid")
            if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID:
                continue
            use = raw.get("use")
            ops = raw.get("key_ops")
            if (use is not None and use != "sig") or (ops is not None and (not isinstance(ops, list)
                                                                           or "verify" not in ops)):
                continue
            found = _alg_of(raw)
            if found is None:
                continue
            alg, public = found
            if raw.get("alg") not in (None, alg):
                continue
            try:
                key = jwt.PyJWK(public, alg)
            except Exception as exc:  # PyJWT's errors, and cryptography's for points off the curve
                log.debug("JWKS key %r skipped: %s", kid, type(exc).__name__)
                continue
            if kid in keys:
                ambiguous.add(kid)
            keys[kid] = (alg, key)
        for kid in ambiguous:  # two keys under one kid: neither can be chosen safely
            del keys[kid]
        if not keys:
            raise ValueError("no usable ES256 or EdDSA signature key in the set")
        return cls(keys, fetched_at)

    def select(self, kid: str, alg: str) -> jwt.PyJWK | None:
        """The key for (kid, alg); None if the kid is unknown; InvalidToken if the kid names another kind of key."""
        entry = self._keys.get(kid)
        if entry is None:
            return None
        if entry[0] != alg:
            raise InvalidToken("the signing key does not match the token algorithm")
        return entry[1]


class KeySource:
    """Resolve (kid, alg) to a key: pinned, or fetched through ``fetch`` with the rules above."""

    def __init__(
        self,
        *,
        pinned: KeySet | None,
        fetch: Callable[[], Any] | None,
        max_age: float,
        refetch_cooldown: float,
    ) -> None:
        self._pinned = pinned
        self._fetch = fetch
        self.max_age = max_age
        self.refetch_cooldown = refetch_cooldown
        self._lock = threading.Lock()
        self._keyset: KeySet | None = None  #: the last good fetched set
        self._last_attempt: float | None = None
        self.fetches = 0  #: attempts made (for stats and tests)

    def key_for(self, kid: str, alg: str) -> jwt.PyJWK:
        if self._pinned is not None:
            key = self._pinned.select(kid, alg)
            if key is None:
                raise InvalidToken("unknown signing key")
            return key
        keyset = self._keyset
        if keyset is not None:
            key = keyset.select(kid, alg)
            if key is not None:
                if clock.monotonic() - keyset.fetched_at < self.max_age:
                    return key
                # Stale but holding the key: refresh if nobody else is and the cooldown allows;
                # otherwise serve the stale key rather than queue behind a fetch.
                if not self._lock.acquire(blocking=False):
                    return key
                try:
                    if not self._refresh_locked():
                        return key
                finally:
                    self._lock.release()
                return self._select_or_refuse(kid, alg)
        with self._lock:
            keyset = self._keyset
            key = keyset.select(kid, alg) if keyset is not None else None
            if key is not None:  # another thread fetched it while we waited
                return key
            self._refresh_locked()
            return self._select_or_refuse(kid, alg)

    def _select_or_refuse(self, kid: str, alg: str) -> jwt.PyJWK:
        keyset = self._keyset
        if keyset is None:
            raise IssuerUnavailable("the issuer's signing keys could not be fetched",
                                    retry_after=int(self.refetch_cooldown) or 1)
        key = keyset.select(kid, alg)
        if key is None:
            raise InvalidToken("unknown signing key")
        return key

    def _refresh_locked(self) -> bool:
        """Fetch once if the cooldown allows; True if a new set was installed. Caller holds the lock."""
        assert self._fetch is not None
        now = clock.monotonic()
        if self._last_attempt is not None and now - self._last_attempt < self.refetch_cooldown:
            return False
        self._last_attempt = now
        self.fetches += 1
        try:
            keyset = KeySet.parse(self._fetch(), fetched_at=now)
        except (FetchError, ValueError) as exc:
            log.warning("issuer JWKS fetch failed (%s); %s", exc,
                        "keeping the last good key set" if self._keyset is not None else "no key set yet")
            return False
        self._keyset = keyset
        return True
