"""RFC 7662 introspection and RFC 7009 revocation of the capabilities this issuer minted.

https://www.rfc-editor.org/rfc/rfc7662 , https://www.rfc-editor.org/rfc/rfc7009

A capability is a self-contained JWT, so "looking it up" means verifying its
signature with our own published keys; revocation records the ``jti`` until
the token would have expired anyway. A client may introspect or revoke only
capabilities it was issued, or capabilities addressed to its own resource URI.

``token_type_hint`` never narrows the search (RFC 7662 and RFC 7009 section
2.1: a token not found under its hint is searched for among every type): a
capability is found whatever the hint says. Introspection ignores the hint
(RFC 7662 has no error for one it does not know); revocation answers
``400 unsupported_token_type`` (RFC 7009 section 2.2.1) to a hint that names
no registered token type, since it cannot revoke tokens of a type it does
not know. Authlib's versions answered ``401`` and refused a hint they did not
expect instead of searching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from .. import clock
from ..errors import InvalidRequest, IssuerError
from ..keys import KeyStore
from ..minting import CAPABILITY_TYP
from ..registry import ClientView
from ..revocation import RevocationList

__all__ = ["CapabilityIntrospection", "CapabilityRecord", "CapabilityRevocation", "CapabilityStore",
           "UnsupportedTokenType"]

_CLIENT_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
#: The OAuth Token Type Hints registry (RFC 7009 section 4.1.2): the hints a revocation may carry.
_REGISTERED_HINTS = ("access_token", "refresh_token")


class UnsupportedTokenType(IssuerError):
    """RFC 7009 section 2.2.1: a revocation of a token type this server does not know."""

    error = "unsupported_token_type"
    status_code = 400
    default_description = "The token type is not supported."


def _check_params(request: Any, *, hints: tuple[str, ...] | None) -> None:
    """One ``token``, at most one hint; with ``hints``, the hint must be one of them."""
    form = request.form
    if len(form.getlist("token")) != 1 or not form.get("token"):
        raise InvalidRequest("send exactly one token parameter")
    if len(form.getlist("token_type_hint")) > 1:
        raise InvalidRequest("parameter token_type_hint is repeated")
    hint = form.get("token_type_hint")
    if hints is not None and hint is not None and hint not in hints:
        raise UnsupportedTokenType("token_type_hint: this server revokes access tokens only")


@dataclass(frozen=True)
class CapabilityRecord:
    claims: dict[str, Any]
    revoked: bool

    def is_expired(self) -> bool:
        return int(self.claims["exp"]) <= int(clock.now())

    def is_revoked(self) -> bool:
        return self.revoked

    def check_client(self, client: ClientView) -> bool:
        return self.claims.get("client_id") == client.client_id or self.claims.get("aud") == client.resource_uri


class CapabilityStore:
    def __init__(self, issuer: str, keys: KeyStore, revocations: RevocationList) -> None:
        self._issuer = issuer
        self._keys = keys
        self._revocations = revocations

    def find(self, token: str) -> CapabilityRecord | None:
        """Verify one of our capabilities; None for anything else (never an error)."""
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.public_key(str(header.get("kid", "")))
            typ = str(header.get("typ", "")).lower().removeprefix("application/")
            if key is None or typ != CAPABILITY_TYP or header.get("alg") not in ("ES256", "EdDSA"):
                return None
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[header["alg"]], issuer=self._issuer,
                options={"verify_aud": False, "require": ["exp", "jti", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        return CapabilityRecord(claims, self._revocations.is_revoked(claims))

    def revoke(self, record: CapabilityRecord, by: str) -> None:
        self._revocations.revoke(record.claims, by)


class CapabilityIntrospection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = _CLIENT_METHODS
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def __init__(self, server: Any, store: CapabilityStore) -> None:
        super().__init__(server)
        self._store = store

    def check_params(self, request: Any, client: ClientView) -> None:
        _check_params(request, hints=None)

    def query_token(self, token: str, token_type_hint: str | None) -> CapabilityRecord | None:
        return self._store.find(token)  # whatever the hint: capabilities are all there is to search

    def check_permission(self, token: CapabilityRecord, client: ClientView, request: Any) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: CapabilityRecord) -> dict[str, Any]:
        out = {k: v for k, v in token.claims.items()}
        # RFC 9449 section 6.2: a bound token introspects as DPoP, with its cnf (already among the claims).
        out.update(active=True, token_type="DPoP" if "cnf" in token.claims else "Bearer")
        return out


class CapabilityRevocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = _CLIENT_METHODS
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def __init__(self, server: Any, store: CapabilityStore) -> None:
        super().__init__(server)
        self._store = store

    def check_params(self, request: Any, client: ClientView) -> None:
        _check_params(request, hints=_REGISTERED_HINTS)

    def query_token(self, token: str, token_type_hint: str | None) -> CapabilityRecord | None:
        return self._store.find(token)  # a refresh_token hint too: the search goes on past the hint

    def revoke_token(self, token: CapabilityRecord, request: Any) -> None:
        self._store.revoke(token, by=request.client.client_id)
