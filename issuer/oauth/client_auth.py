"""Client authentication (RFC 6749 section 2.3, RFC 7523 section 2.2), on Authlib's registry.

Authlib's built-in functions are replaced for three reasons: an unknown
client must always answer 401 (Authlib answers 400 for the post method), a
malformed Basic header must be a 401 rather than an exception, and a request
may use only one authentication method (RFC 6749 section 2.3).

:class:`ClientAuthGuard` is what every endpoint that authenticates clients
(``/token``, ``/introspect``, ``/revoke``) does around those methods: a form
``client_id`` must name the client that authenticated, and failed attempts
are counted and throttled per claimed client id, so guessing a secret is seen
and bounded wherever it is tried.
"""

from __future__ import annotations

import base64
import binascii
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet
from limits import RateLimitItem

from .. import clock
from ..errors import InvalidClient, InvalidRequest, RateLimited
from ..identity.types import ASYMMETRIC_ALGORITHMS
from ..kernel.strictjson import StrictJSONError
from ..kernel.strictjson import loads as strict_loads
from ..metrics import Metrics
from ..ratelimit import RateLimiter, parse_limits
from ..registry import ClientView
from ..replay import ReplayCache

__all__ = [
    "FAILED_AUTH_PER_CLIENT",
    "FAILED_AUTH_PER_SOURCE",
    "ClientAuthGuard",
    "PrivateKeyJwt",
    "authenticate_basic",
    "authenticate_post",
    "basic_credentials",
    "claimed_client_id",
    "printable_id",
    "reject_multiple_methods",
]

QueryClient = Callable[[str], ClientView | None]
#: RFC 7523 assertions are meant to be short-lived; this bounds how long a jti must be remembered.
MAX_ASSERTION_LIFETIME = 600
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def basic_credentials(headers: Any) -> tuple[str, str] | None:
    """The Basic id and secret, None without a Basic header; a malformed one is ``invalid_client``.

    WSGI hands header values over as latin-1 text, so an attacker's raw bytes above 0x7f arrive as
    characters that base64 does not take: they are refused here, never passed to a decoder that
    raises something else (werkzeug's ``request.authorization`` raises ``ValueError`` on them).
    """
    auth = headers.get("Authorization")
    if not auth:
        return None
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "basic":
        return None
    value = value.strip()
    if not value.isascii():
        raise InvalidClient("malformed Basic authorization header")
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidClient("malformed Basic authorization header") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user or not password:
        raise InvalidClient("malformed Basic authorization header")
    # RFC 6749 section 2.3.1: id and secret are form-urlencoded before Basic encoding ('+' is a space).
    return unquote_plus(user), unquote_plus(password)


def printable_id(value: str | None) -> str | None:
    """A client id the request named, fit for an audit row or a log: printable characters only, at
    most 100 (a claimed id is attacker text; NUL, controls and bidi overrides never reach storage)."""
    if value is None:
        return None
    return "".join(c for c in value[:1000] if c.isprintable())[:100] or None


def claimed_client_id(request: Any, authenticated: str | None = None) -> str | None:
    """The client id a request's credentials name, whether or not they verify; never raises.

    The Basic user name, else the form's ``client_id``, else the ``sub`` of a ``client_assertion``
    (read without verifying it: it only names the budget a failed attempt spends and the audit
    row's ``claimed_client_id``, never an identity). Once a client has ``authenticated``, the only
    claim worth keeping is a form ``client_id`` that contradicts it (None when there is none).
    """
    if authenticated is not None:
        return next((c for c in map(printable_id, request.form.getlist("client_id")) if c != authenticated), None)
    try:
        creds = basic_credentials(request.headers)
    except InvalidClient:
        creds = None
    if creds is not None:
        return printable_id(creds[0])
    form = request.form
    claimed = form.get("client_id")
    if not claimed:
        claimed = _assertion_subject(form.get("client_assertion"))
    return printable_id(claimed)


