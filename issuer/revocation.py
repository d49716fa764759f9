"""Revocation of capabilities: one (with every capability chained from it), a user's, or a client's.

Three kinds, because delegation makes one not enough:

* a ``jti``, and with it every capability minted from it by a chained
  exchange, however deep (the audit trail links each to its parent);
* a user (``sub``): every capability of that user issued before now;
* a client: every capability with that client anywhere in its ``act`` chain
  issued before now - a compromised MCP server, and whatever tools it reached
  on a user's behalf.

Read where a capability comes back to the issuer (introspection, a chained
exchange) and published as a signed feed that verifiers poll. Every
revocation bumps a version in its own transaction; the feed carries it, so a
verifier refuses a feed older than one it has applied (a rollback), and a
signature by the issuer's key, so it refuses a forged one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import clock
from .db import Database
from .models import AuditEvent, RevocationState, RevokedClient, RevokedSubject, RevokedToken

# The feed's wire format is the verifier SDK's: one definition of the typ and of how a user is named.
from .sdk.verifier._revocation import FEED_TYP, sub_digest

__all__ = ["FEED_TYP", "SUBJECT_REVOCATION_WINDOW", "RevocationList", "act_clients", "sub_digest"]

#: How long a subject or client revocation is published: longer than any capability lives (900 s) plus skew.
SUBJECT_REVOCATION_WINDOW = 3600
#: Chained descendants followed per revocation: far beyond any real fan-out, bounds a pathological walk.
MAX_CASCADE = 100_000


def act_clients(claims: Mapping[str, Any]) -> list[str]:
    """Every client a capability passed through: its ``client_id`` and each ``act.sub``, outermost first."""
    out = [claims["client_id"]] if isinstance(claims.get("client_id"), str) else []
    act = claims.get("act")
    depth = 0
    while isinstance(act, Mapping) and depth < 32:
        if isinstance(act.get("sub"), str) and act["sub"] not in out:
            out.append(act["sub"])
        act, depth = act.get("act"), depth + 1
    return out


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _ts(when: datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _bump(s: Session) -> None:
    s.execute(update(RevocationState).where(RevocationState.id == 1).values(version=RevocationState.version + 1))


class RevocationList:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- checks -------------------------------------------------------------------
    def is_revoked(self, claims: Mapping[str, Any]) -> bool:
        """True if this capability's ``jti`` is revoked, or its user, or a client in its chain, was revoked
        after it was issued."""
        iat = _dt(float(claims.get("iat", 0)))
        with self._db.serving() as s:
            if s.get(RevokedToken, str(claims.get("jti", ""))) is not None:
                return True
            hit = s.scalars(
                select(RevokedSubject.id)
                .where(RevokedSubject.sub == str(claims.get("sub", "")), RevokedSubject.revoked_before > iat)
                .limit(1)
            ).first()
            if hit is not None:
                return True
            clients = act_clients(claims)
            return bool(clients) and s.scalars(
                select(RevokedClient.id)
                .where(RevokedClient.client_id.in_(clients), RevokedClient.revoked_before > iat)
                .limit(1)
            ).first() is not None

    # -- writes -------------------------------------------------------------------
    def revoke(self, claims: Mapping[str, Any], by: str) -> list[str]:
        """Revoke a capability presented whole (RFC 7009) and its chained descendants; their ``jti``s."""
        return self._revoke_tree({str(claims["jti"]): _dt(int(claims["exp"]))}, by)

    def revoke_jti(self, jti: str, by: str) -> list[str] | None:
        """Revoke by id alone (an admin holding an audit record, not the token), with every capability
        chained from it. None if never issued."""
        with self._db.serving() as s:
            row = s.scalars(select(AuditEvent).where(AuditEvent.jti == jti)).first()
        if row is None or row.expires_at is None:
            return None
        return self._revoke_tree({jti: row.expires_at}, by)

    def _revoke_tree(self, roots: Mapping[str, datetime], by: str) -> list[str]:
        """One transaction: the roots and every live descendant, found through the audit trail's parent links.

        A chained exchange racing with this one re-checks its parent after committing its own audit row
        (:meth:`is_revoked`), so a child committed after this walk is refused there instead of released.
        """
        now = clock.now()
        with self._db.serving() as s:
            found = _with_descendants(s, roots, _dt(now))
            rows = [{"jti": j, "expires_at": exp, "revoked_at": _dt(now), "revoked_by": by[:100]}
                    for j, exp in found.items()]
            dialect = s.get_bind().dialect.name
            ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(RevokedToken)
            s.execute(ins.on_conflict_do_nothing(index_elements=["jti"]), rows)
            _bump(s)
        return list(found)

    def revoke_subject(self, sub: str, by: str) -> None:
        now = clock.now()
        with self._db.serving() as s:
            s.add(RevokedSubject(sub=sub, sub_sha256=sub_digest(sub), revoked_before=_dt(now), revoked_at=_dt(now),
                                 revoked_by=by[:100]))
            _bump(s)

    def revoke_client(self, client_id: str, by: str) -> None:
        now = clock.now()
        with self._db.serving() as s:
            s.add(RevokedClient(client_id=client_id, revoked_before=_dt(now), revoked_at=_dt(now),
                                revoked_by=by[:100]))
            _bump(s)

    # -- what a revocation would reach -------------------------------------------
    def count_live(self, *, jti: str | None = None, sub: str | None = None, client_id: str | None = None) -> int:
        """Live, not yet revoked capabilities a revocation would void, for an admin's confirmation.

        For a client: those it asked for, and everything chained from them (where it is further down the
        ``act`` chain). Capabilities already void by an earlier user or client revocation may be counted.
        """
        now = _dt(clock.now())
        live = (AuditEvent.decision == "granted", AuditEvent.expires_at > now, AuditEvent.jti.is_not(None))
        with self._db.serving() as s:
            revoked = select(RevokedToken.jti).where(RevokedToken.expires_at > now)
            if sub is not None:
                q = select(func.count()).where(*live, AuditEvent.sub == sub, AuditEvent.jti.not_in(revoked))
                return int(s.scalar(q) or 0)
            roots: list[str]
            if jti is not None:
                roots = list(s.scalars(select(AuditEvent.jti).where(*live, AuditEvent.jti == jti)))
            elif client_id is not None:
                roots = list(s.scalars(select(AuditEvent.jti).where(*live, AuditEvent.client_id == client_id)))
            else:
                raise ValueError("one of jti, sub, client_id")
            seen = set(_with_descendants(s, {j: now for j in roots if j is not None}, now))
            already = set(_chunked_in(s, seen))
            return len(seen - already)

    # -- the feed -----------------------------------------------------------------
    def feed(self, since: float | None) -> dict[str, Any]:
        """Entries revoked after ``since`` (all live ones when None), the version, and the time to poll from."""
        now = clock.now()
        after = _dt(since) if since is not None else _dt(0)
        window = _dt(now) - timedelta(seconds=SUBJECT_REVOCATION_WINDOW)
        with self._db.serving() as s:
            # Read first: entries committed after this read only make the feed newer than its version says.
            version = int(s.execute(select(RevocationState.version).where(RevocationState.id == 1)).scalar_one())
            jtis = s.execute(
                select(RevokedToken.jti, RevokedToken.expires_at)
                .where(RevokedToken.revoked_at > after, RevokedToken.expires_at > _dt(now))
                .order_by(RevokedToken.revoked_at)
            ).all()
            subjects = s.execute(
                select(RevokedSubject.sub_sha256, RevokedSubject.revoked_before)
                .where(RevokedSubject.revoked_at > after, RevokedSubject.revoked_at > window)
            ).all()
            clients = s.execute(
                select(RevokedClient.client_id, RevokedClient.revoked_before)
                .where(RevokedClient.revoked_at > after, RevokedClient.revoked_at > window)
            ).all()
        return {
            "version": version,
            "issued_at": now,
            "jtis": [{"jti": j, "exp": int(_ts(exp))} for j, exp in jtis],
            # Rounded up: a capability issued in the same second as the revocation is revoked too.
            "subjects": [{"sub_sha256": h, "revoked_before": math.ceil(_ts(before))} for h, before in subjects],
            "clients": [{"client_id": c, "revoked_before": math.ceil(_ts(before))} for c, before in clients],
        }


def _with_descendants(s: Session, roots: Mapping[str, datetime], now: datetime) -> dict[str, datetime]:
    """``roots`` and every live capability chained from them, however deep (``jti`` -> expiry), through the
    audit trail's parent links, asked a bounded IN list at a time."""
    found = dict(roots)
    frontier = list(roots)
    while frontier and len(found) < MAX_CASCADE:
        batch, frontier = frontier[:1000], frontier[1000:]
        children = s.execute(select(AuditEvent.jti, AuditEvent.expires_at).where(
            AuditEvent.parent_jti.in_(batch), AuditEvent.decision == "granted", AuditEvent.expires_at > now))
        for jti, exp in children:
            if jti is not None and exp is not None and jti not in found:
                found[jti] = exp
                frontier.append(jti)
    return found


def _chunked_in(s: Session, jtis: Iterable[str]) -> Iterable[str]:
    """The given ``jti``s that are already revoked, asked in bounded IN lists."""
    items = list(jtis)
    for i in range(0, len(items), 1000):
        yield from s.scalars(select(RevokedToken.jti).where(RevokedToken.jti.in_(items[i:i + 1000])))

