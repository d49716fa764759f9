"""The gateway's own audit channel: one JSON line per refusal the issuer cannot see.

Decisions on calls are audited by the issuer (its tamper-evident trail,
with the arguments). Some refusals never reach the issuer: a session used
with another user's token, a malformed or hostile request, a missing
token. The gateway holds no database credentials (it is only a client of
the issuer), so it writes these to the ``issuer.gateway.audit`` logger, one
JSON object per line at WARNING, for the log pipeline to ship to the SIEM.
Never a token, a secret or a full session id: users are the issuer's
namespaced subjects, sessions a digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from .. import clock

__all__ = ["AUDIT_LOGGER", "audit", "digest"]

AUDIT_LOGGER = "issuer.gateway.audit"
_log = logging.getLogger(AUDIT_LOGGER)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def audit(event: str, **fields: Any) -> None:
    record = {"event": event, "time": clock.iso(clock.now()), **fields}
    _log.warning(json.dumps(record, separators=(",", ":"), default=str, ensure_ascii=True))
