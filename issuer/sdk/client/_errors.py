"""The exchange client's error tree.

Every failure of :meth:`ExchangeClient.exchange` is one of these; catch the
level you care about::

    ExchangeError                 .error, .description, .status_code (every error has them)
     +-- InvalidRequest           400 invalid_request      the request was malformed: a bug in the caller
     +-- InvalidClient            401 invalid_client       this client's credentials were refused: configuration
     +-- InvalidGrant             400 invalid_grant        the user's (or actor's) token was refused: re-authenticate
     +-- UnauthorizedClient       400 unauthorized_client  this client may not use token exchange at all
     +-- InvalidTarget            400 invalid_target       unknown tool, or one this user may not reach via this client
     +-- InvalidScope             400 invalid_scope        a scope, action or argument the user is not entitled to
     +-- RateLimited              429                      .retry_after: seconds to wait, when the issuer said
     +-- IssuerUnavailable        5xx, network error, timeout (.retry_after when the issuer said); retry with back-off
     +-- ProtocolError            the issuer's answer breaks the wire contract (bad JSON, a missing field, a redirect)
          +-- DiscoveryError      the metadata document is unusable (wrong ``issuer``, no usable ``token_endpoint``)

An ``error`` code that is none of the above (say ``unsupported_grant_type``)
raises :class:`ExchangeError` itself, with ``.error`` set to that code.

``.error`` is the RFC 6749 error code the issuer sent, or ``None`` when there
was no such answer (a network failure, a malformed response); ``.status_code``
is the HTTP status, or ``None`` when no response arrived. Messages never
contain the subject token, the actor token or the client's secret: the
client removes them even from the issuer's ``error_description``.

Bad arguments to the SDK itself (both ``tool`` and ``audience``, say) raise
:class:`ValueError` or :class:`TypeError` before anything is sent.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DiscoveryError",
    "ExchangeError",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "IssuerUnavailable",
    "ProtocolError",
    "RateLimited",
    "UnauthorizedClient",
]


class ExchangeError(Exception):
    """Base of every error the exchange client raises (other than bad arguments)."""

    #: the RFC 6749 error code this class stands for (instances carry the one actually received)
    error: str | None = None
    #: the description used when the issuer sent none
    default_description = "the token exchange failed"

    def __init__(self, description: str | None = None, *, error: str | None = None,
                 status_code: int | None = None) -> None:
        self.description: str = description or self.default_description
        if error is not None:
            self.error = error
        self.status_code: int | None = status_code
        super().__init__(self.description)

    def __str__(self) -> str:
        head = self.error or (f"HTTP {self.status_code}" if self.status_code is not None else "")
        return f"{head}: {self.description}" if head else self.description

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(error={self.error!r}, status_code={self.status_code!r}, "
                f"description={self.description!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


def _rebuild(cls: type[ExchangeError], state: dict[str, Any]) -> ExchangeError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("description", ""))
    err.__dict__.update(state)
    return err


class InvalidRequest(ExchangeError):
    error = "invalid_request"
    default_description = "the issuer found the request malformed"


class InvalidClient(ExchangeError):
    error = "invalid_client"
    default_description = "the issuer refused this client's credentials"


class InvalidGrant(ExchangeError):
    error = "invalid_grant"
    default_description = "the issuer refused the subject or actor token"


class UnauthorizedClient(ExchangeError):
    error = "unauthorized_client"
    default_description = "this client may not use token exchange"


class InvalidTarget(ExchangeError):
    error = "invalid_target"
    default_description = "the tool is unknown or not reachable for this user through this client"


class InvalidScope(ExchangeError):
    error = "invalid_scope"
    default_description = "a requested scope, action or argument is not granted"


class RateLimited(ExchangeError):
    """HTTP 429. ``retry_after`` is the issuer's ``Retry-After`` in seconds, or ``None``."""

    default_description = "the issuer's rate limit was hit"

    def __init__(self, description: str | None = None, *, error: str | None = None,
                 status_code: int | None = 429, retry_after: float | None = None) -> None:
        super().__init__(description, error=error, status_code=status_code)
        self.retry_after: float | None = retry_after


class IssuerUnavailable(ExchangeError):
    """The issuer could not answer: a 5xx, a refused connection, a timeout, a TLS failure.

    ``retry_after`` is the issuer's ``Retry-After`` in seconds when it sent one.
    """

    default_description = "the issuer is unavailable"

    def __init__(self, description: str | None = None, *, error: str | None = None,
                 status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(description, error=error, status_code=status_code)
        self.retry_after: float | None = retry_after


class ProtocolError(ExchangeError):
    """The issuer answered, but not as RFC 8693 / RFC 6749 say it must."""

    default_description = "the issuer's response breaks the token-exchange protocol"


class DiscoveryError(ProtocolError):
    """The RFC 8414 metadata document is missing, malformed, or names another issuer."""

    default_description = "the issuer's metadata document is unusable"


#: RFC 6749 / RFC 8693 error codes with their own class.
ERRORS_BY_CODE: dict[str, type[ExchangeError]] = {
    cls.error: cls
    for cls in (InvalidRequest, InvalidClient, InvalidGrant, UnauthorizedClient, InvalidTarget, InvalidScope)
    if cls.error is not None
}
