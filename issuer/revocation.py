"""Revoked capabilities: a ``jti`` kept until the token would have expired anyway.

Read where a capability comes back to the issuer (introspection, a chained
exchange); written by RFC 7009 revocation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from . import clock
from .db import Database
from .models import RevokedToken

__all__ = ["RevocationList"]


class RevocationList:
    def __init__(self, db: Database) -> None:
        self._db = db

    def is_revoked(self, jti: str) -> bool:
        with self._db.serving() as s:
            return s.get(RevokedToken, jti) is not None

    def revoke(self, claims: Mapping[str, Any], by: str) -> None:
        values = {
            "jti": str(claims["jti"]),
            "expires_at": datetime.fromtimestamp(int(claims["exp"]), UTC),
            "revoked_at": datetime.fromtimestamp(clock.now(), UTC),
            "revoked_by": by,
        }
        with self._db.serving() as s:
            dialect = s.get_bind().dialect.name
            ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(RevokedToken).values(**values)
            s.execute(ins.on_conflict_do_nothing(index_elements=["jti"]))
