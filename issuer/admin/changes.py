"""The admin change log: who changed what, with the state before and after.

Registry and policy changes are recorded inside the transaction that makes
them (a change without its record is rolled back); key rotations and
revocations, which are not one database write, are recorded right after they
succeed. Each row carries an HMAC under the server pepper, as audit rows do,
so an edit made directly in the database shows up in ``issuer audit verify``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import clock
from ..db import Database
from ..models import AdminChange

__all__ = ["ChangeLog", "change_dict", "verify_changes"]

_FIELDS = ("time", "actor", "action", "target", "before", "after", "request_id")


def _mac(pepper: bytes, row: Mapping[str, Any]) -> str:
    body = {f: clock.iso(row[f]) if isinstance(row[f], datetime) else row[f] for f in _FIELDS}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hmac.new(pepper, b"admin-change\x00" + data, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ChangeLog:
    """Bound to one actor (an admin key, or the OS user of a CLI run) and request."""

    pepper: Callable[[], bytes]  #: read at the first write, so that reads work (and fail) without it
    actor: str
    request_id: str | None = None

    def __call__(self, s: Session, action: str, target: str, before: Mapping[str, Any] | None,
                 after: Mapping[str, Any] | None) -> None:
        # Whole seconds: SQLite and PostgreSQL then return the same value the tag was computed over.
        row = {"time": datetime.fromtimestamp(int(clock.now()), UTC), "actor": self.actor[:200],
               "action": action, "target": target[:400], "before": dict(before) if before is not None else None,
               "after": dict(after) if after is not None else None, "request_id": self.request_id}
        s.add(AdminChange(**row, mac=_mac(self.pepper(), row)))

    def record(self, db: Database, action: str, target: str, before: Mapping[str, Any] | None,
               after: Mapping[str, Any] | None) -> None:
        """For changes that are not one database write (keys, revocations): record after they succeed."""
        with db.session() as s:
            self(s, action, target, before, after)


def change_dict(row: AdminChange) -> dict[str, Any]:
    return {"id": row.id, "time": clock.iso(row.time), "actor": row.actor, "action": row.action, "target": row.target,
            "before": row.before, "after": row.after, "request_id": row.request_id}


def verify_changes(db: Database, pepper: bytes) -> tuple[int, str | None]:
    """(rows checked, the first problem or None)."""
    count, after = 0, 0
    while True:
        with db.session() as s:
            rows = list(s.scalars(select(AdminChange).where(AdminChange.id > after).order_by(AdminChange.id)
                                  .limit(5000)))
        if not rows:
            return count, None
        for row in rows:
            fields = {f: getattr(row, f) for f in _FIELDS}
            if not hmac.compare_digest(row.mac, _mac(pepper, fields)):
                return count, f"admin change {row.id} was altered (its tag does not match)"
            count += 1
        after = rows[-1].id
