"""The bearer token of a request, from the ``Authorization`` header only (RFC 6750 section 2.1).

Never from the query string or a form body: the MCP specification forbids
tokens in URIs, and a body token would be logged and cached like any body.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidToken, MissingToken

__all__ = ["bearer_token"]


def bearer_token(authorization: Sequence[str]) -> str:
    """The token in the request's ``Authorization`` header values.

    No header, or another scheme: :class:`MissingToken` (answered with a bare
    ``Bearer`` challenge).  Several headers or a malformed one: :class:`InvalidToken`.
    """
    if not authorization:
        raise MissingToken()
    if len(authorization) > 1:
        raise InvalidToken("more than one Authorization header")
    scheme, _, token = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingToken()
    token = token.strip(" ")
    if not token or any(c in token for c in " \t,"):
        raise InvalidToken("malformed Authorization header")
    return token
