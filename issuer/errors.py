"""The issuer's error tree, and its mapping to RFC 6749 section 5.2 responses.

Every error the server reports to a client is one of these classes::

    IssuerError (an Authlib OAuth2Error: rendered as RFC JSON, Cache-Control: no-store)
     +-- InvalidRequest          400 invalid_request
     +-- InvalidClient           401 invalid_client
     +-- InvalidGrant            400 invalid_grant
     +-- UnauthorizedClient      400 unauthorized_client
     +-- InvalidTarget           400 invalid_target      (RFC 8707)
     +-- InvalidScope            400 invalid_scope
     +-- InvalidDPoPProof        400 invalid_dpop_proof   (RFC 9449)
     +-- UnsupportedGrantType    400 unsupported_grant_type
     +-- AdminUnauthorized       401 invalid_token        (admin API, RFC 6750)
     +-- AdminForbidden          403 insufficient_scope   (admin API, RFC 6750)
     +-- NotFound                404 not_found
     +-- MethodNotAllowed        405 method_not_allowed
     +-- Conflict                409 conflict             (admin API)
     +-- PayloadTooLarge         413 invalid_request
     +-- RateLimited             429 rate_limited         (with Retry-After)
     +-- TemporarilyUnavailable  503 temporarily_unavailable

Descriptions are sanitised here, once: RFC 6749 restricts ``error_description``
to a subset of ASCII, and Authlib raises ``ValueError`` (a 500) when a
description built from client input breaks that rule.

:class:`ConfigurationError` is the admin-side counterpart: bad input to the
CLI or admin API (one line, names the field); it never reaches a token client.
Its subclasses :class:`UnknownObject` and :class:`AlreadyExists` let the admin
API answer 404 and 409 where the CLI exits 2; :func:`admin_error` is that mapping.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

__all__ = [
    "AdminForbidden",
    "AdminUnauthorized",
    "AlreadyExists",
    "ConfigurationError",
    "Conflict",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "IssuerError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "TemporarilyUnavailable",
    "UnauthorizedClient",
    "UnknownObject",
    "UnsupportedGrantType",
    "admin_error",
    "describe",
    "safe_description",
]

_MAX_DESCRIPTION = 300


def safe_description(text: str) -> str:
    """Make ``text`` a legal RFC 6749 error_description (%x20-21 / %x23-5B / %x5D-7E)."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch == '"':
            out.append("'")
        elif ch == "\\":
            out.append("%5C")
        elif 0x20 <= o <= 0x7E:
            out.append(ch)
        else:
            out.append("?")
    s = "".join(out)
    return s if len(s) <= _MAX_DESCRIPTION else s[: _MAX_DESCRIPTION - 3] + "..."


class IssuerError(OAuth2Error):  # type: ignore[misc]
    """Base of every error a client sees. Subclasses only set attributes."""

    error = "server_error"
    status_code = 400
    default_description = "The request failed."

    def __init__(self, description: str | None = None, **kwargs: Any) -> None:
        super().__init__(description=safe_description(description or self.default_description), **kwargs)


class InvalidRequest(IssuerError):
    error = "invalid_request"
    default_description = "The request is missing a parameter, repeats one, or is malformed."


class InvalidClient(IssuerError):
    error = "invalid_client"
    status_code = 401
    default_description = "Client authentication failed."

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        headers.append(("WWW-Authenticate", 'Basic realm="token", error="invalid_client"'))
        return headers


class InvalidGrant(IssuerError):
    error = "invalid_grant"
    default_description = "The subject or actor token is invalid."


class UnauthorizedClient(IssuerError):
    error = "unauthorized_client"
    default_description = "The client may not use this grant type."


class InvalidTarget(IssuerError):
    error = "invalid_target"
    default_description = "The requested target is unknown or not reachable."


class InvalidDPoPProof(IssuerError):
    """RFC 9449 section 5: the DPoP proof of a token request is missing, malformed or fails a check."""

    error = "invalid_dpop_proof"
    default_description = "The DPoP proof is invalid."


class UseDPoPNonce(IssuerError):
    """RFC 9449 section 8: nonces are on and the proof has none, or a stale one; the answer's ``DPoP-Nonce``
    header carries the one to use."""

    error = "use_dpop_nonce"
    default_description = "Authorization server requires nonce in DPoP proof."


class InvalidScope(IssuerError):
    error = "invalid_scope"
    default_description = "The requested scope is invalid or not granted."


class UnsupportedGrantType(IssuerError):
    error = "unsupported_grant_type"
    default_description = "The grant type is not supported."


class AdminUnauthorized(IssuerError):
    error = "invalid_token"
    status_code = 401
    default_description = "A valid admin key is required: Authorization: Bearer <admin key>."

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        headers.append(("WWW-Authenticate", 'Bearer realm="admin", error="invalid_token"'))
        return headers


class AdminForbidden(IssuerError):
    error = "insufficient_scope"
    status_code = 403
    default_description = "This admin key's role may not do this."

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        headers.append(("WWW-Authenticate", 'Bearer realm="admin", error="insufficient_scope"'))
        return headers


class Conflict(IssuerError):
    error = "conflict"
    status_code = 409
    default_description = "The object already exists."


class NotFound(IssuerError):
    error = "not_found"
    status_code = 404
    default_description = "No such endpoint."


class MethodNotAllowed(IssuerError):
    error = "method_not_allowed"
    status_code = 405
    default_description = "The endpoint does not allow this HTTP method."


class PayloadTooLarge(IssuerError):
    error = "invalid_request"
    status_code = 413
    default_description = "The request body is too large."


class RateLimited(IssuerError):
    error = "rate_limited"
    status_code = 429
    default_description = "Too many exchanges; retry later."

    def __init__(self, description: str | None = None, *, retry_after: int = 1, **kwargs: Any) -> None:
        super().__init__(description, **kwargs)
        self.retry_after = max(1, int(retry_after))

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        headers.append(("Retry-After", str(self.retry_after)))
        return headers


class TemporarilyUnavailable(IssuerError):
    error = "temporarily_unavailable"
    status_code = 503
    default_description = "A dependency of the issuer is unavailable; retry later."


class ConfigurationError(Exception):
    """Bad admin input or settings: one line that names what is wrong."""


class UnknownObject(ConfigurationError):
    """The named provider, tool, client, policy version, key or capability does not exist."""


class AlreadyExists(ConfigurationError):
    """A name, issuer or resource URI that must be unique is taken."""


def describe(e: ConfigurationError) -> str:
    """One line; a policy with several errors names the first and counts the rest."""
    more = len(getattr(e, "errors", ())) - 1
    return f"{e} (and {more} more; fix this one first)" if more > 0 else str(e)


def admin_error(e: ConfigurationError) -> IssuerError:
    """The admin API's answer to bad admin input: 404, 409, or 400 naming the field."""
    if isinstance(e, UnknownObject):
        return NotFound(describe(e))
    if isinstance(e, AlreadyExists):
        return Conflict(describe(e))
    return InvalidRequest(describe(e))
