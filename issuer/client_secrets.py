"""Client secrets: generated with 256 random bits, stored as HMAC-SHA-256 under a server pepper.

A slow password hash (bcrypt, argon2) protects low-entropy human passwords;
it would cap the token endpoint at a few dozen exchanges a second per core.
A 256-bit random secret cannot be guessed offline, so a keyed fast hash is
enough, and the pepper (kept in the key folder, not the database) means a
stolen database alone does not even allow testing a guess.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["MIN_IMPORTED_SECRET_LENGTH", "generate_secret", "hash_secret", "verify_secret"]

#: Admins may import an existing secret (migration from another server); it must not be trivially short.
MIN_IMPORTED_SECRET_LENGTH = 20


def generate_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def verify_secret(pepper: bytes, secret: str, stored_hash: str | None) -> bool:
    """Constant-time comparison; a client without a secret never matches."""
    if not stored_hash:
        hmac.compare_digest("0" * 64, hash_secret(pepper, secret))
        return False
    return hmac.compare_digest(stored_hash, hash_secret(pepper, secret))
