"""Is a host a loopback address? The one rule behind every "http only on loopback" check.

Standard library only: the issuer, the verifier SDK and the exchange client SDK share it.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str | None) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1; never a name that merely resolves there (no DNS here)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
