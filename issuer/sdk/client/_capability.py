"""What a successful exchange returns (RFC 8693 section 2.2.1)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACCESS_TOKEN_TYPE", "JWT_TOKEN_TYPE", "IssuedCapability"]

#: RFC 8693 section 3 token type URIs (for ``subject_token_type`` and ``actor_token_type``).
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@dataclass(frozen=True, slots=True)
class IssuedCapability:
    """A capability for one tool, as the issuer returned it.

    ``access_token`` is the capability JWT: send it as ``Authorization: Bearer
    <access_token>`` to the tool, and never log it (``repr()`` leaves it out).
    ``expires_at`` is seconds since the epoch, measured from when the request
    was sent. ``scope`` holds the granted scopes (which may be fewer than the
    ones asked for). ``authorization_details`` holds the RFC 9396
    ``tool_invocation`` objects the capability carries (empty when it carries
    none). ``call_bound`` is true when the capability is bound to one call's
    arguments; such capabilities are never cached.
    """

    access_token: str = field(repr=False)
    token_type: str
    expires_at: float
    scope: tuple[str, ...]
    authorization_details: tuple[dict[str, Any], ...] = ()
    call_bound: bool = False
    issued_token_type: str = ACCESS_TOKEN_TYPE

    def _copy(self) -> IssuedCapability:
        """A copy whose ``authorization_details`` a caller may change without touching the cache."""
        return dataclasses.replace(self, authorization_details=copy.deepcopy(self.authorization_details))
