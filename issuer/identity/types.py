"""Value types shared by the subject-token verifier and the registry.

They are plain frozen dataclasses so that the hot path (one exchange) reads
them from memory without touching the ORM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ASYMMETRIC_ALGORITHMS", "TrustedIdp", "VerifiedSubject"]

#: The only JWS algorithms a subject or actor token may use. Never ``none``,
#: never HMAC: a symmetric algorithm would let anyone holding the (public)
#: verification key forge tokens.
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True)
class TrustedIdp:
    """One registered identity provider, as the verifier needs it."""

    name: str
    issuer: str  #: exact ``iss`` of its tokens
    namespace: str  #: prefix that keeps two providers' ``sub`` values apart
    algorithms: tuple[str, ...]  #: allowlist, a subset of ASYMMETRIC_ALGORITHMS
    jwks_uri: str | None = None  #: where its keys are (https, or http on loopback in development)
    jwks: Mapping[str, Any] | None = None  #: inline key set, for air-gapped deployments
    subject_claim: str = "sub"
    groups_claim: str = "groups"
    attribute_claims: tuple[str, ...] = ()  #: claims policy may match on and templates may use
    enabled: bool = True


@dataclass(frozen=True)
class VerifiedSubject:
    """What a verified subject (or actor) token says, after every check passed."""

    idp: str  #: registered name of the provider that signed it
    namespace: str
    sub: str  #: the provider's own subject value (not namespaced)
    groups: frozenset[str]
    attributes: Mapping[str, Any]  #: only the provider's allowlisted attribute claims
    claims: Mapping[str, Any] = field(repr=False)  #: the whole verified payload
    exp: int
    act: Mapping[str, Any] | None = None  #: the token's own ``act`` (a delegation chain), if any
    may_act: Mapping[str, Any] | None = None
    scope: frozenset[str] = frozenset()

    @property
    def principal(self) -> str:
        """The namespaced subject that capabilities carry in ``sub``."""
        return f"{self.namespace}:{self.sub}"
