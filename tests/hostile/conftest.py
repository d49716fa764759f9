"""Shared by the hostile-input tests: the registry's state, the audit trail, and the SDK's fake issuer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text

from issuer.models import AuditEvent
from tests.conftest import LiveIssuer
from tests.sdk.client.conftest import scripted  # noqa: F401  (fixtures for the SDK tests)
from tests.sdk.verifier.conftest import fake, make_verifier, verifier  # noqa: F401

#: Every table a refused request must leave as it was (the audit trail is checked on its own).
REGISTRY_TABLES = ("config_state", "identity_providers", "tools", "tool_scopes", "clients", "client_tools",
                   "policy_versions", "revoked_tokens", "revoked_subjects", "revoked_clients", "revocation_state",
                   "admin_keys", "admin_changes")


def registry_state(live: LiveIssuer) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every registry table, in a stable order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with live.db.engine.connect() as c:
        for table in REGISTRY_TABLES:
            rows = c.execute(text(f"SELECT * FROM {table}")).all()  # fixed names above, no input
            out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


def audit_count(live: LiveIssuer, decision: str | None = None) -> int:
    q = select(func.count()).select_from(AuditEvent)
    if decision is not None:
        q = q.where(AuditEvent.decision == decision)
    with live.db.session() as s:
        return int(s.scalar(q) or 0)


def last_audit(live: LiveIssuer) -> AuditEvent:
    with live.db.session() as s:
        row = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).one()
        s.expunge(row)
        return row
