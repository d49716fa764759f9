"""The capability of a request, from the ``Authorization`` header only (RFC 6750 section 2.1, RFC 9449 section 7.1).

Never from the query string or a form body: the MCP specification forbids
tokens in URIs, and a body token would be logged and cached like any body.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidToken, MissingToken

__all__ = ["authorization_token", "bearer_token"]

#: The schemes a capability travels in: a bearer capability, or a DPoP-bound one with its proof.
SCHEMES = ("bearer", "dpop")


def authorization_token(authorization: Sequence[str]) -> tuple[str, str]:
    """(scheme, token) from the request's ``Authorization`` header values; scheme is ``bearer`` or ``dpop``.

    No header, or another scheme: :class:`MissingToken` (answered with a bare
    ``Bearer`` challenge).  Several headers or a malformed one: :class:`InvalidToken`.
    """
    if not authorization:
        raise MissingToken()
    if len(authorization) > 1:
        raise InvalidToken("more than one Authorization header")
    scheme, _, token = authorization[0].strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise MissingToken()
    token = token.strip(" ")
    if not token or any(c in token for c in " \t,"):
        raise InvalidToken("malformed Authorization header")
    return scheme, token


def bearer_token(authorization: Sequence[str]) -> str:
    """The token of a ``Bearer`` Authorization header; any other scheme is :class:`MissingToken`."""
    scheme, token = authorization_token(authorization)
    if scheme != "bearer":
        raise MissingToken()
    return token
