"""CapabilityVerifier: verify a capability, then authorize the call against the real user."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, NoReturn

import jwt

from ... import clock
from ...constraints import ConstraintViolation, evaluate
from ...tool_invocation import arguments_digest
from ._capability import Capability, capability_from_claims, thaw
from ._discovery import Discovery
from ._http import check_url, fetch_json
from ._keys import ALGORITHMS, KeySet, KeySource
from ._replay import DEFAULT_REPLAY_PREFIX, MemoryReplayCache, RedisLike, RedisReplayCache, ReplayCache
from ._revocation import RevocationPoller
from .errors import (
    ConstraintViolated,
    ExpiredToken,
    InsufficientScope,
    InvalidToken,
    Replayed,
)

__all__ = ["MAX_TOKEN_LENGTH", "CapabilityVerifier"]

log = logging.getLogger("issuer.sdk.verifier")

#: A capability travels in an HTTP header; anything larger is refused before parsing.
MAX_TOKEN_LENGTH = 16 * 1024
_TYP = "at+jwt"
_MAX_KID = 256
# One PyJWS for the process: it is stateless, and used only for the signature.
_JWS = jwt.PyJWS()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


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
    ) -> None:
        check_url(issuer, allow_insecure_loopback)
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be this tool's resource URI")
        if jwks_max_age <= 0 or refetch_cooldown < 0 or timeout <= 0 or not 0 <= leeway <= 300:
            raise ValueError("jwks_max_age and timeout must be > 0, refetch_cooldown >= 0, 0 <= leeway <= 300")
        if revocation_poll_interval is not None and revocation_poll_interval <= 0:
            raise ValueError("revocation_poll_interval must be > 0 seconds, or None")
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
        cannot be had.  Authorization is :meth:`authorize`'s job.
        """
        if self._closed:
            raise RuntimeError("the verifier is closed")
        if not isinstance(token, str) or not token:
            raise InvalidToken("the capability must be a non-empty string")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("the capability is too large")
        if not token.isascii() or token.count(".") != 2:
            raise InvalidToken("the capability is not a compact JWS")
        try:
            header = _JWS.get_unverified_header(token)
        except Exception:
            raise InvalidToken("the capability header is malformed") from None
        alg, kid = self._check_header(header)
        key = self._keys.key_for(kid, alg)
        try:
            decoded = _JWS.decode_complete(token, key, algorithms=[alg])
        except jwt.InvalidSignatureError:
            raise InvalidToken("the capability signature is invalid") from None
        except Exception:
            raise InvalidToken("the capability is malformed") from None
        try:
            claims = json.loads(decoded["payload"], parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise InvalidToken("the capability payload is not JSON") from None
        if not isinstance(claims, dict):
            raise InvalidToken("the capability payload is not a JSON object")
        cap = capability_from_claims(claims, issuer=self.issuer, audience=self.audience, now=clock.now(),
                                     leeway=self.leeway)
        if self._revocations is not None:
            self._revocations.ensure_current()
            self._revocations.check(cap)
        return cap

    @staticmethod
    def _check_header(header: Any) -> tuple[str, str]:
        if not isinstance(header, dict):
            raise InvalidToken("the capability header is malformed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") != _TYP:
            raise InvalidToken("the token is not a capability (typ must be at+jwt)")
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken("the capability's signature algorithm is not allowed")
        if "crit" in header:
            raise InvalidToken("the capability uses critical header parameters")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID:
            raise InvalidToken("the capability names no valid signing key (kid)")
        return alg, kid

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
        for detail in cap.tool_invocations:
            constraints = detail.get("constraints")
            if constraints is not None:
                violations.extend(evaluate(thaw(constraints), arguments if arguments is not None else {}))
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

