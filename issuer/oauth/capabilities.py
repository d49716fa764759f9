"""RFC 7662 introspection and RFC 7009 revocation of the capabilities this issuer minted.

https://www.rfc-editor.org/rfc/rfc7662 , https://www.rfc-editor.org/rfc/rfc7009

A capability is a self-contained JWT, so "looking it up" means verifying its
signature with our own published keys; revocation records the ``jti`` until
the token would have expired anyway. A client may introspect or revoke only
capabilities it was issued, or capabilities addressed to its own resource URI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from .. import clock
from ..keys import KeyStore
from ..minting import CAPABILITY_TYP
from ..registry import ClientView
from ..revocation import RevocationList

__all__ = ["CapabilityIntrospection", "CapabilityRecord", "CapabilityRevocation", "CapabilityStore"]

_CLIENT_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


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

    def query_token(self, token: str, token_type_hint: str | None) -> CapabilityRecord | None:
        return self._store.find(token)

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

    def query_token(self, token: str, token_type_hint: str | None) -> CapabilityRecord | None:
        return self._store.find(token)

    def revoke_token(self, token: CapabilityRecord, request: Any) -> None:
        self._store.revoke(token, by=request.client.client_id)
