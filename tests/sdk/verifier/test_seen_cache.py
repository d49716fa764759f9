"""The verifier's cache of capabilities seen before: a repeat call skips the signature check, never
the checks that time, key rotation or revocation can change (revocation of a cached capability:
test_revocation.py::test_revoked_jti)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from freezegun import freeze_time

from issuer.sdk.verifier import CapabilityVerifier, ExpiredToken, InvalidToken
from issuer.sdk.verifier import _verifier as verifier_module
from tests.sdk.verifier.conftest import FakeIssuer

Make = Callable[..., CapabilityVerifier]
START = "2030-01-01T00:00:00Z"


def _count_signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = verifier_module._signature_valid

    def counting(*a: Any) -> bool:
        calls[0] += 1
        return real(*a)

    monkeypatch.setattr(verifier_module, "_signature_valid", counting)
    return calls


def test_a_capability_seen_before_is_not_verified_again(fake: FakeIssuer, verifier: CapabilityVerifier,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_signature_checks(monkeypatch)
    token = fake.token()
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    assert calls[0] == 1


def test_a_forged_variant_of_a_seen_token_is_verified_and_refused(fake: FakeIssuer,
                                                                 verifier: CapabilityVerifier) -> None:
    """The cache is keyed by the whole text: another signature on the same claims is a new token."""
    token = fake.token()
    verifier.verify(token)
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{'A' * len(sig)}"
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(forged)


def test_a_seen_capability_expires(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(leeway=0)
    with freeze_time(START) as frozen:
        token = fake.token()
        verifier.verify(token)
        frozen.tick(3600)
        with pytest.raises(ExpiredToken):
            verifier.verify(token)
        assert verifier._seen is not None and len(verifier._seen) == 0


def test_a_key_withdrawn_by_the_issuer_ends_the_reuse(fake: FakeIssuer, make_verifier: Make) -> None:
    """The issuer withdraws a key (compromise): once the key set is refetched, its tokens fail even if seen."""
    verifier = make_verifier(jwks_max_age=60, refetch_cooldown=0)
    with freeze_time(START) as frozen:
        token = fake.token(kid=fake.ed_kid)
        verifier.verify(token)
        del fake.keys[fake.ed_kid]
        frozen.tick(61)
        with pytest.raises(InvalidToken):
            verifier.verify(token)


def test_cache_size_zero_verifies_every_time(fake: FakeIssuer, make_verifier: Make,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_signature_checks(monkeypatch)
    verifier = make_verifier(cache_size=0)
    token = fake.token()
    verifier.verify(token)
    verifier.verify(token)
    assert calls[0] == 2


def test_the_cache_is_bounded(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(cache_size=2)
    for _ in range(5):
        verifier.verify(fake.token())
    assert verifier._seen is not None and len(verifier._seen) == 2


def test_negative_cache_size_is_refused(fake: FakeIssuer) -> None:
    with pytest.raises(ValueError, match="cache_size"):
        CapabilityVerifier(issuer=fake.url, audience="https://x.example", allow_insecure_loopback=True,
                           cache_size=-1)
