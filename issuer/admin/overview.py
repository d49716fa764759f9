"""The state of one deployment at a glance: readiness, keys, recent decisions.

Behind ``issuer status``, ``GET /admin/v1/overview`` and the console's
Overview page. Everything is read from the shared database, key folder and
Redis, never from one process's memory, so any replica gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from .. import clock
from ..db import Database
from ..errors import ConfigurationError
from ..keys import JWKS_MAX_AGE, KeyStore
from ..models import AuditEvent
from ..settings import Settings

__all__ = ["DECISIONS", "VERIFY_INLINE_UP_TO", "Window", "decision_counts", "readiness", "rotation_state",
           "trail_size"]

DECISIONS = ("granted", "denied")
#: The audit reasons of a request refused by a rate limit: a budget (the user's, the client's, failed
#: authentications), or the budget of refusals after the policy decision (issuer/exchange.py).
RATE_LIMITED = ("rate_limited", "refusals_rate_limited")
#: Verification reads every record and checks its tag (about 45 µs a record on PostgreSQL: 72,000 records
#: made every look at the overview cost 3 s); beyond this many records the overview leaves it to
#: ``audit verify`` / ``GET /admin/v1/audit/verify``, so the overview costs a fixed handful of indexed
#: statements (about 0.2 s of verification at most) however long the trail grows.
VERIFY_INLINE_UP_TO = 5_000


@dataclass(frozen=True)
class Window:
    """``buckets`` equal slices of ``seconds`` ending now: a chart's resolution, not a query per second."""

    seconds: int = 3600
    buckets: int = 12


def readiness(db: Database, keys: KeyStore, settings: Settings) -> dict[str, str]:
    """The checks of ``/readyz``, made from here so the answer does not depend on which replica served it."""
    checks: dict[str, str] = {}
    try:
        with db.session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError:
        checks["database"] = "unavailable"
    try:
        keys.signing_key()
        checks["keys"] = "ok"
    except ConfigurationError:
        checks["keys"] = "unavailable"
    checks["redis"] = _redis(settings.redis_url, settings.redis_timeout) if settings.redis_url else "not configured"
    return checks


def _redis(url: str, timeout: float) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return "ok" if client.ping() else "unavailable"
    except redis.RedisError:
        return "unavailable"
    finally:
        client.close()


def rotation_state(keys: KeyStore) -> dict[str, Any]:
    """When the pre-published next key may start signing without breaking verifiers' cached JWKS."""
    infos = keys.infos()
    nxt = next((k for k in infos if k.state == "next"), None)
    active = next((k for k in infos if k.state == "active"), None)
    ready_at = nxt.created_at + JWKS_MAX_AGE if nxt else None
    return {"active": active.kid if active else None, "next": nxt.kid if nxt else None,
            "active_since": clock.iso(active.activated_at or active.created_at) if active else None,
            "rotation_ready_at": clock.iso(ready_at),
            "rotation_ready": ready_at is not None and clock.now() >= ready_at}


def decision_counts(db: Database, window: Window) -> dict[str, Any]:
    """Exchanges per decision per slice of the window, and how many a rate limit refused.

    One grouped count per slice on the indexed ``time`` column, and the rate-limited count on the
    ``(reason, time)`` index (migration 0009), which reads only the rate-limited records of the
    window: the cost is bounded by the window's traffic, never by the length of the trail.
    """
    end = int(clock.now()) + 1  # the current second included
    step = max(1, window.seconds // window.buckets)
    start = end - step * window.buckets
    buckets: list[dict[str, Any]] = []
    with db.session() as s:
        for i in range(window.buckets):
            lo = datetime.fromtimestamp(start + i * step, UTC)
            hi = datetime.fromtimestamp(start + (i + 1) * step, UTC)
            rows = s.execute(select(AuditEvent.decision, func.count()).where(AuditEvent.time >= lo)
                             .where(AuditEvent.time < hi).group_by(AuditEvent.decision))
            counts = dict.fromkeys(DECISIONS, 0)
            for decision, n in rows:
                if decision in counts:
                    counts[decision] += int(n)
            buckets.append({"start": clock.iso(lo), "end": clock.iso(hi), **counts})
        limited = s.execute(select(func.count()).select_from(AuditEvent)
                            .where(AuditEvent.time >= datetime.fromtimestamp(start, UTC))
                            .where(AuditEvent.reason.in_(RATE_LIMITED))).scalar_one()
    totals = {d: sum(int(b[d]) for b in buckets) for d in DECISIONS}
    return {"since": clock.iso(start), "until": clock.iso(end), "bucket_seconds": step, "buckets": buckets,
            "totals": totals, "rate_limited": int(limited)}


def trail_size(db: Database) -> int:
    """The newest audit record's id: how many records verification would read, from the primary key alone."""
    with db.session() as s:
        return int(s.execute(select(func.coalesce(func.max(AuditEvent.id), 0))).scalar_one())
