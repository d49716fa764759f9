"""Why a capability was refused: one exception tree, each class an RFC 6750 answer.

https://www.rfc-editor.org/rfc/rfc6750#section-3

::

    CapabilityError                      catch this to handle every refusal
    ├── InvalidToken                     401  error="invalid_token"
    │   ├── MissingToken                 401  no error code (RFC 6750 section 3.1): no bearer token at all
    │   ├── ExpiredToken                 401  past exp (+ leeway)
    │   ├── WrongAudience                401  issued for another tool
    │   ├── Revoked                      401  listed by the issuer's revocation feed
    │   ├── Replayed                     401  a call-bound capability presented a second time
    │   └── InvalidDPoPProof             401  error="invalid_dpop_proof" (RFC 9449 section 7.1): a
    │                                         DPoP-bound capability without a valid proof of its key
    ├── InsufficientScope                403  error="insufficient_scope", scope="..."
    │                                         (a scope not granted, or an action not covered)
    ├── ConstraintViolated               403  error="insufficient_scope": arguments outside the
    │                                         capability's constraints, or not its bound call
    └── ServiceUnavailable               503  the verifier cannot decide right now
        ├── IssuerUnavailable                 no key set could ever be fetched, or the
        │                                     revocation list is older than allowed
        └── ReplayCacheUnavailable            the replay cache (Redis) did not answer

Every error carries ``status_code``, ``error`` (the RFC 6750 code) and
``description``; :meth:`CapabilityError.www_authenticate` renders the
``WWW-Authenticate`` header value and :meth:`CapabilityError.to_dict` the
JSON body.  Descriptions are short, single-line, header-safe ASCII and never
contain the token.  PyJWT's exception types never escape the verifier: they
are translated here and raised ``from None``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from ...constraints import ConstraintViolation
from ...dpop import ALGORITHMS as DPOP_ALGORITHMS

__all__ = [
    "CapabilityError",
    "ConstraintViolated",
    "ConstraintViolation",
    "ExpiredToken",
    "InsufficientScope",
    "InvalidDPoPProof",
    "InvalidToken",
    "IssuerUnavailable",
    "MissingToken",
    "ReplayCacheUnavailable",
    "Replayed",
    "Revoked",
    "ServiceUnavailable",
    "WrongAudience",
]

_MAX_DESCRIPTION = 200


def _header_safe(text: str, limit: int = _MAX_DESCRIPTION) -> str:
    """Keep what an RFC 6750 quoted-string admits (%x20-21 / %x23-5B / %x5D-7E); '?' for the rest."""
    out = "".join(ch if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\' else "?" for ch in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _scope_safe(scope: str) -> str:
    """Scope tokens (RFC 6749 section 3.3: %x21 / %x23-5B / %x5D-7E), space separated."""
    tokens = ("".join(ch if 0x21 <= ord(ch) <= 0x7E and ch not in '"\\' else "?" for ch in t) for t in scope.split())
    return _header_safe(" ".join(tokens), limit=1000)


class CapabilityError(Exception):
    """A capability was refused; the subclass says why and how to answer the caller."""

    status_code: ClassVar[int] = 401
    error: ClassVar[str] = "invalid_token"
    default_description: ClassVar[str] = "the capability was refused"

    #: the scheme of the answer's challenge: ``DPoP`` when the request used it or the capability is bound
    scheme: str = "Bearer"

    def __init__(self, description: str | None = None) -> None:
        self.description = _header_safe(description or self.default_description)
        super().__init__(self.description)

    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` header value, e.g. ``Bearer error="invalid_token", error_description="..."``."""
        return f'{self.scheme} error="{self.error}", error_description="{self.description}"{self._algs()}'

    def _algs(self) -> str:
        # RFC 9449 section 7.1: a DPoP challenge names the proof algorithms the resource accepts.
        return f', algs="{" ".join(DPOP_ALGORITHMS)}"' if self.scheme == "DPoP" else ""

    def to_dict(self) -> dict[str, str]:
        """The JSON body integrations answer with: ``{"error": ..., "error_description": ...}``."""
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        """Every header an HTTP answer to this error carries."""
        return {"WWW-Authenticate": self.www_authenticate(), "Cache-Control": "no-store"}


class InvalidToken(CapabilityError):
    """The token is not a valid capability for this tool (401 ``invalid_token``)."""

    default_description = "the capability is invalid"


class MissingToken(InvalidToken):
    """The request carries no bearer token; RFC 6750 section 3.1 says to answer without an error code."""

    default_description = "a bearer capability is required"

    def www_authenticate(self) -> str:
        return "Bearer"


class ExpiredToken(InvalidToken):
    default_description = "the capability has expired"


class WrongAudience(InvalidToken):
    default_description = "the capability was issued for another tool"


class Revoked(InvalidToken):
    default_description = "the capability has been revoked"


class Replayed(InvalidToken):
    default_description = "the call-bound capability has already been used"


class InvalidDPoPProof(InvalidToken):
    """A DPoP-bound capability without a valid proof made with its key for this request (RFC 9449)."""

    error = "invalid_dpop_proof"
    scheme = "DPoP"
    default_description = "a valid DPoP proof is required"


class InsufficientScope(CapabilityError):
    """A scope is not granted, or an action is not covered (403 ``insufficient_scope``).

    ``scope`` is the scope the request needs (rendered in the header so the
    client knows what to ask the issuer for); ``action`` the refused action.
    """

    status_code = 403
    error = "insufficient_scope"
    default_description = "the capability does not grant this request"

    def __init__(self, description: str | None = None, *, scope: str | None = None, action: str | None = None) -> None:
        self.scope = scope
        self.action = action
        if description is None:
            if scope is not None:
                description = f"scope {_header_safe(scope, 80)} is not granted"
            elif action is not None:
                description = f"action '{_header_safe(action, 80)}' is not granted"
        super().__init__(description)

    def www_authenticate(self) -> str:
        if self.scope is not None:
            return f'{self.scheme} error="{self.error}", scope="{_scope_safe(self.scope)}"{self._algs()}'
        return super().www_authenticate()


class ConstraintViolated(CapabilityError):
    """The arguments are outside the capability's constraints, or not the call it is bound to (403).

    ``violations`` lists every failed check (:class:`ConstraintViolation` from
    :mod:`issuer.constraints`, the evaluator the issuer uses too).
    """

    status_code = 403
    error = "insufficient_scope"
    default_description = "the arguments are outside the capability's constraints"

    def __init__(self, violations: Iterable[ConstraintViolation], description: str | None = None) -> None:
        self.violations: tuple[ConstraintViolation, ...] = tuple(violations)
        if description is None and self.violations:
            shown = "; ".join(str(v) for v in self.violations[:3])
            more = f" (+{len(self.violations) - 3} more)" if len(self.violations) > 3 else ""
            description = f"arguments not admitted: {shown}{more}"
        super().__init__(description)


class ServiceUnavailable(CapabilityError):
    """The verifier cannot decide now (503); ``retry_after`` is a hint in seconds."""

    status_code = 503
    error = "temporarily_unavailable"
    default_description = "the capability cannot be checked right now"

    def __init__(self, description: str | None = None, *, retry_after: int = 5) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(description)

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Retry-After": str(self.retry_after)}


class IssuerUnavailable(ServiceUnavailable):
    """No key set could ever be fetched from the issuer, or its revocation list is out of date."""

    default_description = "the capability issuer is unavailable"


class ReplayCacheUnavailable(ServiceUnavailable):
    """The shared replay cache did not answer, so a call-bound capability cannot be admitted once."""

    default_description = "the replay cache is unavailable"
