"""Storage models (SQLAlchemy 2, typed ORM).

The registry (identity providers, tools, clients), policy versions and the
audit trail. Alembic owns the schema (``migrations/``); these classes describe
it for queries. The exchange hot path never reads these rows directly: the
registry snapshot (:mod:`issuer.registry`) loads them into frozen values and
reloads when ``config_state.generation`` moves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "AdminChange",
    "AdminKey",
    "AuditCheckpoint",
    "AuditEvent",
    "Base",
    "Client",
    "ClientTool",
    "ConfigState",
    "IdentityProvider",
    "PolicyVersion",
    "ReplayEntry",
    "RevocationState",
    "RevokedClient",
    "RevokedSubject",
    "RevokedToken",
    "Tool",
    "ToolScope",
]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, list[Any]: JSON}


class ConfigState(Base):
    """One row. Every registry or policy change bumps ``generation`` in its own
    transaction, so a replica learns of any change with one tiny query."""

    __tablename__ = "config_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class IdentityProvider(Base):
    __tablename__ = "identity_providers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    issuer: Mapped[str] = mapped_column(String(500), unique=True)
    namespace: Mapped[str] = mapped_column(String(100), unique=True)
    jwks_uri: Mapped[str | None] = mapped_column(String(1000))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    algorithms: Mapped[list[str]] = mapped_column(JSON)
    subject_claim: Mapped[str] = mapped_column(String(100), default="sub")
    groups_claim: Mapped[str] = mapped_column(String(100), default="groups")
    attribute_claims: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Tool(Base):
    __tablename__ = "tools"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    resource_uri: Mapped[str] = mapped_column(String(1000), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    status: Mapped[str] = mapped_column(String(20), default="active")
    #: exchanges per user for this tool, unless a policy rule says otherwise (limits syntax)
    rate_limit: Mapped[str | None] = mapped_column(String(100))
    #: argument names (dotted) whose values the audit trail must not keep, and ones it keeps only as a hash
    redact_arguments: Mapped[list[str] | None] = mapped_column(JSON)
    hash_arguments: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    scopes: Mapped[list[ToolScope]] = relationship(
        back_populates="tool", cascade="all, delete-orphan", order_by="ToolScope.name"
    )


class ToolScope(Base):
    __tablename__ = "tool_scopes"
    __table_args__ = (UniqueConstraint("tool_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tool_id: Mapped[int] = mapped_column(ForeignKey("tools.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000), default="")
    actions: Mapped[list[str]] = mapped_column(JSON, default=list)
    tool: Mapped[Tool] = relationship(back_populates="scopes")


class Client(Base):
    """An MCP server allowed to exchange tokens.

    ``secret_hash`` is HMAC-SHA-256(pepper, secret): the secret has 256 random
    bits, so a keyed fast hash resists offline guessing as well as a slow
    password hash would, and keeps the exchange fast.
    """

    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    secret_hash: Mapped[str | None] = mapped_column(String(128))
    auth_methods: Mapped[list[str]] = mapped_column(JSON)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    resource_uri: Mapped[str] = mapped_column(String(1000), unique=True)
    max_lifetime: Mapped[int | None] = mapped_column(Integer)
    may_chain: Mapped[bool] = mapped_column(Boolean, default=False)
    #: refuse an exchange without a DPoP proof: every capability of this client is sender-constrained
    dpop_required: Mapped[bool] = mapped_column(Boolean, default=False)
    #: exchanges by this client across all its users (limits syntax); none = no client-wide budget
    rate_limit: Mapped[str | None] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tools: Mapped[list[ClientTool]] = relationship(cascade="all, delete-orphan")


class ClientTool(Base):
    __tablename__ = "client_tools"
    client_pk: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    tool_id: Mapped[int] = mapped_column(ForeignKey("tools.id", ondelete="CASCADE"), primary_key=True)
    tool: Mapped[Tool] = relationship()


class PolicyVersion(Base):
    """An applied policy document. The active policy is the highest version."""

    __tablename__ = "policy_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text)
    canonical: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """One exchange decision, granted or refused. Never a token, secret or key."""

    __tablename__ = "audit_events"
    #: the overview's rate-limited count and reason filters read only matching records (migration 0009)
    __table_args__ = (Index("ix_audit_events_reason_time", "reason", "time"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(64))
    idp: Mapped[str | None] = mapped_column(String(100))
    sub: Mapped[str | None] = mapped_column(String(400), index=True)
    client_id: Mapped[str | None] = mapped_column(String(100), index=True)
    actor: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    tool: Mapped[str | None] = mapped_column(String(100), index=True)
    requested_scopes: Mapped[str | None] = mapped_column(String(2000))
    granted_scopes: Mapped[str | None] = mapped_column(String(2000))
    policy_version: Mapped[int | None] = mapped_column(Integer)
    rule_id: Mapped[str | None] = mapped_column(String(100))
    jti: Mapped[str | None] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    #: the granted RFC 9396 details: constraints, or a call-bound capability's arguments
    authorization_details: Mapped[list[Any] | None] = mapped_column(JSON)
    #: the agent action this exchange belongs to, shared by every hop of a chain
    txn: Mapped[str | None] = mapped_column(String(100), index=True)
    #: the jti of the capability presented as subject_token (a chained exchange): revoking it revokes this one
    parent_jti: Mapped[str | None] = mapped_column(String(64), index=True)
    #: HMAC-SHA-256 of the row's content under the server pepper (see issuer.audit_chain)
    mac: Mapped[str | None] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A sealed, contiguous range of audit rows: a hash chain over (id, mac), keyed to the previous seal.

    ``first_id`` is unique and always the previous seal's ``last_id + 1``, so two
    replicas sealing at once cannot both succeed and no range is sealed twice.
    """

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    last_id: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    prev_chain: Mapped[str] = mapped_column(String(64))
    chain: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    mac: Mapped[str] = mapped_column(String(64))


class ReplayEntry(Base):
    """Seen-once keys (client assertion ``jti``s) when no Redis is configured: the
    database is the one thing every worker and replica already shares."""

    __tablename__ = "replay_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class RevokedToken(Base):
    __tablename__ = "revoked_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_by: Mapped[str] = mapped_column(String(100))


class RevokedSubject(Base):
    """Every capability of a user issued before ``revoked_before`` is void (a compromised account).

    The feed publishes only ``sub_sha256``: verifiers can match it against a
    token's ``sub`` without the feed naming anyone.
    """

    __tablename__ = "revoked_subjects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sub: Mapped[str] = mapped_column(String(400), index=True)
    sub_sha256: Mapped[str] = mapped_column(String(64))
    revoked_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_by: Mapped[str] = mapped_column(String(100))


class RevokedClient(Base):
    """Every capability with this client anywhere in its ``act`` chain, issued before ``revoked_before``, is void
    (a compromised MCP server)."""

    __tablename__ = "revoked_clients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(100), index=True)
    revoked_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_by: Mapped[str] = mapped_column(String(100))


class RevocationState(Base):
    """One row: bumped in the transaction of every revocation, so the signed feed carries a version that
    only increases and a verifier can refuse a feed older than one it has applied."""

    __tablename__ = "revocation_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class AdminKey(Base):
    """A credential for the admin API. Only an HMAC of the secret is kept (as for client secrets)."""

    __tablename__ = "admin_keys"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AdminChange(Base):
    """One admin change (registry, policy, keys, revocation, admin keys): who, what, before and after.

    Written in the same transaction as the change where the change is a database
    write; ``mac`` tags the row under the server pepper like an audit row.
    """

    __tablename__ = "admin_changes"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(400))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    request_id: Mapped[str | None] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
