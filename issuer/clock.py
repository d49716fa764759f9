"""The one clock of the issuer.

Everything that reads time (token lifetimes, JWKS cache ages, policy refresh)
goes through :func:`now`, which reads :func:`time.time` at call time, so a test
that freezes time with freezegun freezes the whole issuer.
"""

from __future__ import annotations

import time

__all__ = ["monotonic", "now"]


def now() -> float:
    """Seconds since the epoch, as a float."""
    return time.time()


def monotonic() -> float:
    """A clock for intervals (cache ages, cooldowns).

    It is wall time on purpose: freezegun does not freeze ``time.monotonic``
    in every version, and cache expiry must follow the frozen clock in tests.
    """
    return time.time()
