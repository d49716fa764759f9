"""Client authentication (RFC 6749 section 2.3, RFC 7523 section 2.2), on Authlib's registry.

Authlib's built-in functions are replaced for three reasons: an unknown
client must always answer 401 (Authlib answers 400 for the post method), a
malformed Basic header must be a 401 rather than an exception, and a request
may use only one authentication method (RFC 6749 section 2.3).
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

from .. import clock
from ..errors import InvalidClient, InvalidRequest
from ..identity.types import ASYMMETRIC_ALGORITHMS
from ..registry import ClientView
from ..replay import ReplayCache

__all__ = ["PrivateKeyJwt", "authenticate_basic", "authenticate_post", "basic_credentials", "reject_multiple_methods"]

QueryClient = Callable[[str], ClientView | None]
#: RFC 7523 assertions are meant to be short-lived; this bounds how long a jti must be remembered.
MAX_ASSERTION_LIFETIME = 600
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def basic_credentials(headers: Any) -> tuple[str, str] | None:
    auth = headers.get("Authorization")
    if not auth:
        return None
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidClient("malformed Basic authorization header") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user or not password:
        raise InvalidClient("malformed Basic authorization header")
    # RFC 6749 section 2.3.1: id and secret are form-urlencoded before Basic encoding ('+' is a space).
    return unquote_plus(user), unquote_plus(password)


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
