"""Authorization policy: who may reach which tool, with which scopes, through which client.

This package owns the policy document (its syntax, schema and line-precise
errors), its canonical rendering, the check of its references against the
registry, and the default-deny decision made for every token exchange. It
does not own storage, versioning or activation of policies, the registry of
tools, clients and providers, or the grammar inside a rule's ``constraints``:
those belong to their own modules, which hand this one plain values.
"""

from issuer.policy.document import (
    MAX_DOCUMENT_BYTES,
    MAX_LIFETIME_SECONDS,
    MAX_RULES,
    MIN_LIFETIME_SECONDS,
    ClaimValue,
    PolicyDocument,
    PolicyError,
    Rule,
    canonical_json,
    parse_policy,
    validate_references,
)
from issuer.policy.engine import CompiledPolicy, Decision, Principal, Reason

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_LIFETIME_SECONDS",
    "MAX_RULES",
    "MIN_LIFETIME_SECONDS",
    "ClaimValue",
    "CompiledPolicy",
    "Decision",
    "PolicyDocument",
    "PolicyError",
    "Principal",
    "Reason",
    "Rule",
    "canonical_json",
    "parse_policy",
    "validate_references",
]