def _assertion_subject(assertion: str | None) -> str | None:
    if not assertion or len(assertion) > 16384:
        return None
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = strict_loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (StrictJSONError, binascii.Error, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else None


def reject_multiple_methods(request: Any) -> None:
    used = sum(
        (
            basic_credentials(request.headers) is not None,
            "client_secret" in request.form,
            "client_assertion" in request.form,
        )
    )
    if used > 1:
        raise InvalidRequest("use exactly one client authentication method")


def _check(query_client: QueryClient, client_id: str, secret: str) -> ClientView:
    client = query_client(client_id)
    if client is None or not client.check_client_secret(secret):
        raise InvalidClient("client authentication failed")
    return client


def authenticate_basic(query_client: QueryClient, request: Any) -> ClientView | None:
    creds = basic_credentials(request.headers)
    if creds is None:
        return None
    return _check(query_client, *creds)


def authenticate_post(query_client: QueryClient, request: Any) -> ClientView | None:
    form = request.form
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if not client_id or not secret:
        return None
    if len(form.getlist("client_id")) > 1 or len(form.getlist("client_secret")) > 1:
        raise InvalidRequest("repeated client credentials")
    return _check(query_client, client_id, secret)


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 ``private_key_jwt``: the client signs an assertion with its registered key.

    Replay of an assertion is refused through the shared replay cache; the
    accepted audiences are the issuer identifier and the token endpoint.
    """

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, audiences: list[str], replay: ReplayCache, leeway: int) -> None:
        super().__init__(validate_jti=True, leeway=leeway)
        self._audiences = audiences
        self._replay = replay

    def get_audiences(self) -> list[str]:
        return self._audiences

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        """Remember the ``jti`` for as long as the assertion could be accepted, which is bounded:
        an assertion valid for longer than :data:`MAX_ASSERTION_LIFETIME` is refused outright."""
        remaining = int(claims["exp"]) - int(clock.now())
        if remaining > MAX_ASSERTION_LIFETIME:
            # Only reached once the signature verified: telling the real client why is safe.
            raise _AfterSignature("client_assertion: expires too far in the future")
        return self._replay.first_use(f"client-assertion:{claims['sub']}:{jti}", remaining + self.leeway + 1)

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        """Authlib's version with an explicit asymmetric algorithm allowlist."""
        try:
            with warnings.catch_warnings():
                # joserfc flags the "EdDSA" name as deprecated (RFC 9864 prefers "Ed25519"): a naming
                # notice, not a weakness, and it must never turn a valid assertion into an error.
                warnings.simplefilter("ignore", SecurityWarning)
                token = jose_jwt.decode(assertion, resolve_key, algorithms=sorted(ASYMMETRIC_ALGORITHMS))
        except JoseError as e:
            raise InvalidClient(f"client_assertion: {e.error}") from None
        self.verify_claims(token.claims)
        claims: dict[str, Any] = token.claims
        return claims

    def resolve_client_public_key(self, client: ClientView) -> KeySet:
        if not client.jwks:
            raise InvalidClient("client has no registered keys")
        return KeySet.import_key_set(dict(client.jwks))  # type: ignore[arg-type]

    def __call__(self, query_client: QueryClient, request: Any) -> ClientView | None:
        form = request.form
        if form.get("client_assertion_type") is None and form.get("client_assertion") is None:
            return None
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            raise InvalidClient("client_assertion_type must be " + ASSERTION_TYPE)
        try:
            client: ClientView | None = super().__call__(query_client, request)
        except _AfterSignature:
            raise
        except (InvalidClientError, InvalidClient):
            # Unknown client, no keys, bad signature, bad claims: one answer, so nobody can probe
            # which client ids exist or how they authenticate.
            raise InvalidClient("client authentication failed") from None
        return client


class _AfterSignature(InvalidClient):
    """A refusal raised after the assertion's signature verified (the caller holds the client's key)."""


#: Failed client authentications one claimed client id may cost from one source address, and from
#: everywhere together. Only failures spend them. The per-address budget is the tighter one, so a
#: guesser at one address cannot lock the real client out of its own; it takes many addresses.
FAILED_AUTH_PER_SOURCE = parse_limits("failed client authentications per client id and address", "10/minute")[0]
FAILED_AUTH_PER_CLIENT = parse_limits("failed client authentications per client id", "100/minute")[0]

_Budget = tuple[tuple[RateLimitItem, ...], tuple[str, ...]]


class ClientAuthGuard:
    """Throttles and counts failed client authentication; every endpoint that authenticates clients uses it.

    Budgets are keyed by the *claimed* client id (see :func:`claimed_client_id`), so a guesser
    spends the budget of the client it attacks, wherever it knocks: ``/token``, ``/introspect`` or
    ``/revoke`` share it. The limiter is the exchanges' (Redis when configured), so every replica
    shares the count.

    Only a failure talks to the limiter (:meth:`RateLimiter.fail`), which remembers a spent budget
    in-process: while it does, every attempt for that id (from that address) is refused with 429
    before its credentials are checked, the right ones included, so a throttled guess learns
    nothing, and a successful authentication costs no round trip (:meth:`RateLimiter.known_spent`).
    """

    def __init__(self, limiter: RateLimiter, metrics: Metrics) -> None:
        self._limiter = limiter
        self._metrics = metrics

    @staticmethod
    def _budgets(claimed: str | None, source: str) -> list[_Budget]:
        budgets: list[_Budget] = [((FAILED_AUTH_PER_SOURCE,), ("client-auth", claimed or "", source))]
        if claimed:
            budgets.append(((FAILED_AUTH_PER_CLIENT,), ("client-auth", claimed)))
        return budgets

    def before(self, claimed: str | None, source: str, endpoint: str) -> None:
        """Refuse the attempt (429) while its client id is known here to have failed too often."""
        for _limits, key in self._budgets(claimed, source):
            wait = self._limiter.known_spent(*key)
            if wait is not None:
                self._metrics.client_auth_failures.labels(endpoint, "rate_limited").inc()
                raise RateLimited(_THROTTLED, retry_after=wait)

    def failed(self, claimed: str | None, source: str, endpoint: str, *, spend: bool = True) -> None:
        """Count a failed authentication and, for a guess (``spend``), spend the client id's budgets;
        :class:`RateLimited` when one was already spent (from then on refused here unchecked)."""
        limited = [self._limiter.fail(limits, *key) for limits, key in self._budgets(claimed, source)] if spend else []
        waits = [x.retry_after for x in limited if x is not None]
        # labelled by the answer given: a failure that found its budget spent is answered 429
        self._metrics.client_auth_failures.labels(endpoint, "rate_limited" if waits else "invalid_client").inc()
        if waits:
            raise RateLimited(_THROTTLED, retry_after=max(1, max(waits)))


_THROTTLED = "too many failed client authentications for this client; retry later"
