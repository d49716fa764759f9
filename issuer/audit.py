"""The audit trail: one row per exchange decision, committed before any token leaves.

A granted exchange's row is written and committed before the response; if the
commit fails the caller gets a 503 and the signed token is thrown away, so no
capability exists without its record. Rows hold identities, scopes and ids,
never a token, secret or key.

Rows are committed in groups (:class:`GroupCommitter`): a request thread
queues its row; if no commit is under way it becomes the leader and commits
every row queued at that moment in one transaction on the committer's own
connection, while threads that arrive meanwhile wait to be released with the
outcome (or to lead the next group). An idle server commits each row alone,
in the request's own thread, with no hand-off; a busy one pays one commit
(one WAL flush, one round trip) per group instead of per exchange.
Durability is unchanged: no writer returns before the commit that holds its
row succeeded.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from . import clock
from .audit_chain import ROW_FIELDS, AuditSealer, row_mac
from .audit_commit import GroupCommitter
from .db import Database
from .errors import TemporarilyUnavailable
from .metrics import Metrics
from .models import AuditEvent

__all__ = ["AuditRecord", "AuditWriter", "GroupCommitter", "audit_row_dict", "query_audit"]

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
    txn: str | None = None
    parent_jti: str | None = None

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
            txn=self.txn,
            parent_jti=self.parent_jti,
        )


class AuditWriter:
    """Writes tagged rows; every ``seal_interval`` seconds it also seals older rows, off the request path."""

    def __init__(self, db: Database, pepper: bytes, *, seal_interval: float = 30.0,
                 metrics: Metrics | None = None) -> None:
        self._db = db
        self._metrics = metrics
        self._pepper = pepper
        self._committer = GroupCommitter(db)
        self._sealer = AuditSealer(db, pepper)
        self._seal_interval = seal_interval
        self._last_seal = clock.monotonic()
        self._sealing = threading.Lock()

    def scrub(self, details: Sequence[Mapping[str, Any]] | None, redact: Sequence[str],
              hashed: Sequence[str]) -> list[Any] | None:
        """Details as the audit trail may keep them: the tool's sensitive arguments dropped or hashed.

        Hashes are keyed (HMAC with the pepper) so a low-entropy value such as an account
        number cannot be recovered by hashing guesses, yet equal values still correlate.
        """
        if not details:
            return None
        if not redact and not hashed:  # nothing to take out: the row may keep the details as granted
            return list(details)
        out: list[Any] = []
        for detail in details:
            d = copy.deepcopy(dict(detail))
            args = d.get("arguments")
            if isinstance(args, dict):
                for name in redact:
                    _replace(args, name, lambda _v: "[redacted]")
                for name in hashed:
                    _replace(args, name, lambda v: "hmac-sha256:" + hmac.new(
                        self._pepper, json.dumps(v, sort_keys=True).encode(), hashlib.sha256).hexdigest())
            out.append(d)
        return out

    def _write(self, record: AuditRecord) -> None:
        """Tag and commit one row; any failure on the way (the database, or a value that cannot be encoded
        for the tag or the driver) is counted here, once, and raised for the caller to answer 503."""
        try:
            row = record.to_row()
            row["mac"] = row_mac(self._pepper, row)
            self._committer.write(row)
        except Exception:
            if self._metrics is not None:
                self._metrics.audit_failures.labels(record.decision).inc()
            raise
        if self._metrics is not None:
            self._metrics.exchanges.labels(record.decision, record.reason).inc()
        self._maybe_seal()

    def _maybe_seal(self) -> None:
        if clock.monotonic() - self._last_seal < self._seal_interval or not self._sealing.acquire(blocking=False):
            return
        self._last_seal = clock.monotonic()

        def run() -> None:
            try:
                self._sealer.seal_all(pause=0.005)
            finally:
                self._sealing.release()

        threading.Thread(target=run, name="audit-sealer", daemon=True).start()

    def commit_grant(self, record: AuditRecord) -> None:
        """Durably record a grant. Raises TemporarilyUnavailable (503) when it cannot."""
        try:
            self._write(record)
        except Exception as e:  # whatever failed, the token must not leave without its row
            log.error("audit write failed; refusing to issue: %s", type(e).__name__)
            raise TemporarilyUnavailable("The audit trail is unavailable; no token was issued.") from None

    def record_denial(self, record: AuditRecord) -> None:
        """Durably record a refusal. Raises TemporarilyUnavailable (503) when it cannot.

        No refusal without its record: a refusal whose row is lost is an attack nobody can see (a probe
        that also breaks the write, or an outage that hides a brute force). The failure is counted
        (``issuer_audit_write_failures_total``) and logged as an error, and the client is told the
        truth: the issuer could not decide on the record, so it answers 503, not the refusal.
        """
        try:
            self._write(record)
        except Exception as e:  # logged by type only: a driver's message can quote the row
            log.error("audit write of a denial failed; answering 503: %s", type(e).__name__)
            raise TemporarilyUnavailable("The audit trail is unavailable; the request was not processed.") from None


def _replace(arguments: dict[str, Any], dotted: str, how: Callable[[Any], Any]) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = arguments
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf in node:
        node[leaf] = how(node[leaf])


def audit_row_dict(row: AuditEvent) -> dict[str, Any]:
    """A row as JSON-ready data (exports, tail, the admin API)."""
    out: dict[str, Any] = {"id": row.id}
    for f in ROW_FIELDS:
        v = getattr(row, f)
        if isinstance(v, datetime):
            v = (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
        out[f] = v
    return out


def query_audit(
    db: Database,
    *,
    sub: str | None = None,
    client_id: str | None = None,
    tool: str | None = None,
    decision: str | None = None,
    reason: str | None = None,
    txn: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int = 0,
    limit: int = 100,
    newest_first: bool = False,
) -> list[AuditEvent]:
    """Filter the trail; page with ``after_id`` (oldest first) for exports and followers."""
    q = select(AuditEvent).where(AuditEvent.id > after_id)
    for column, value in ((AuditEvent.sub, sub), (AuditEvent.client_id, client_id), (AuditEvent.tool, tool),
                          (AuditEvent.decision, decision), (AuditEvent.reason, reason), (AuditEvent.txn, txn)):
        if value is not None:
            q = q.where(column == value)
    if since is not None:
        q = q.where(AuditEvent.time >= since)
    if until is not None:
        q = q.where(AuditEvent.time < until)
    q = q.order_by(AuditEvent.id.desc() if newest_first else AuditEvent.id).limit(max(1, min(limit, 10_000)))
    with db.session() as s:
        return list(s.scalars(q))
