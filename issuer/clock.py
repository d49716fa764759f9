"""The one clock of the issuer.

Everything that reads time (token lifetimes, JWKS cache ages, policy refresh)
goes through :func:`now`, which reads :func:`time.time` at call time, so a test
that freezes time with freezegun freezes the whole issuer.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["iso", "monotonic", "now", "parse_iso"]


def now() -> float:
    """Seconds since the epoch, as a float."""
    return time.time()


def iso(when: datetime | float | None) -> str | None:
    """ISO 8601 in UTC to the second (``2026-11-25T10:00:00Z``). A naive datetime is UTC: SQLite
    returns stored times without their zone."""
    if when is None:
        return None
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """The inverse, for times people type: ISO 8601, ``Z`` allowed, no zone meaning UTC.
    Raises ValueError."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def monotonic() -> float:
    """A clock for intervals (cache ages, cooldowns).

    It is wall time on purpose: freezegun does not freeze ``time.monotonic``
    in every version, and cache expiry must follow the frozen clock in tests.
    """
    return time.time()
