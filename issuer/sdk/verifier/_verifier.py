"""CapabilityVerifier: verify a capability, then authorize the call against the real user."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ... import clock
from ...constraints import ConstraintViolation, evaluate_prepared
from ...dpop import DPoPError, verify_proof
from ...kernel import strictjson
from ...tool_invocation import arguments_digest
from ._bearer import authorization_token
from ._capability import Capability, capability_from_claims
from ._discovery import Discovery
from ._http import check_url, fetch_json
from ._keys import ALGORITHMS, KeySet, KeySource
from ._replay import DEFAULT_REPLAY_PREFIX, MemoryReplayCache, RedisLike, RedisReplayCache, ReplayCache
from ._revocation import FEED_TYP, RevocationPoller
from .errors import (
    CapabilityError,
    ConstraintViolated,
    ExpiredToken,
    InsufficientScope,
    InvalidDPoPProof,
    InvalidToken,
    Replayed,
)

__all__ = ["MAX_TOKEN_LENGTH", "CapabilityVerifier"]

log = logging.getLogger("issuer.sdk.verifier")

#: A capability travels in an HTTP header; anything larger is refused before parsing.
MAX_TOKEN_LENGTH = 16 * 1024
_TYP = "at+jwt"
_MAX_KID = 256
#: Seconds a DPoP proof is accepted after its iat (plus the leeway): one request's worth, as at the issuer.
DPOP_MAX_AGE = 60
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


_ES256 = ec.ECDSA(hashes.SHA256())


def _signature_valid(alg: str, key: jwt.PyJWK, message: bytes, signature: bytes) -> bool:
    """The signature check itself, with ``cryptography``: the two algorithms of ALGORITHMS, nothing else."""
    try:
        if alg == "ES256":
            if len(signature) != 64:  # JWS ES256 is r || s, 32 bytes each (RFC 7518 section 3.4)
                return False
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.key.verify(der, message, _ES256)
        elif alg == "EdDSA":
            key.key.verify(signature, message)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True




class _Seen:
    """Capabilities verified before, by their exact text: the repeat calls of one session cost a lookup.

    An entry is reused only while the key that verified it is still the issuer's
    key for its ``kid`` (a refetched key set replaces the key objects), and is
    dropped at expiry; revocation is checked on every use, as for a new token.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[str, tuple[Capability, str, str, jwt.PyJWK]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[Capability, str, str, jwt.PyJWK] | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def put(self, token: str, entry: tuple[Capability, str, str, jwt.PyJWK]) -> None:
        with self._lock:
            self._entries[token] = entry
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def drop(self, token: str) -> None:
        with self._lock:
            self._entries.pop(token, None)

    def __len__(self) -> int:
        return len(self._entries)


class CapabilityVerifier:
    """Verifies capabilities minted by one issuer for one tool.  Create one per process and share it.

    It is thread-safe and holds the expensive state - the issuer's metadata and
    key set, the revocation list and its poller, the in-process replay cache -
    so building one per request would refetch keys every time.

    Parameters (all keyword-only):

    ``issuer``
        The issuer URL, exactly as capabilities carry it in ``iss`` and as its
        RFC 8414 metadata names it.
    ``audience``
        This tool's registered resource URI: ``aud`` must be exactly this (a
        string, or a one-element array).
    ``jwks``
        A pinned JWK Set (``{"keys": [...]}``): verification is then offline,
        keys are never fetched.  Default: discover ``jwks_uri`` from the metadata.
    ``jwks_max_age``, ``refetch_cooldown``
        Fetched keys are refreshed after ``jwks_max_age`` seconds; an unknown
        ``kid`` (or a stale set) causes at most one fetch per
        ``refetch_cooldown`` seconds.  The last good set is kept while the
        issuer is unreachable.
    ``leeway``
        Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds.
    ``replay_cache``
        A redis-py client (anything with ``set(name, value, nx=True, ex=s)``)
        shared by every worker, keys under ``replay_key_prefix``.  Default: an
        in-process map, right for a single process only.
    ``revocation_poll_interval``
        Poll the issuer's ``revocation_feed_endpoint`` every this many
        seconds; None (default) disables revocation checks.  A daemon thread
        polls (started by the first :meth:`verify`, which polls once
        synchronously; restarted after a fork; stopped by :meth:`close` or
        leaving a ``with`` block).  A capability whose ``jti`` is listed, or
        whose ``sub`` was revoked after its ``iat``, raises :class:`Revoked`.
        If the list has not been refreshed for ``2 * interval + timeout``
        seconds, :meth:`verify` tries one poll itself and otherwise raises
        :class:`IssuerUnavailable`: staleness is bounded, never silent.
        Polling uses discovery even with a pinned ``jwks``.
    ``allow_insecure_loopback``
        Accept ``http://`` for loopback hosts (development and tests only).
    ``timeout``
        Seconds for each HTTP request to the issuer.
    ``cache_size``
        How many verified capabilities to remember (by their exact text), so
        that the repeat calls of one session skip the signature check; 0
        disables it.  Expiry, the current key and revocation are checked on
        every use.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: Mapping[str, Any] | None = None,
        jwks_max_age: float = 300,
        refetch_cooldown: float = 30,
        leeway: float = 30,
        replay_cache: RedisLike | None = None,
        replay_key_prefix: str = DEFAULT_REPLAY_PREFIX,
        revocation_poll_interval: float | None = None,
        allow_insecure_loopback: bool = False,
        timeout: float = 3.0,
        cache_size: int = 10_000,
    ) -> None:
        check_url(issuer, allow_insecure_loopback)
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be this tool's resource URI")
        if jwks_max_age <= 0 or refetch_cooldown < 0 or timeout <= 0 or not 0 <= leeway <= 300:
            raise ValueError("jwks_max_age and timeout must be > 0, refetch_cooldown >= 0, 0 <= leeway <= 300")
        if revocation_poll_interval is not None and revocation_poll_interval <= 0:
            raise ValueError("revocation_poll_interval must be > 0 seconds, or None")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._seen = _Seen(cache_size) if cache_size else None
        self.issuer = issuer
        self.audience = audience
        self.leeway = float(leeway)
        self.timeout = float(timeout)
        self.allow_insecure_loopback = allow_insecure_loopback
        self._discovery = Discovery(issuer, max_age=float(jwks_max_age), timeout=self.timeout,
                                    allow_insecure_loopback=allow_insecure_loopback)
        pinned = None
        if jwks is not None:
            try:
                pinned = KeySet.parse(jwks)
            except ValueError as exc:
                raise ValueError(f"jwks: {exc}") from None
        self._keys = KeySource(
            pinned=pinned,
            fetch=None if pinned is not None else self._fetch_jwks,
            max_age=float(jwks_max_age),
            refetch_cooldown=float(refetch_cooldown),
        )
        self._replay: ReplayCache
        if replay_cache is None:
            self._replay = MemoryReplayCache()
        elif callable(getattr(replay_cache, "set", None)):
            self._replay = RedisReplayCache(replay_cache, replay_key_prefix)
        else:
            raise TypeError("replay_cache must be a redis-like client with set(name, value, nx=True, ex=seconds)")
        self._revocations: RevocationPoller | None = None
        if revocation_poll_interval is not None:
            self._revocations = RevocationPoller(
                self._discovery,
                self._verify_feed,
                issuer=issuer,
                interval=float(revocation_poll_interval),
                timeout=self.timeout,
                leeway=self.leeway,
                allow_insecure_loopback=allow_insecure_loopback,
                retry_interval=min(float(revocation_poll_interval), max(float(refetch_cooldown), 1.0)),
            )
        self._closed = False

    def __repr__(self) -> str:
        return f"CapabilityVerifier(issuer={self.issuer!r}, audience={self.audience!r})"

    # ------------------------------------------------------------------ verify

    def verify(self, token: str) -> Capability:
        """Check the capability's signature and claims (and revocation); return what it grants.

        Raises :class:`InvalidToken` (or a subclass: :class:`ExpiredToken`,
        :class:`WrongAudience`, :class:`Revoked`) and
        :class:`IssuerUnavailable` when the issuer's keys or revocation list
        cannot be had.  Authorization is :meth:`authorize`'s job.  A
        DPoP-bound capability is refused here (:class:`InvalidDPoPProof`): it
        is valid only with a proof of its key, which :meth:`verify_request` checks.
        """
        cap = self._verify(token)
        if cap.dpop_jkt is not None:
            raise InvalidDPoPProof("the capability is DPoP-bound: present it with Authorization: DPoP and a proof")
        return cap

    def verify_request(
        self,
        *,
        authorization: str | Sequence[str] | None,
        dpop: str | Sequence[str] | None = None,
        method: str,
        url: str,
    ) -> Capability:
        """Verify the capability of one HTTP request: ``Authorization: Bearer`` or ``Authorization: DPoP``.

        ``authorization`` and ``dpop`` are the request's header values (a list
        when the framework gives every value of a repeated header); ``method``
        and ``url`` the request's, as the client addressed it (behind a proxy,
        the public URL).  A DPoP-bound capability is admitted only with exactly
        one valid proof (RFC 9449 section 4.3 and 7.1): ``typ``, an allowed
        asymmetric ``alg``, the signature by the public ``jwk``, ``htm`` and
        ``htu`` of this request, a recent ``iat``, ``ath`` = the hash of this
        capability, the key's thumbprint = ``cnf.jkt``, and a ``jti`` seen once
        (in the replay cache: shared by every process when it is Redis).
        """
        values = [authorization] if isinstance(authorization, str) else list(authorization or ())
        scheme, token = authorization_token(values)
        try:
            cap = self._verify(token)
            if scheme == "dpop":
                self._check_proof(cap, token, dpop, method=method, url=url)
            elif cap.dpop_jkt is not None:
                raise InvalidDPoPProof("the capability is DPoP-bound: present it with Authorization: DPoP and a proof")
        except CapabilityError as e:
            if scheme == "dpop" or isinstance(e, InvalidDPoPProof):
                e.scheme = "DPoP"
            raise
        return cap

    def _check_proof(self, cap: Capability, token: str, dpop: str | Sequence[str] | None, *, method: str,
                     url: str) -> None:
        if cap.dpop_jkt is None:
            raise InvalidToken("the capability is not DPoP-bound: present it as Bearer")
        proofs = [dpop] if isinstance(dpop, str) else list(dpop or ())
        # Servers join repeated headers with commas; a compact JWS never holds one.
        if len(proofs) != 1 or "," in proofs[0]:
            raise InvalidDPoPProof("exactly one DPoP proof header is required")
        now = clock.now()
        try:
            proof = verify_proof(proofs[0].strip(), method=method.upper(), url=url, now=now, max_age=DPOP_MAX_AGE,
                                 leeway=int(self.leeway), access_token=token)
        except DPoPError as e:
            raise InvalidDPoPProof(f"DPoP proof: {e}") from None
        if not hmac.compare_digest(proof.jkt, cap.dpop_jkt):
            raise InvalidDPoPProof("DPoP proof: made with another key than the capability is bound to")
        seen = hashlib.sha256(f"dpop\x00{proof.jkt}\x00{proof.jti}".encode()).hexdigest()
        if not self._replay.claim(seen, proof.iat + DPOP_MAX_AGE + 2 * self.leeway):
            raise InvalidDPoPProof("DPoP proof: this proof (jti) was already used")

    def check_request(
        self,
        *,
        authorization: str | Sequence[str] | None,
        dpop: str | Sequence[str] | None = None,
        method: str,
        url: str,
        scope: str | None = None,
        action: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> Capability:
        """:meth:`verify_request` then :meth:`authorize`, in one call; return the capability."""
        cap = self.verify_request(authorization=authorization, dpop=dpop, method=method, url=url)
        self.authorize(cap, scope=scope, action=action, arguments=arguments)
        return cap

    def _verify(self, token: str) -> Capability:
        if self._closed:
            raise RuntimeError("the verifier is closed")
        if not isinstance(token, str) or not token:
            raise InvalidToken("the capability must be a non-empty string")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("the capability is too large")
        seen = self._seen.get(token) if self._seen is not None else None
        if seen is not None:
            cap, kid, alg, key = seen
            if self._keys.key_for(kid, alg) is key:
                return self._still_valid(token, cap)
            assert self._seen is not None
            self._seen.drop(token)  # the key set changed: verify afresh
        claims, kid, alg, key = self._signed_payload(token, _TYP, "capability")
        cap = capability_from_claims(claims, issuer=self.issuer, audience=self.audience, now=clock.now(),
                                     leeway=self.leeway)
        if self._revocations is not None:
            self._revocations.ensure_current()
            self._revocations.check(cap)
        if self._seen is not None:
            self._seen.put(token, (cap, kid, alg, key))
        return cap

    def _still_valid(self, token: str, cap: Capability) -> Capability:
        """A capability verified before: only what time and revocation can change is checked again."""
        now = clock.now()
        if now >= cap.expires_at + self.leeway:
            assert self._seen is not None
            self._seen.drop(token)
            raise ExpiredToken()
        if self._revocations is not None:
            self._revocations.ensure_current()
            self._revocations.check(cap)
        return cap

    def _signed_payload(self, token: str, typ: str, what: str) -> tuple[dict[str, Any], str, str, jwt.PyJWK]:
        """A compact JWS of ``typ`` signed by one of the issuer's keys: its payload, kid, alg and key.

        Shared by capabilities and the revocation feed; ``typ`` keeps one from passing for the other."""
        if token.count(".") != 2:
            raise InvalidToken(f"the {what} is not a compact JWS")
        head, payload, signature = token.split(".")
        # An empty signature is left to the header check, so that "alg": "none" is named as such.
        if not (_SEGMENT.fullmatch(head) and _SEGMENT.fullmatch(payload) and _SEGMENT.fullmatch(signature or "A")):
            raise InvalidToken(f"the {what} is not a compact JWS")
        # The issuer's strict decoder (duplicate members, NaN, NUL, surrogates, depth): on first sight
        # only, the seen-before path never parses.
        try:
            header = strictjson.loads(_b64(head))
        except (ValueError, binascii.Error):  # StrictJSONError is a ValueError
            raise InvalidToken(f"the {what} header is malformed") from None
        alg, kid = self._check_header(header, typ, what)
        key = self._keys.key_for(kid, alg)
        try:
            valid = _signature_valid(alg, key, f"{head}.{payload}".encode(), _b64(signature))
        except (ValueError, binascii.Error):
            valid = False
        if not valid:
            raise InvalidToken(f"the {what} signature is invalid")
        try:
            claims = strictjson.loads(_b64(payload))
        except (ValueError, binascii.Error):
            raise InvalidToken(f"the {what} payload is not JSON") from None
        if not isinstance(claims, dict):
            raise InvalidToken(f"the {what} payload is not a JSON object")
        return claims, kid, alg, key

    @staticmethod
    def _check_header(header: Any, expected_typ: str, what: str) -> tuple[str, str]:
        if not isinstance(header, dict):
            raise InvalidToken(f"the {what} header is malformed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") != expected_typ:
            raise InvalidToken(f"the token is not a {what} (typ must be {expected_typ})")
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"the {what}'s signature algorithm is not allowed")
        if "crit" in header:
            raise InvalidToken(f"the {what} uses critical header parameters")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID:
            raise InvalidToken(f"the {what} names no valid signing key (kid)")
        return alg, kid

    def _verify_feed(self, document: str) -> dict[str, Any]:
        """The revocation feed's payload, if the issuer signed it (the poller checks the rest)."""
        return self._signed_payload(document, FEED_TYP, "revocation feed")[0]

    def _fetch_jwks(self) -> Any:
        return fetch_json(self._discovery.get().jwks_uri, timeout=self.timeout,
                          allow_insecure_loopback=self.allow_insecure_loopback, max_bytes=512 * 1024)

    # ------------------------------------------------------------------ authorize

    def authorize(
        self,
        cap: Capability,
        *,
        scope: str | None = None,
        action: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Refuse unless ``cap`` admits this call; return None when it does.

        * ``scope``: each (space-separated) scope must be granted, else
          :class:`InsufficientScope`.
        * ``action``: every ``tool_invocation`` detail listing ``actions`` must
          list it (a detail without ``actions`` leaves actions to the scopes),
          else :class:`InsufficientScope`.
        * ``arguments``: must satisfy every detail's ``constraints`` (the
          issuer's own evaluator, :func:`issuer.constraints.evaluate`); a
          constrained argument that is missing fails, so omitting
          ``arguments`` fails for a capability that constrains any.  A
          call-bound capability admits exactly its own arguments, compared in
          canonical JSON, and only once: its ``jti`` is then recorded in the
          replay cache until expiry, and a second use raises :class:`Replayed`.
          Otherwise :class:`ConstraintViolated`.

        Session capabilities (not call-bound) may be authorized any number of
        times until they expire.
        """
        self._authorize_grant(cap, scope=scope, action=action)
        violations: list[ConstraintViolation] = []
        for prepared in cap.prepared_constraints:
            violations.extend(evaluate_prepared(prepared, arguments if arguments is not None else {}))
        if cap.call_bound:
            violations.extend(self._binding_violations(cap, arguments))
        if violations:
            raise ConstraintViolated(violations)
        if cap.call_bound and not self._replay.claim(cap.jti, cap.expires_at + self.leeway):
            raise Replayed()

    def _authorize_grant(self, cap: Capability, *, scope: str | None, action: str | None) -> None:
        """Lifetime, scopes and actions: what a gate in front of a whole app can check without the arguments."""
        if clock.now() >= cap.expires_at + self.leeway:
            raise ExpiredToken()
        if scope is not None:
            required = [s for s in scope.split(" ") if s]
            if not required:
                raise ValueError("scope must name at least one scope")
            if any(s not in cap.scopes for s in required):
                raise InsufficientScope(scope=scope)
        if action is not None:
            for detail in cap.tool_invocations:
                actions = detail.get("actions")
                if actions is not None and action not in actions:
                    raise InsufficientScope(action=action)

    @staticmethod
    def _binding_violations(cap: Capability, arguments: Mapping[str, Any] | None) -> list[ConstraintViolation]:
        if arguments is None:
            return [ConstraintViolation("(call)", "bound", "the capability is bound to one call; no arguments given")]
        try:
            digest = arguments_digest(arguments)
        except (TypeError, ValueError):
            return [ConstraintViolation("(call)", "bound", "the arguments are not JSON")]
        if cap.arguments_sha256 is None or not hmac.compare_digest(digest, cap.arguments_sha256):
            return [ConstraintViolation("(call)", "bound", "not the call this capability is bound to")]
        return []

    def check(
        self,
        token: str,
        *,
        scope: str | None = None,
        action: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> Capability:
        """:meth:`verify` then :meth:`authorize`, in one call; return the capability."""
        cap = self.verify(token)
        self.authorize(cap, scope=scope, action=action, arguments=arguments)
        return cap

    # ------------------------------------------------------------------ life cycle

    def poll_revocations(self) -> None:
        """Poll the revocation feed now (e.g. to warm up at start-up).

        Raises :class:`IssuerUnavailable` if it cannot be read, and
        RuntimeError if revocation polling is not enabled.
        """
        if self._revocations is None:
            raise RuntimeError("revocation polling is not enabled (revocation_poll_interval=None)")
        self._revocations.poll()

    def close(self) -> None:
        """Stop the revocation poller.  The verifier refuses to verify afterwards."""
        self._closed = True
        if self._revocations is not None:
            self._revocations.close()

    def __enter__(self) -> CapabilityVerifier:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

