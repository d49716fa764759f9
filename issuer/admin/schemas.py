"""Request and response bodies of the admin API, as pydantic models.

One definition serves three purposes: request validation (unknown fields and
wrong types are refused with the field's name), the JSON Schemas in the
OpenAPI document (:mod:`issuer.openapi`), and the response shapes that the
schemathesis run checks. The service layer still does the semantic checks
(URLs, names, references), so the CLI and the API refuse the same things.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "REQUESTS",
    "RESPONSES",
]

Name = Field(min_length=1, max_length=100)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- requests


class IdpCreate(_Request):
    name: str = Name
    issuer: str = Field(min_length=1, max_length=500)
    jwks_uri: str | None = Field(default=None, max_length=1000, description="https; default: from discovery")
    jwks: dict[str, Any] | None = Field(default=None, description="Inline public JWK Set (air-gapped deployments)")
    algorithms: list[str] = Field(default=["RS256", "ES256"], min_length=1, max_length=10)
    subject_claim: str = Field(default="sub", min_length=1, max_length=100)
    groups_claim: str = Field(default="groups", min_length=1, max_length=100)
    attribute_claims: list[str] = Field(default=[], max_length=50)
    namespace: str | None = Field(default=None, min_length=1, max_length=100)


class IdpUpdate(_Request):
    """Fields left out stay as they are; name, issuer and namespace never change (subjects carry the namespace)."""

    jwks_uri: str | None = Field(default=None, min_length=1, max_length=1000, description="Replaces an inline JWKS")
    jwks: dict[str, Any] | None = Field(default=None, description="Inline public JWK Set; replaces jwks_uri")
    algorithms: list[str] | None = Field(default=None, min_length=1, max_length=10)
    subject_claim: str | None = Field(default=None, min_length=1, max_length=100)
    groups_claim: str | None = Field(default=None, min_length=1, max_length=100)
    attribute_claims: list[str] | None = Field(default=None, max_length=50)
    enabled: bool | None = Field(default=None, description="A disabled provider's tokens are refused")


class ScopeIn(_Request):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=1000)
    actions: list[str] = Field(default=[], max_length=200)


class ToolCreate(_Request):
    name: str = Name
    resource_uri: str = Field(min_length=1, max_length=1000)
    scopes: list[ScopeIn] = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=1000)
    rate_limit: str | None = Field(default=None, max_length=100, examples=["60/minute;10/second"])
    redact_arguments: list[str] = Field(default=[], max_length=100)
    hash_arguments: list[str] = Field(default=[], max_length=100)


class ToolUpdate(_Request):
    """Fields left out stay as they are; name, resource URI and existing scopes never change (policy names them)."""

    description: str | None = Field(default=None, max_length=1000)
    rate_limit: str | None = Field(default=None, max_length=100, description="Empty: the default limit applies again")
    redact_arguments: list[str] | None = Field(default=None, max_length=100)
    hash_arguments: list[str] | None = Field(default=None, max_length=100)
    add_scopes: list[ScopeIn] | None = Field(default=None, max_length=200,
                                             description="New scopes; existing ones stay (policy names them)")
    enabled: bool | None = Field(default=None, description="A disabled tool is reachable by nobody")


AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]


class ClientCreate(_Request):
    client_id: str = Name
    resource_uri: str = Field(min_length=1, max_length=1000)
    tools: list[str] = Field(default=[], max_length=500)
    auth_methods: list[AuthMethod] = Field(default=["client_secret_basic", "client_secret_post"], min_length=1)
    jwks: dict[str, Any] | None = None
    max_lifetime: int | None = Field(default=None, ge=10, le=900)
    may_chain: bool = False
    dpop_required: bool = False
    secret: str | None = Field(default=None, min_length=20, max_length=200,
                               description="Import an existing secret instead of generating one")
    rate_limit: str | None = Field(default=None, max_length=100)


class ClientUpdate(_Request):
    enabled: bool | None = None
    dpop_required: bool | None = Field(default=None, description="Refuse this client's exchanges without a DPoP proof")


class PolicyApply(_Request):
    document: str = Field(min_length=1, max_length=1_000_000, description="The policy, YAML or JSON text")
    source: str = Field(default="admin-api", max_length=200, description="Shown in error messages and the change log")


class PolicyTest(_Request):
    sub: str = Field(min_length=1, max_length=400)
    client_id: str = Name
    tool: str = Name
    idp: str | None = Field(default=None, min_length=1, max_length=100)
    groups: list[str] = Field(default=[], max_length=200)
    claims: dict[str, Any] = Field(default={}, max_length=50)
    scopes: list[str] = Field(default=[], max_length=50)
    arguments: dict[str, Any] | None = Field(default=None, max_length=200,
                                             description="One call's arguments, checked against the filled constraints")


class KeyRotate(_Request):
    alg: Literal["ES256", "EdDSA"] | None = None
    force: bool = Field(default=False, description="Rotate before caches have seen the next key (a leaked key)")


class RevokeJti(_Request):
    jti: str = Field(min_length=1, max_length=64)


class RevokeClient(_Request):
    client_id: str = Name


class RevokeSubject(_Request):
    sub: str = Field(min_length=3, max_length=400, description="As capabilities carry it: NAMESPACE:SUB")


class AdminKeyCreate(_Request):
    name: str = Name
    role: Literal["admin", "auditor"]


# ----------------------------------------------------------------------------- responses


class Idp(_Response):
    name: str
    issuer: str
    namespace: str
    jwks_uri: str | None
    jwks: dict[str, Any] | None
    algorithms: list[str]
    subject_claim: str
    groups_claim: str
    attribute_claims: list[str]
    enabled: bool


class ScopeOut(_Response):
    name: str
    description: str
    actions: list[str]


class Tool(_Response):
    name: str
    resource_uri: str
    description: str
    status: str
    scopes: list[ScopeOut]
    rate_limit: str | None
    redact_arguments: list[str]
    hash_arguments: list[str]


class Client(_Response):
    client_id: str
    resource_uri: str
    tools: list[str]
    auth_methods: list[str]
    jwks: dict[str, Any] | None
    max_lifetime: int | None
    may_chain: bool
    rate_limit: str | None
    dpop_required: bool
    enabled: bool


class ClientCreated(_Response):
    client: Client
    client_secret: str | None = Field(description="Shown once; null when the secret was imported or not used")


class ClientSecret(_Response):
    client_id: str
    client_secret: str


class PolicyApplied(_Response):
    version: int


class PolicyVersion(_Response):
    version: int
    applied_by: str
    applied_at: str


class PolicyDocument(PolicyVersion):
    document: str
    policy: dict[str, Any] = Field(description="The canonical JSON form")


class PolicyDiff(_Response):
    from_: int = Field(alias="from")
    to: int
    diff: str = Field(description="Unified diff of the documents as applied")


class PolicyDecision(_Response):
    decision: Literal["granted", "denied"]
    reason: str
    rule: str | None
    scopes: list[str]
    policy_version: int
    max_lifetime: int | None
    actions: list[str]
    constraints: dict[str, Any]
    description: str
    arguments: ArgumentCheck | None = Field(default=None, description="Present when the request gave arguments")


class ArgumentCheck(_Response):
    admitted: bool
    violations: list[str]


class SigningKey(_Response):
    kid: str
    alg: str
    state: Literal["next", "active", "retired"]
    created_at: str
    activated_at: str | None
    retired_at: str | None


class KeyRotated(_Response):
    active: str
    alg: str
    previous: str | None
    previous_published_for: int


class AuditEvent(_Response):
    id: int
    time: str
    request_id: str
    decision: str
    reason: str
    idp: str | None
    sub: str | None
    client_id: str | None
    actor: dict[str, Any] | None
    tool: str | None
    requested_scopes: str | None
    granted_scopes: str | None
    policy_version: int | None
    rule_id: str | None
    jti: str | None
    expires_at: str | None
    client_addr: str | None
    authorization_details: list[Any] | None
    txn: str | None
    parent_jti: str | None = Field(description="The capability this one was chained from")


class AuditPage(_Response):
    events: list[AuditEvent]
    next_after_id: int | None = Field(description="Pass as after_id for the next page; null at the end")


class AuditHead(_Response):
    id: int
    chain: str


class AuditVerification(_Response):
    ok: bool
    problem: str | None
    rows: int
    sealed: int
    checkpoints: int
    admin_changes: int
    head: AuditHead | None


class AdminChange(_Response):
    id: int
    time: str
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


class ChangePage(_Response):
    changes: list[AdminChange]
    next_after_id: int | None


class Revoked(_Response):
    jti: str | None = None
    sub: str | None = None
    client_id: str | None = None
    revoked: bool
    chained: list[str] | None = Field(default=None, description="Capabilities chained from the jti, revoked with it")


class LiveCount(_Response):
    live: int = Field(description="Live capabilities the revocation would void")


class AdminKey(_Response):
    key_id: str
    name: str
    role: Literal["admin", "auditor"]
    created_by: str
    created_at: str
    revoked_at: str | None


class AdminKeyCreated(_Response):
    admin_key: AdminKey
    key: str = Field(description="Shown once: Authorization: Bearer <key>")


class Dependencies(_Response):
    database: str
    keys: str
    redis: str


class Rotation(_Response):
    active: str | None
    next: str | None
    active_since: str | None
    rotation_ready_at: str | None = Field(description="From then on the next key is in every cached JWKS")
    rotation_ready: bool


class DecisionBucket(_Response):
    start: str
    end: str
    granted: int
    denied: int


class Decisions(_Response):
    since: str
    until: str
    bucket_seconds: int
    buckets: list[DecisionBucket]
    totals: dict[str, int]
    rate_limited: int = Field(description="Exchanges refused by a rate limit in the window")


class Overview(_Response):
    time: str
    readiness: Dependencies
    policy_version: int | None
    keys: list[SigningKey]
    rotation: Rotation
    exchanges: Decisions
    audit_size: int = Field(description="The newest audit record's id")
    audit: AuditVerification | None = Field(
        description="audit verify's result; null when the trail is too large to verify on every look (use "
                    "GET /audit/verify)")


REQUESTS: dict[str, type[BaseModel]] = {m.__name__: m for m in (
    IdpUpdate, ToolUpdate,
    IdpCreate, ScopeIn, ToolCreate, ClientCreate, ClientUpdate, PolicyApply, PolicyTest, KeyRotate, RevokeJti,
    RevokeSubject, RevokeClient, AdminKeyCreate,
)}
RESPONSES: dict[str, type[BaseModel]] = {m.__name__: m for m in (
    ArgumentCheck, Dependencies, Rotation, DecisionBucket, Decisions, Overview,
    Idp, ScopeOut, Tool, Client, ClientCreated, ClientSecret, PolicyApplied, PolicyVersion, PolicyDocument,
    PolicyDiff, PolicyDecision, SigningKey, KeyRotated, AuditEvent, AuditPage, AuditHead, AuditVerification,
    AdminChange, ChangePage, Revoked, LiveCount, AdminKey, AdminKeyCreated,
)}
