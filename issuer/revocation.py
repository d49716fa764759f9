"""Revocation: one capability (its ``jti``), or every capability of a user issued before a moment.

Read where a capability comes back to the issuer (introspection, a chained
exchange) and published as a feed that verifiers poll, so upstream tools
refuse revoked capabilities within their polling interval. Entries are
published only while they can still matter: a ``jti`` until its token
expires, a subject revocation for as long as any capability can live.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from . import clock
from .db import Database
from .models import AuditEvent, RevokedSubject, RevokedToken

__all__ = ["SUBJECT_REVOCATION_WINDOW", "RevocationList", "sub_digest"]

#: How long a subject revocation is published: longer than any capability lives (900 s) plus skew.
SUBJECT_REVOCATION_WINDOW = 3600


def sub_digest(sub: str) -> str:
    """base64url(SHA-256(sub)) without padding: how the feed names a user."""
    return base64.urlsafe_b64encode(hashlib.sha256(sub.encode()).digest()).rstrip(b"=").decode()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _ts(when: datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class RevocationList:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- checks -------------------------------------------------------------------
    def is_revoked(self, claims: Mapping[str, Any]) -> bool:
        """True if this capability's ``jti`` is revoked, or its subject was revoked after it was issued."""
        iat = _dt(float(claims.get("iat", 0)))
        with self._db.serving() as s:
            if s.get(RevokedToken, str(claims.get("jti", ""))) is not None:
                return True
            hit = s.scalars(
                select(RevokedSubject.id)
                .where(RevokedSubject.sub == str(claims.get("sub", "")), RevokedSubject.revoked_before > iat)
                .limit(1)
            ).first()
            return hit is not None

    # -- writes -------------------------------------------------------------------
    def revoke(self, claims: Mapping[str, Any], by: str) -> None:
        values = {
            "jti": str(claims["jti"]),
            "expires_at": _dt(int(claims["exp"])),
            "revoked_at": _dt(clock.now()),
            "revoked_by": by,
        }
        with self._db.serving() as s:
            dialect = s.get_bind().dialect.name
            ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(RevokedToken).values(**values)
            s.execute(ins.on_conflict_do_nothing(index_elements=["jti"]))

    def revoke_jti(self, jti: str, by: str) -> bool:
        """Revoke by id alone (an admin holding an audit record, not the token). False if never issued."""
        with self._db.serving() as s:
            row = s.scalars(select(AuditEvent).where(AuditEvent.jti == jti)).first()
        if row is None or row.expires_at is None:
            return False
        self.revoke({"jti": jti, "exp": int(_ts(row.expires_at))}, by)
        return True

    def revoke_subject(self, sub: str, by: str) -> None:
        now = clock.now()
        with self._db.serving() as s:
            s.add(RevokedSubject(sub=sub, sub_sha256=sub_digest(sub), revoked_before=_dt(now), revoked_at=_dt(now),
                                 revoked_by=by))

    # -- the feed -----------------------------------------------------------------
    def feed(self, since: float | None) -> dict[str, Any]:
        """Entries revoked after ``since`` (all live ones when None), and the time to poll from next."""
        now = clock.now()
        after = _dt(since) if since is not None else _dt(0)
        with self._db.serving() as s:
            jtis = s.execute(
                select(RevokedToken.jti, RevokedToken.expires_at)
                .where(RevokedToken.revoked_at > after, RevokedToken.expires_at > _dt(now))
                .order_by(RevokedToken.revoked_at)
            ).all()
            subjects = s.execute(
                select(RevokedSubject.sub_sha256, RevokedSubject.revoked_before).where(
                    RevokedSubject.revoked_at > after,
                    RevokedSubject.revoked_at > _dt(now) - timedelta(seconds=SUBJECT_REVOCATION_WINDOW),
                )
            ).all()
        return {
            "issued_at": now,
            "jtis": [{"jti": j, "exp": int(_ts(exp))} for j, exp in jtis],
            # Rounded up: a capability issued in the same second as the revocation is revoked too.
            "subjects": [{"sub_sha256": h, "revoked_before": math.ceil(_ts(before))} for h, before in subjects],
        }
