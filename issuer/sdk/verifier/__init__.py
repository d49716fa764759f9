"""Verifier SDK: upstream tools verify capabilities and authorize against the real user.

Needs only PyJWT and cryptography (the base install); the framework adapters
are separate modules you import explicitly: :mod:`issuer.sdk.verifier.flask`,
:mod:`issuer.sdk.verifier.asgi` (Starlette, FastAPI), :mod:`issuer.sdk.verifier.mcp`
(the MCP Python SDK).

One verifier per process, created at start-up and shared::

    from issuer.sdk.verifier import CapabilityVerifier, CapabilityError

    verifier = CapabilityVerifier(
        issuer="https://issuer.example",
        audience="https://tickets.example",     # this tool's resource URI
        revocation_poll_interval=30,            # optional: poll the revocation feed
    )

    def handle(authorization_header: str, arguments: dict) -> Response:
        try:
            cap = verifier.check(
                authorization_header.removeprefix("Bearer "),
                scope="tickets:read", action="read", arguments=arguments,
            )
        except CapabilityError as e:
            return Response(e.to_dict(), status=e.status_code, headers=e.headers())
        return list_tickets(user=cap.sub, project=arguments["project"])

:meth:`CapabilityVerifier.verify` checks the signature (ES256 or EdDSA, keys
from the issuer's JWKS via RFC 8414 discovery, or pinned), ``typ``, ``iss``,
``aud``, lifetime and revocation, and returns a read-only :class:`Capability`.
:meth:`CapabilityVerifier.authorize` checks scopes, actions and the argument
constraints (the issuer's own evaluator), and admits a call-bound capability
exactly once.  Refusals are the :mod:`issuer.sdk.verifier.errors` tree, each
with its HTTP status and ``WWW-Authenticate`` value.
"""

from ...constraints import ConstraintViolation
from ._capability import Capability
from ._replay import RedisLike
from ._verifier import CapabilityVerifier
from .errors import (
    CapabilityError,
    ConstraintViolated,
    ExpiredToken,
    InsufficientScope,
    InvalidDPoPProof,
    InvalidToken,
    IssuerUnavailable,
    MissingToken,
    ReplayCacheUnavailable,
    Replayed,
    Revoked,
    ServiceUnavailable,
    WrongAudience,
)

__all__ = [
    "Capability",
    "CapabilityError",
    "CapabilityVerifier",
    "ConstraintViolated",
    "ConstraintViolation",
    "ExpiredToken",
    "InsufficientScope",
    "InvalidDPoPProof",
    "InvalidToken",
    "IssuerUnavailable",
    "MissingToken",
    "RedisLike",
    "ReplayCacheUnavailable",
    "Replayed",
    "Revoked",
    "ServiceUnavailable",
    "WrongAudience",
]

# Public names report the package, not the private module they live in.
for _name in ("Capability", "CapabilityVerifier", "RedisLike"):
    globals()[_name].__module__ = __name__
del _name
