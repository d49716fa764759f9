"""Admin keys: bearer credentials for the admin API, with a role.

A key reads ``iak_<key id>_<secret>``: the id finds the row with one indexed
lookup, the 256-bit secret is compared as an HMAC under the server pepper in
constant time (the client-secret scheme, for the same reasons), and only the
HMAC is stored. ``auditor`` keys read configuration and the audit trail;
``admin`` keys also change things.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import clock
from ..client_secrets import generate_secret, hash_secret, verify_secret
from ..db import Database
from ..errors import AlreadyExists, ConfigurationError, UnknownObject
from ..models import AdminKey
from ..registry import ChangeRecorder
from ..validation import check_name

__all__ = ["ROLES", "AdminIdentity", "authenticate", "create_key", "identity", "key_dict", "list_keys", "revoke_key"]

ROLES = ("admin", "auditor")
_KEY = re.compile(r"^iak_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NO_HASH = "0" * 64


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
