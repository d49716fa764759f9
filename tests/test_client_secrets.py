"""Client secrets: 256 random bits, stored as HMAC-SHA-256 under the server's pepper."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from issuer.client_secrets import MIN_IMPORTED_SECRET_LENGTH, generate_secret, hash_secret, verify_secret

PEPPER = bytes.fromhex("11" * 32)
OTHER_PEPPER = bytes.fromhex("22" * 32)


def test_generated_secrets_have_256_random_bits() -> None:
    seen = {generate_secret() for _ in range(200)}
    assert len(seen) == 200
    for secret in seen:
        assert len(secret) >= 43
        assert re.fullmatch(r"[A-Za-z0-9_-]+", secret)  # safe in a header, a form and a shell
        assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) == 32


def test_hash_is_hmac_sha256_under_the_pepper() -> None:
    secret = "s3cret-value-of-a-client"
    digest = hash_secret(PEPPER, secret)
    assert digest == hmac.new(PEPPER, secret.encode(), hashlib.sha256).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_secret(PEPPER, secret)  # deterministic: it can be looked up and compared
    assert digest != hashlib.sha256(secret.encode()).hexdigest()  # not an unkeyed hash
    assert digest != hashlib.sha256(PEPPER + secret.encode()).hexdigest()
    assert secret not in digest


def test_hash_is_keyed() -> None:
    secret = generate_secret()
    assert hash_secret(PEPPER, secret) != hash_secret(OTHER_PEPPER, secret)
    assert hash_secret(PEPPER, secret) != hash_secret(PEPPER, secret + "x")


def test_verify_accepts_exactly_the_secret() -> None:
    secret = generate_secret()
    stored = hash_secret(PEPPER, secret)
    assert verify_secret(PEPPER, secret, stored) is True
    for wrong in (secret[:-1], secret + "A", secret.upper() if secret.upper() != secret else secret.lower(),
                  " " + secret, "", stored):
        assert verify_secret(PEPPER, wrong, stored) is False, wrong


def test_verify_needs_the_same_pepper() -> None:
    secret = generate_secret()
    assert verify_secret(OTHER_PEPPER, secret, hash_secret(PEPPER, secret)) is False


def test_verify_handles_non_ascii_secrets() -> None:
    secret = "p\u00e4ssw\u00f6rt-\u263a-" + "x" * 20
    stored = hash_secret(PEPPER, secret)
    assert verify_secret(PEPPER, secret, stored) is True
    assert verify_secret(PEPPER, secret.replace("\u00e4", "a"), stored) is False


@pytest.mark.parametrize("stored", [None, ""])
@pytest.mark.parametrize("secret", ["", "anything", generate_secret(), hash_secret(PEPPER, "")])
def test_a_client_without_a_stored_hash_never_verifies(stored: str | None, secret: str) -> None:
    assert verify_secret(PEPPER, secret, stored) is False
    assert verify_secret(b"", secret, stored) is False


def test_imported_secrets_have_a_floor() -> None:
    assert MIN_IMPORTED_SECRET_LENGTH >= 20
