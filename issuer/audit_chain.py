"""Tamper evidence for the audit trail: keyed row tags and sealed hash-chain checkpoints.

Two layers, neither of which puts a lock on the exchange path:

1. **Row tags.** Each row is written with ``mac`` = HMAC-SHA-256(pepper,
   canonical content). The pepper lives in the key folder, not the database,
   so someone who can write the database but not read the keys cannot edit a
   row and forge its tag. Every replica tags its own rows independently.
2. **Checkpoints.** From time to time one process seals the contiguous run of
   rows after the last checkpoint: ``chain = SHA-256(prev_chain || id || mac)``
   folded over the rows in id order, stored with the range, the count and its
   own tag. ``first_id`` is unique and equals the previous ``last_id + 1``, so
   two replicas sealing at once race on one INSERT and exactly one wins; the
   loser simply skips. A deleted, inserted or reordered row inside a sealed
   range breaks the chain.

Sealing stays ``SEAL_MARGIN`` seconds behind the newest rows, so a
transaction still in flight cannot commit a row into an already sealed range;
rows newer than the last seal are protected by their tags alone until the next
seal. ``verify`` recomputes everything and names the first bad record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import clock
from .db import Database
from .models import AuditCheckpoint, AuditEvent

__all__ = ["AUDIT_FIELDS", "ROW_FIELDS", "SEAL_MARGIN", "AuditSealer", "VerifyResult", "row_mac", "verify_audit"]

log = logging.getLogger(__name__)

#: The columns a row tag covers (everything but the id, which the chain covers).
AUDIT_FIELDS = (
    "time", "request_id", "decision", "reason", "idp", "sub", "client_id", "actor", "tool",
    "requested_scopes", "granted_scopes", "policy_version", "rule_id", "jti", "expires_at", "client_addr",
    "authorization_details",
)
#: Columns added later: tagged only when set, so the rows written before they existed still verify,
#: while clearing one on a newer row changes its tag.
LATER_FIELDS = ("txn", "parent_jti")
#: Every column a row is written and read with.
ROW_FIELDS = (*AUDIT_FIELDS, *LATER_FIELDS)
#: Seconds a row must have existed before it is sealed (longer than any request can hold a transaction).
SEAL_MARGIN = 60.0
_GENESIS = "0" * 64


def _value(v: Any) -> Any:
    if isinstance(v, datetime):
        aware = v if v.tzinfo else v.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return v


def canonical(row: Mapping[str, Any]) -> bytes:
    body = {f: _value(row.get(f)) for f in AUDIT_FIELDS}
    body.update((f, row[f]) for f in LATER_FIELDS if row.get(f) is not None)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def row_mac(pepper: bytes, row: Mapping[str, Any]) -> str:
    return hmac.new(pepper, b"audit-row\x00" + canonical(row), hashlib.sha256).hexdigest()


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # SQLite keeps no zone: the instant is UTC


def _link(prev: str, row_id: int, mac: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + row_id.to_bytes(8, "big") + bytes.fromhex(mac)).hexdigest()


def _checkpoint_mac(pepper: bytes, cp: Mapping[str, Any]) -> str:
    body = f"{cp['first_id']}:{cp['last_id']}:{cp['count']}:{cp['prev_chain']}:{cp['chain']}".encode()
    return hmac.new(pepper, b"audit-checkpoint\x00" + body, hashlib.sha256).hexdigest()


def _as_dict(row: AuditEvent) -> dict[str, Any]:
    return {f: getattr(row, f) for f in ROW_FIELDS}


class AuditSealer:
    def __init__(self, db: Database, pepper: bytes, *, margin: float = SEAL_MARGIN, batch: int = 1000) -> None:
        self._db = db
        self._pepper = pepper
        self._margin = margin
        self._batch = batch

    def seal(self) -> AuditCheckpoint | None:
        """Seal the next run of old-enough rows. None when there is nothing to seal or another process won."""
        cutoff = datetime.fromtimestamp(clock.now() - self._margin, UTC)
        try:
            with self._db.session() as s:
                last = s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.last_id.desc()).limit(1)).first()
                start = (last.last_id if last else 0) + 1
                prev = last.chain if last else _GENESIS
                # Usually the next row is still too young: one row read says so, not a batch.
                first = s.execute(select(AuditEvent.time, AuditEvent.mac).where(AuditEvent.id >= start)
                                  .order_by(AuditEvent.id).limit(1)).first()
                if first is None or first.mac is None or _aware(first.time) > cutoff:
                    return None
                rows = s.execute(
                    select(AuditEvent.id, AuditEvent.time, AuditEvent.mac)
                    .where(AuditEvent.id >= start).order_by(AuditEvent.id).limit(self._batch)
                ).all()
                chain, count, last_id = prev, 0, start - 1
                for row_id, when, mac in rows:
                    if _aware(when) > cutoff or mac is None:
                        break  # seal a contiguous prefix only
                    chain, count, last_id = _link(chain, row_id, mac), count + 1, row_id
                if count == 0:
                    return None
                cp = {"first_id": start, "last_id": last_id, "count": count, "prev_chain": prev, "chain": chain}
                checkpoint = AuditCheckpoint(**cp, created_at=datetime.fromtimestamp(clock.now(), UTC),
                                             mac=_checkpoint_mac(self._pepper, cp))
                s.add(checkpoint)
            return checkpoint
        except IntegrityError:
            return None  # another replica sealed this range first
        except SQLAlchemyError as e:
            log.warning("audit seal failed: %s", type(e).__name__)
            return None

    def seal_all(self, pause: float = 0.0) -> int:
        """Seal every run of old-enough rows; ``pause`` seconds between runs leave the interpreter to the
        request threads of the same process (a batch is a few milliseconds of Python work)."""
        sealed = 0
        while (cp := self.seal()) is not None:
            sealed += cp.count
            if pause:
                time.sleep(pause)
        return sealed


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    sealed: int
    checkpoints: int
    problem: str | None = None  #: the first bad record, in words
    head: tuple[int, str] | None = None  #: (last sealed id, chain) of the newest checkpoint


def _rows(db: Database, batch: int = 5000) -> Iterator[AuditEvent]:
    after = 0
    while True:
        with db.session() as s:
            chunk = list(s.scalars(select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)
                                   .limit(batch)))
        if not chunk:
            return
        yield from chunk
        after = chunk[-1].id


def verify_audit(db: Database, pepper: bytes) -> VerifyResult:
    with db.session() as s:
        checkpoints = list(s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.first_id)))
    expected_first, prev = 1, _GENESIS
    for cp in checkpoints:
        fields = {"first_id": cp.first_id, "last_id": cp.last_id, "count": cp.count, "prev_chain": cp.prev_chain,
                  "chain": cp.chain}
        if not hmac.compare_digest(cp.mac, _checkpoint_mac(pepper, fields)):
            return VerifyResult(False, 0, 0, len(checkpoints), f"checkpoint {cp.first_id}..{cp.last_id} was altered")
        if cp.first_id != expected_first or cp.prev_chain != prev:
            return VerifyResult(False, 0, 0, len(checkpoints),
                                f"checkpoints do not follow each other at record {expected_first} "
                                "(a checkpoint was deleted or replaced)")
        expected_first, prev = cp.last_id + 1, cp.chain
    rows = sealed = 0
    cp_iter = iter(checkpoints)
    current = next(cp_iter, None)
    chain, count = (current.prev_chain if current else _GENESIS), 0
    for row in _rows(db):
        rows += 1
        if row.mac is None:
            return VerifyResult(False, rows, sealed, len(checkpoints), f"record {row.id} has no integrity tag")
        if not hmac.compare_digest(row.mac, row_mac(pepper, _as_dict(row))):
            return VerifyResult(False, rows, sealed, len(checkpoints), f"record {row.id} was altered")
        while current is not None and row.id > current.last_id:
            if chain != current.chain or count != current.count:
                return VerifyResult(False, rows, sealed, len(checkpoints),
                                    f"records {current.first_id}..{current.last_id} were deleted, inserted or "
                                    f"reordered (first bad record at or before {row.id})")
            current = next(cp_iter, None)
            chain, count = (current.prev_chain if current else chain), 0
        if current is not None and row.id >= current.first_id:
            chain, count = _link(chain, row.id, row.mac), count + 1
            sealed += 1
    while current is not None:
        if chain != current.chain or count != current.count:
            return VerifyResult(False, rows, sealed, len(checkpoints),
                                f"records {current.first_id}..{current.last_id} were deleted, inserted or reordered")
        current = next(cp_iter, None)
        chain, count = _GENESIS, 0
    head = (checkpoints[-1].last_id, checkpoints[-1].chain) if checkpoints else None
    return VerifyResult(True, rows, sealed, len(checkpoints), head=head)


