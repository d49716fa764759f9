"""Verification keys of trusted identity providers, cached per process.

The cache sits on the hot path of every exchange and in front of systems we do
not control, so it is built around three rules:

* The key only ever comes from the provider's registered key set (inline, or
  fetched from its registered ``jwks_uri``). Nothing in a token (``jku``,
  ``x5u``, ``x5c``, ``jwk``) can point us somewhere else.
* An attacker must not be able to turn us into a load generator against the
  provider: refetches for unknown ``kid`` values are rate-limited per provider
  and single-flight, and failed fetches back off.
* A provider outage must not log everybody out: the last good key set keeps
  being served, past its age, until a fetch succeeds again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from .. import clock
from ..errors import ConfigurationError, InvalidGrant, TemporarilyUnavailable
from ..kernel import strictjson
from ..loopback import is_loopback
from .types import ASYMMETRIC_ALGORITHMS, TrustedIdp

__all__ = ["MAX_DOCUMENT_BYTES", "MIN_CACHE_AGE", "FetchError", "JwksCache", "check_fetch_url", "fetch_json"]

log = logging.getLogger(__name__)

#: Key sets and discovery documents are a few KiB; anything far bigger is an
#: error or an attack, and must not be buffered without bound.
MAX_DOCUMENT_BYTES = 512 * 1024
#: Lower bound for a provider's ``Cache-Control: max-age``, so that a provider
#: sending ``max-age=0`` does not make us fetch on every exchange.
MIN_CACHE_AGE = 60.0
#: RSA keys shorter than this are refused: a key set is not a reason to accept
#: signatures NIST deprecated (SP 800-131A).
MIN_RSA_BITS = 2048

_PUBLIC_MEMBERS: dict[str, tuple[str, ...]] = {
    "RSA": ("n", "e"),
    "EC": ("crv", "x", "y"),
    "OKP": ("crv", "x"),
}
_EC_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})


class FetchError(Exception):
    """A document could not be fetched or parsed. The message is short and holds no response body."""


# --------------------------------------------------------------------------- URL policy


def check_fetch_url(url: str, allow_insecure_loopback: bool = False) -> None:
    """Refuse any URL we would not fetch keys or metadata from.

    Keys fetched over plain http could be swapped by anyone on the path, which
    would let them mint subject tokens; plain http is only tolerated on the
    loopback interface, and only when a developer opted in.
    """
    if not isinstance(url, str) or not url:
        raise ConfigurationError("URL: must be a non-empty string")
    if len(url) > 2000 or any(ord(c) < 0x21 or ord(c) > 0x7E for c in url):
        raise ConfigurationError("URL: too long, or has characters a URL may not contain")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise ConfigurationError(f"URL {url!r} is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        # Never echo the URL: its userinfo may be a credential.
        raise ConfigurationError("URL: must not contain user information (credentials)")
    if not host:
        raise ConfigurationError(f"URL {url!r} has no host")
    if parts.fragment:
        raise ConfigurationError(f"URL {url!r} must not have a fragment")
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    if scheme == "http" and is_loopback(host):
        if allow_insecure_loopback:
            return
        raise ConfigurationError(
            f"URL {url!r} uses http; allowed on loopback only with allow_insecure_loopback (development)"
        )
    raise ConfigurationError(f"URL {url!r} must use https")


# --------------------------------------------------------------------------- HTTP


def fetch_json(
    client: httpx.Client,
    url: str,
    *,
    allow_insecure_loopback: bool,
    timeout: float,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> tuple[Any, httpx.Headers]:
    """GET a JSON document under our fetch policy; raise FetchError on any failure.

    Redirects are not followed (a redirect could lead off the registered,
    policy-checked URL), the body is capped (a hostile or broken endpoint must
    not exhaust memory), and the whole fetch has a deadline because httpx's
    timeout is per read and a slow drip would otherwise hold a request thread.
    """
    check_fetch_url(url, allow_insecure_loopback)
    deadline = clock.monotonic() + 2 * timeout
    buf = bytearray()
    try:
        with client.stream(
            "GET",
            url,
            headers={"Accept": "application/json, application/jwk-set+json", "Accept-Encoding": "identity"},
            follow_redirects=False,
            timeout=timeout,
        ) as resp:
            if resp.status_code != 200:
                if resp.is_redirect:
                    raise FetchError(f"HTTP {resp.status_code} (redirects are not followed)")
                raise FetchError(f"HTTP {resp.status_code}")
            length = resp.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise FetchError("response too large")
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > max_bytes:
                    raise FetchError("response too large")
                if clock.monotonic() > deadline:
                    raise FetchError("response too slow")
            headers = resp.headers
    except httpx.HTTPError as exc:
        raise FetchError(type(exc).__name__) from None
    try:
        # Strict: a key set with duplicate members could name one key to us and another to a peer.
        return strictjson.loads(bytes(buf)), headers
    except strictjson.StrictJSONError:
        raise FetchError("response is not JSON") from None


def _cache_age(headers: httpx.Headers, max_age: float) -> float:
    """How long to trust a fetched key set: the provider's ``max-age``, within our bounds."""
    for directive in headers.get("cache-control", "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.strip().lower() == "max-age":
            value = value.strip().strip('"')
            if value.isdigit():
                return min(max(float(value), MIN_CACHE_AGE), max_age)
    return max_age


# --------------------------------------------------------------------------- key sets


@dataclass(frozen=True)
class _Jwk:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    public: dict[str, Any]  #: public members only; what PyJWK is built from


def _fits(key: _Jwk, alg: str) -> bool:
    if alg[:2] in ("RS", "PS"):
        return key.kty == "RSA"
    if alg in _EC_CURVE_FOR_ALG:
        return key.kty == "EC" and key.crv == _EC_CURVE_FOR_ALG[alg]
    if alg == "EdDSA":
        return key.kty == "OKP" and key.crv in _OKP_CURVES
    return False


def _default_alg(key: _Jwk) -> str:
    if key.kty == "RSA":
        return "RS256"
    if key.kty == "EC":
        return next(a for a, c in _EC_CURVE_FOR_ALG.items() if c == key.crv)
    return "EdDSA"


def _parse_jwk(raw: Any) -> tuple[_Jwk | None, str]:
    """One member of a key set, or (None, why it is skipped)."""
    if not isinstance(raw, Mapping):
        return None, "not an object"
    kty = raw.get("kty")
    if kty not in _PUBLIC_MEMBERS:
        # Symmetric ("oct") keys in particular: a shared secret has no place in
        # a set of verification keys and must never verify anything.
        return None, f"kty {kty!r} is not used" if isinstance(kty, str) else "no kty"
    use = raw.get("use")
    if use is not None and use != "sig":
        return None, "not a signature key (use)"
    ops = raw.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None, "not a verification key (key_ops)"
    kid = raw.get("kid")
    alg = raw.get("alg")
    if (kid is not None and not isinstance(kid, str)) or (alg is not None and not isinstance(alg, str)):
        return None, "kid or alg is not a string"
    # Only the public members (plus kid, so PyJWK.key_id works for callers' logs):
    # a published private member is never turned into a key object.
    public = {"kty": kty} if kid is None else {"kty": kty, "kid": kid}
    for member in _PUBLIC_MEMBERS[kty]:
        value = raw.get(member)
        if not isinstance(value, str) or not value:
            return None, f"missing {member}"
        public[member] = value
    crv = public.get("crv")
    if kty == "EC" and crv not in _EC_CURVE_FOR_ALG.values():
        return None, "unsupported curve"
    if kty == "OKP" and crv not in _OKP_CURVES:
        return None, "unsupported curve"
    key = _Jwk(kid=kid, kty=kty, crv=crv, alg=alg, public=public)
    try:
        built = jwt.PyJWK(dict(public), _default_alg(key))
    except jwt.PyJWTError:
        return None, "invalid key material"
    if kty == "RSA" and built.key.key_size < MIN_RSA_BITS:
        return None, f"RSA key shorter than {MIN_RSA_BITS} bits"
    return key, ""


class _KeySet:
    """A parsed key set. Immutable, except for a memo of built PyJWK objects."""

    def __init__(self, keys: Sequence[_Jwk], *, uri: str | None, fetched_at: float, ttl: float) -> None:
        self.keys = tuple(keys)
        self.uri = uri
        self.fetched_at = fetched_at
        self.ttl = ttl
        # Racing threads may both build the same PyJWK; the last write wins and
        # both are equal, so this needs no lock.
        self._built: dict[tuple[int, str], jwt.PyJWK] = {}

    @classmethod
    def parse(cls, doc: Any, *, source: str, uri: str | None, fetched_at: float, ttl: float) -> _KeySet:
        """Raise FetchError when ``doc`` holds no usable key: such a set must not replace a good one."""
        if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
            raise FetchError("not a JWK Set")
        keys = []
        for i, raw in enumerate(doc["keys"]):
            key, why = _parse_jwk(raw)
            if key is None:
                log.debug("jwks %s: key %d skipped: %s", source, i, why)
            else:
                keys.append(key)
        if not keys:
            raise FetchError("no usable signature key in the set")
        return cls(keys, uri=uri, fetched_at=fetched_at, ttl=ttl)

    def fresh_at(self, now: float) -> bool:
        return now - self.fetched_at < self.ttl

    def select(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key for (kid, alg); None when no key has that kid (a refetch may help).

        Raises InvalidGrant when the answer is definite and negative (a key
        exists but does not fit, or the choice is ambiguous): refetching would
        not change it.
        """
        if kid is None:
            candidates = [i for i, k in enumerate(self.keys) if _fits(k, alg) and k.alg in (None, alg)]
            if len(candidates) > 1:
                raise InvalidGrant("token has no kid and several keys fit")
            return self._build(candidates[0], alg) if candidates else None
        matching = [i for i, k in enumerate(self.keys) if k.kid == kid]
        if not matching:
            return None
        fitting = [i for i in matching if _fits(self.keys[i], alg)]
        if not fitting:
            raise InvalidGrant("key does not fit the token algorithm")
        if len(fitting) > 1:
            raise InvalidGrant("several keys share the key id")
        if self.keys[fitting[0]].alg not in (None, alg):
            raise InvalidGrant("key is bound to another algorithm")
        return self._build(fitting[0], alg)

    def _build(self, index: int, alg: str) -> jwt.PyJWK:
        built = self._built.get((index, alg))
        if built is None:
            try:
                # Binding the PyJWK to the token's alg is what makes PyJWT check
                # header alg == key alg when it verifies.
                built = jwt.PyJWK(dict(self.keys[index].public), alg)
            except jwt.PyJWTError:
                raise InvalidGrant("key is unusable") from None
            self._built[(index, alg)] = built
        return built


@dataclass
class _IdpState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    keyset: _KeySet | None = None  #: the last good set
    last_miss_refetch: float | None = None
    last_failure: float | None = None
    fetches: int = 0
    failures: int = 0
    suppressed: int = 0  #: fetches skipped by the cooldown or the failure back-off


class JwksCache:
    """Resolve (provider, kid, alg) to a verification key.

    One instance per process, shared by all request threads. It satisfies
    :class:`issuer.identity.verify.KeyResolver`.
    """

    def __init__(
        self,
        *,
        max_age: float = 300,
        refetch_cooldown: float = 10,
        http_timeout: float = 3.0,
        allow_insecure_loopback: bool = False,
        transport: httpx.BaseTransport | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._on_failure = on_failure  #: told the provider's name on every failed fetch (metrics)
        if max_age <= 0 or refetch_cooldown < 0 or http_timeout <= 0:
            raise ConfigurationError("JwksCache: max_age and http_timeout must be > 0, refetch_cooldown >= 0")
        self.max_age = float(max_age)
        self.refetch_cooldown = float(refetch_cooldown)
        self.http_timeout = float(http_timeout)
        self.allow_insecure_loopback = allow_insecure_loopback
        # One client for the life of the process: connection reuse keeps the
        # TLS handshakes off the exchange path when a refetch is needed.
        self._client = httpx.Client(transport=transport, timeout=http_timeout, follow_redirects=False)
        self._lock = threading.Lock()
        self._states: dict[str, _IdpState] = {}
        self._inline: dict[str, tuple[Mapping[str, Any], _KeySet]] = {}

    # ------------------------------------------------------------------ public

    def key_for(self, idp: TrustedIdp, kid: str | None, alg: str) -> jwt.PyJWK:
        """The key that must have signed a token of ``idp`` with header (kid, alg).

        Raises InvalidGrant when the token cannot be verified with the
        provider's keys, TemporarilyUnavailable when the keys could never be
        obtained, and ConfigurationError when the provider's registration
        is unusable (no key source, or a URL our policy refuses).
        """
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise InvalidGrant("algorithm not allowed")
        if kid is not None and not isinstance(kid, str):
            raise InvalidGrant("malformed key id")
        if idp.jwks is not None:
            key = self._inline_set(idp).select(kid, alg)
            if key is None:
                raise InvalidGrant("unknown key id")
            return key
        uri = idp.jwks_uri
        if not uri:
            raise ConfigurationError(f"identity provider {idp.name!r} has neither jwks nor jwks_uri")

        state = self._state(idp.name)
        keyset = self._current(state, uri)
        if keyset is not None:
            key = keyset.select(kid, alg)
            if key is not None:
                if keyset.fresh_at(clock.monotonic()):
                    return key
                # Stale but holding the key: if another thread is already
                # refreshing, serve the stale key rather than queue behind it.
                if not state.lock.acquire(blocking=False):
                    return key
                try:
                    return self._resolve_locked(idp.name, uri, state, kid, alg)
                finally:
                    state.lock.release()
        with state.lock:
            return self._resolve_locked(idp.name, uri, state, kid, alg)

    def invalidate(self, idp_name: str) -> None:
        """Forget a provider's keys, e.g. after an admin changed its registration."""
        with self._lock:
            self._states.pop(idp_name, None)
            self._inline.pop(idp_name, None)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per provider: fetches attempted, failed, and skipped (cooldown or back-off)."""
        with self._lock:
            states = dict(self._states)
        return {
            name: {"fetches": s.fetches, "failures": s.failures, "suppressed": s.suppressed}
            for name, s in states.items()
        }

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ internals

    def _state(self, name: str) -> _IdpState:
        with self._lock:
            state = self._states.get(name)
            if state is None:
                state = self._states[name] = _IdpState()
            return state

    @staticmethod
    def _current(state: _IdpState, uri: str) -> _KeySet | None:
        keyset = state.keyset
        # A set fetched from a URI the provider no longer has is not its key set.
        return keyset if keyset is not None and keyset.uri == uri else None

    def _in_backoff(self, state: _IdpState, now: float) -> bool:
        return state.last_failure is not None and now - state.last_failure < self.refetch_cooldown

    def _resolve_locked(self, name: str, uri: str, state: _IdpState, kid: str | None, alg: str) -> jwt.PyJWK:
        now = clock.monotonic()
        keyset = self._current(state, uri)  # another thread may have refreshed it meanwhile
        fetched = False
        if keyset is None or not keyset.fresh_at(now):
            if self._in_backoff(state, now):
                state.suppressed += 1
            else:
                keyset = self._fetch(name, uri, state, now)
                fetched = True
            if keyset is None:
                raise TemporarilyUnavailable("the identity provider's keys are unavailable; retry later")
        key = keyset.select(kid, alg)
        if key is not None:
            return key
        if fetched:
            # This fetch was the refetch: the kid is not at the provider now.
            state.last_miss_refetch = now
            raise InvalidGrant("unknown key id")
        cooling = (
            state.last_miss_refetch is not None and now - state.last_miss_refetch < self.refetch_cooldown
        )
        if cooling or self._in_backoff(state, now):
            state.suppressed += 1
            raise InvalidGrant("unknown key id")
        state.last_miss_refetch = now
        keyset = self._fetch(name, uri, state, now)
        assert keyset is not None  # we had a set before, and a failed fetch keeps it
        key = keyset.select(kid, alg)
        if key is None:
            raise InvalidGrant("unknown key id")
        return key

    def _fetch(self, name: str, uri: str, state: _IdpState, now: float) -> _KeySet | None:
        """Fetch and install a provider's set; on failure keep (and return) the last good one."""
        state.fetches += 1
        try:
            doc, headers = fetch_json(
                self._client,
                uri,
                allow_insecure_loopback=self.allow_insecure_loopback,
                timeout=self.http_timeout,
            )
            keyset = _KeySet.parse(
                doc, source=name, uri=uri, fetched_at=now, ttl=_cache_age(headers, self.max_age)
            )
        except FetchError as exc:
            state.failures += 1
            state.last_failure = now
            if self._on_failure is not None:
                self._on_failure(name)
            previous = self._current(state, uri)
            log.warning(
                "jwks fetch for identity provider %s from %s failed: %s; %s",
                name,
                uri,
                exc,
                "serving the last good key set" if previous is not None else "no key set to fall back on",
            )
            return previous
        state.keyset = keyset
        state.last_failure = None
        return keyset

    def _inline_set(self, idp: TrustedIdp) -> _KeySet:
        assert idp.jwks is not None
        with self._lock:
            cached = self._inline.get(idp.name)
        # Registry views may rebuild the mapping per request; compare by value.
        if cached is not None and (cached[0] is idp.jwks or cached[0] == idp.jwks):
            return cached[1]
        try:
            keyset = _KeySet.parse(idp.jwks, source=idp.name, uri=None, fetched_at=0.0, ttl=float("inf"))
        except FetchError as exc:
            raise ConfigurationError(f"identity provider {idp.name!r}: inline jwks: {exc}") from None
        with self._lock:
            self._inline[idp.name] = (idp.jwks, keyset)
        return keyset
