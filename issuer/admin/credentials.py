"""Admin keys: bearer credentials for the admin API, with a role.

A key reads ``iak_<key id>_<secret>``: the id finds the row with one indexed
lookup, the 256-bit secret is compared as an HMAC under the server pepper in
constant time (the client-secret scheme, for the same reasons), and only the
HMAC is stored. ``auditor`` keys read configuration and the audit trail;
``admin`` keys also change things.

A 256-bit secret cannot be guessed, but guessing must still be seen and
bounded: :class:`SignInGuard` (used by the admin API and the console sign-in)
logs every failed sign-in (the key id when the key is well formed, never the
key), counts it, and throttles failures per source address and per key id.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import clock
from ..client_secrets import generate_secret, hash_secret, verify_secret
from ..db import Database
from ..errors import AlreadyExists, ConfigurationError, RateLimited, UnknownObject
from ..metrics import Metrics
from ..models import AdminKey
from ..ratelimit import RateLimiter, parse_limits
from ..registry import ChangeRecorder
from ..validation import check_name

__all__ = ["FAILED_SIGN_INS_PER_ADDRESS", "FAILED_SIGN_INS_PER_KEY", "ROLES", "AdminIdentity", "SignInGuard",
           "authenticate", "create_key", "identity", "key_dict", "list_keys", "revoke_key"]

log = logging.getLogger(__name__)

ROLES = ("admin", "auditor")
_KEY = re.compile(r"^iak_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NO_HASH = "0" * 64
#: Failed sign-ins (admin API and console together) one source address, and one key id, may cost.
#: Only failures spend them; while either is spent every sign-in from that address, or with that
#: key id, is refused unchecked (429), the right key included, or the guessing would simply go on.
FAILED_SIGN_INS_PER_ADDRESS = parse_limits("failed admin-key sign-ins per address", "10/minute")[0]
FAILED_SIGN_INS_PER_KEY = parse_limits("failed admin-key sign-ins per key id", "10/minute")[0]


@dataclass(frozen=True)
class AdminIdentity:
    key_id: str
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"admin-key:{self.key_id} ({self.name})"

    @property
    def may_write(self) -> bool:
        return self.role == "admin"


def key_dict(row: AdminKey) -> dict[str, object]:
    return {"key_id": row.key_id, "name": row.name, "role": row.role, "created_by": row.created_by,
            "created_at": clock.iso(row.created_at), "revoked_at": clock.iso(row.revoked_at)}


def create_key(db: Database, pepper: bytes, *, name: str, role: str, created_by: str,
               changes: ChangeRecorder | None = None) -> tuple[dict[str, object], str]:
    """Returns the key's description and the key itself, which is shown once."""
    check_name("name", name)
    if role not in ROLES:
        raise ConfigurationError(f"role: choose from {list(ROLES)}")
    key_id, secret = secrets.token_hex(8), generate_secret()
    row = AdminKey(key_id=key_id, name=name, role=role, secret_hash=hash_secret(pepper, secret),
                   created_by=created_by[:200], created_at=datetime.fromtimestamp(clock.now(), UTC))
    try:
        with db.session() as s:
            s.add(row)
            s.flush()
            if changes:
                changes(s, "admin_key.create", key_id, None, key_dict(row))
    except IntegrityError:  # 64 random bits colliding: refuse rather than overwrite
        raise AlreadyExists("admin key id collision; try again") from None
    return key_dict(row), f"iak_{key_id}_{secret}"


def list_keys(db: Database) -> list[dict[str, object]]:
    with db.session() as s:
        return [key_dict(r) for r in s.scalars(select(AdminKey).order_by(AdminKey.created_at, AdminKey.key_id))]


def revoke_key(db: Database, key_id: str, *, changes: ChangeRecorder | None = None) -> dict[str, object]:
    with db.session() as s:
        row = s.get(AdminKey, key_id, with_for_update=True)
        if row is None:
            raise UnknownObject(f"no admin key {key_id!r}")
        if row.revoked_at is None:
            before = key_dict(row)
            row.revoked_at = datetime.fromtimestamp(clock.now(), UTC)
            if changes:
                changes(s, "admin_key.revoke", key_id, before, key_dict(row))
        return key_dict(row)


def authenticate(db: Database, pepper: bytes, presented: str) -> AdminIdentity | None:
    """The key's identity, or None. Malformed, unknown, revoked and wrong keys all cost one HMAC."""
    m = _KEY.match(presented)
    row = None
    if m:
        with db.session() as s:
            row = s.get(AdminKey, m.group(1))
    ok = verify_secret(pepper, m.group(2) if m else presented, row.secret_hash if row else _NO_HASH)
    if not ok or row is None or row.revoked_at is not None:
        return None
    return AdminIdentity(row.key_id, row.name, row.role)


def identity(db: Database, key_id: str) -> AdminIdentity | None:
    """The identity of a key that is still valid, found by its id alone.

    A console session holds only the key id and calls this on every request,
    so revoking the key (or changing its role) takes effect on the next click.
    """
    if not re.fullmatch(r"[0-9a-f]{16}", key_id):
        return None
    with db.session() as s:
        row = s.get(AdminKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    return AdminIdentity(row.key_id, row.name, row.role)


class SignInGuard:
    """Admin-key authentication with failures logged, counted and throttled.

    ``surface`` (``api`` or ``console``) labels the log line and the
    ``issuer_admin_auth_failures_total`` metric; the budgets are shared by both surfaces, and by
    every replica when the limiter uses Redis.
    """

    def __init__(self, limiter: RateLimiter, metrics: Metrics, surface: str) -> None:
        self._limiter = limiter
        self._metrics = metrics
        self._surface = surface

    def authenticate(self, db: Database, pepper: bytes, presented: str, source: str) -> AdminIdentity | None:
        """The key's identity, None for a wrong key; :class:`RateLimited` while its address or key id
        has failed too often (checked before the key, so a throttled guess learns nothing)."""
        m = _KEY.match(presented)
        key_id = m.group(1) if m else None
        budgets = [("admin-sign-in", "address", source)] + ([("admin-sign-in", "key", key_id)] if key_id else [])
        limits = {"address": (FAILED_SIGN_INS_PER_ADDRESS,), "key": (FAILED_SIGN_INS_PER_KEY,)}
        for key in budgets:  # this process's memory of spent budgets (RateLimiter.fail): no round trip
            wait = self._limiter.known_spent(*key)
            if wait is not None:
                self._metrics.admin_auth_failures.labels(self._surface, "rate_limited").inc()
                log.warning("admin key sign-in refused unchecked (%s): too many failures for this %s; "
                            "address %s, key id %s", self._surface, key[1], source, key_id or "-")
                raise RateLimited("too many failed sign-ins; retry later", retry_after=wait)
        who = authenticate(db, pepper, presented)
        if who is None:
            self._metrics.admin_auth_failures.labels(self._surface, "invalid_key").inc()
            # The key id only when the key is well formed (it is not secret; the rest of the key is).
            log.warning("admin key sign-in failed (%s): address %s, key id %s", self._surface, source,
                        key_id or "- (malformed key)")
            for key in budgets:
                self._limiter.fail(limits[key[1]], *key)
        return who
