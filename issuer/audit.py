"""The audit trail: one row per exchange decision, committed before any token leaves.

A granted exchange's row is written and committed before the response; if the
commit fails the caller gets a 503 and the signed token is thrown away, so no
capability exists without its record. Rows hold identities, scopes and ids,
never a token, secret or key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from .db import Database
from .errors import TemporarilyUnavailable
from .models import AuditEvent

__all__ = ["AuditRecord", "AuditWriter"]

log = logging.getLogger(__name__)


@dataclass
class AuditRecord:
    time: float
    request_id: str
    decision: str  #: "granted" or "denied"
    reason: str  #: stable machine code
    idp: str | None = None
    sub: str | None = None
    client_id: str | None = None
    actor: dict[str, Any] | None = None
    tool: str | None = None
    requested_scopes: str | None = None
    granted_scopes: str | None = None
    policy_version: int | None = None
    rule_id: str | None = None
    jti: str | None = None
    expires_at: float | None = None
    client_addr: str | None = None
    authorization_details: list[Any] | None = None

    def to_row(self) -> dict[str, Any]:
        return dict(
            time=datetime.fromtimestamp(self.time, UTC),
            request_id=self.request_id,
            decision=self.decision,
            reason=self.reason,
            idp=self.idp,
            sub=self.sub,
            client_id=self.client_id,
            actor=self.actor,
            tool=self.tool,
            requested_scopes=self.requested_scopes,
            granted_scopes=self.granted_scopes,
            policy_version=self.policy_version,
            rule_id=self.rule_id,
            jti=self.jti,
            expires_at=datetime.fromtimestamp(self.expires_at, UTC) if self.expires_at is not None else None,
            client_addr=self.client_addr,
            authorization_details=self.authorization_details,
        )


class AuditWriter:
    def __init__(self, db: Database) -> None:
        self._db = db
        # A Core INSERT: the ORM's unit of work costs more than the row is worth on this path.
        self._insert = insert(AuditEvent)

    def _write(self, record: AuditRecord) -> None:
        with self._db.engine.begin() as conn:
            conn.execute(self._insert, record.to_row())

    def commit_grant(self, record: AuditRecord) -> None:
        """Durably record a grant. Raises TemporarilyUnavailable (503) when it cannot."""
        try:
            self._write(record)
        except SQLAlchemyError as e:
            log.error("audit write failed; refusing to issue: %s", type(e).__name__)
            raise TemporarilyUnavailable("The audit trail is unavailable; no token was issued.") from None

    def record_denial(self, record: AuditRecord) -> None:
        """Record a refusal. The refusal stands even if the write fails; the failure is logged."""
        try:
            self._write(record)
        except SQLAlchemyError as e:
            log.error("audit write of a denial failed: %s", type(e).__name__)
