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


AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]


class ClientCreate(_Request):
    client_id: str = Name
    resource_uri: str = Field(min_length=1, max_length=1000)
    tools: list[str] = Field(default=[], max_length=500)
    auth_methods: list[AuthMethod] = Field(default=["client_secret_basic", "client_secret_post"], min_length=1)
    jwks: dict[str, Any] | None = None
    max_lifetime: int | None = Field(default=None, ge=10, le=900)
    may_chain: bool = False
    secret: str | None = Field(default=None, min_length=20, max_length=200,
                               description="Import an existing secret instead of generating one")
    rate_limit: str | None = Field(default=None, max_length=100)


class ClientUpdate(_Request):
    enabled: bool


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


class KeyRotate(_Request):
    alg: Literal["ES256", "EdDSA"] | None = None
    force: bool = Field(default=False, description="Rotate before caches have seen the next key (a leaked key)")


class RevokeJti(_Request):
    jti: str = Field(min_length=1, max_length=64)


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
    revoked: bool


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


REQUESTS: dict[str, type[BaseModel]] = {m.__name__: m for m in (
    IdpCreate, ScopeIn, ToolCreate, ClientCreate, ClientUpdate, PolicyApply, PolicyTest, KeyRotate, RevokeJti,
    RevokeSubject, AdminKeyCreate,
)}
RESPONSES: dict[str, type[BaseModel]] = {m.__name__: m for m in (
    Idp, ScopeOut, Tool, Client, ClientCreated, ClientSecret, PolicyApplied, PolicyVersion, PolicyDocument,
    PolicyDiff, PolicyDecision, SigningKey, KeyRotated, AuditEvent, AuditPage, AuditHead, AuditVerification,
    AdminChange, ChangePage, Revoked, AdminKey, AdminKeyCreated,
)}
