"""The verified-token cache: a hit skips the signature check, never a check that depends on the request,
the time, the registration or the provider's current keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory

from issuer.errors import InvalidGrant
from issuer.identity.jwks import JwksCache
from issuer.identity.types import TrustedIdp, VerifiedSubject
from issuer.identity.verify import VerifiedTokenCache, peek_issuer, verify_token

from .conftest import AUDIENCE, ISSUER, FakeIdp, SigningKey, claims, sign

pytestmark = pytest.mark.usefixtures("frozen")


class CountingKeys:
    """The JWKS cache, counting how often a signature had to be checked (a key fetched for decode)."""

    def __init__(self, inner: JwksCache) -> None:
        self.inner = inner
        self.calls = 0

    def key_for(self, idp: TrustedIdp, kid: str | None, alg: str) -> Any:
        self.calls += 1
        return self.inner.key_for(idp, kid, alg)


def verify(token: str, keys: Any, idp: TrustedIdp, vcache: VerifiedTokenCache, **kw: Any) -> VerifiedSubject:
    kw.setdefault("audience", AUDIENCE)
    kw.setdefault("leeway", 0)
    return verify_token(token, idps_by_issuer={idp.issuer: idp}, keys=keys, cache=vcache, **kw)


@pytest.fixture
def vcache() -> VerifiedTokenCache:
    return VerifiedTokenCache(maxsize=3)


def test_a_token_seen_before_gives_the_same_subject_without_a_signature_check(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, vcache: VerifiedTokenCache, monkeypatch: Any
) -> None:
    token = sign(ec_key, claims())
    first = verify(token, cache, idp, vcache)
    from jwt.algorithms import ECAlgorithm

    def no_check(*a: Any, **k: Any) -> None:
        raise AssertionError("signature checked again")

    monkeypatch.setattr(ECAlgorithm, "verify", no_check)
    assert verify(token, cache, idp, vcache) == first
    vcache.clear()
    with pytest.raises(AssertionError, match="checked again"):  # the patch does reach a signature check
        verify(token, cache, idp, vcache)


def test_a_cache_entry_holds_one_object_for_the_garbage_collector(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, vcache: VerifiedTokenCache
) -> None:
    """Subjects are rebuilt per use, not kept: a full cache must not be tens of thousands of objects that
    every full collection walks while every request thread waits."""
    import gc

    token = sign(ec_key, claims(groups=["eng", "oncall"], act={"sub": "agent"}))
    verify(token, cache, idp, vcache)
    entry = vcache._entries[token]
    shared = (entry.idp, entry.key, type(entry))  # the registration, the key object and the class: one each
    assert [o for o in gc.get_referents(entry) if gc.is_tracked(o) and not any(o is s for s in shared)] == []


def test_a_hit_is_still_refused_for_another_audience(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, vcache: VerifiedTokenCache
) -> None:
    """Token passthrough: a token cached for client A must not become good for client B."""
    token = sign(ec_key, claims())
    verify(token, cache, idp, vcache)
    with pytest.raises(InvalidGrant, match="audience"):
        verify(token, cache, idp, vcache, audience="client-b")


def test_a_hit_expires_with_its_token(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, vcache: VerifiedTokenCache, frozen: FrozenDateTimeFactory
) -> None:
    token = sign(ec_key, claims())  # exp = now + 300
    verify(token, cache, idp, vcache)
    frozen.tick(timedelta(seconds=301))
    with pytest.raises(InvalidGrant, match="expired"):
        verify(token, cache, idp, vcache)
    assert len(vcache) == 0


def test_a_hit_is_refused_before_its_nbf(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, vcache: VerifiedTokenCache, frozen: FrozenDateTimeFactory
) -> None:
    now = int(frozen().timestamp())
    token = sign(ec_key, claims(nbf=now + 30, iat=now))
    verify(token, cache, idp, vcache, leeway=60)  # within the leeway: accepted and cached
    with pytest.raises(InvalidGrant, match="not yet valid"):
        verify(token, cache, idp, vcache, leeway=0)


def test_a_hit_checks_the_required_type(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, vcache: VerifiedTokenCache
) -> None:
    token = sign(ec_key, claims(), typ="JWT")
    verify(token, cache, idp, vcache)
    with pytest.raises(InvalidGrant, match="wrong token type"):
        verify(token, cache, idp, vcache, required_typ="at+jwt")


def test_a_changed_registration_verifies_again(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, vcache: VerifiedTokenCache
) -> None:
    """An admin disables the provider or drops an algorithm: cached verifications must not outlive that."""
    token = sign(ec_key, claims())
    verify(token, cache, idp, vcache)
    with pytest.raises(InvalidGrant, match="issuer is disabled"):
        verify(token, cache, replace(idp, enabled=False), vcache)
    with pytest.raises(InvalidGrant, match="algorithm not allowed for this issuer"):
        verify(token, cache, replace(idp, algorithms=("RS256",)), vcache)


def test_a_key_removed_by_the_provider_ends_the_hit(
    cache: JwksCache, fake_idp: FakeIdp, idp: TrustedIdp, ec_key: SigningKey, rsa_key: SigningKey,
    vcache: VerifiedTokenCache, frozen: FrozenDateTimeFactory,
) -> None:
    """The provider pulls a compromised key: once its new key set is fetched, tokens of that key fail."""
    token = sign(ec_key, claims(), kid=ec_key.kid)
    verify(token, cache, idp, vcache)
    fake_idp.keys = [rsa_key.jwk()]
    frozen.tick(timedelta(seconds=cache_max_age(cache) + 1))
    with pytest.raises(InvalidGrant):
        verify(token, cache, idp, vcache)


def cache_max_age(cache: JwksCache) -> int:
    return int(getattr(cache, "_max_age", 300))


def test_a_forged_token_never_hits(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, attacker_key: SigningKey, vcache: VerifiedTokenCache
) -> None:
    """Same claims, another signature: the cache is keyed by the whole token, so it is verified and refused."""
    good = sign(ec_key, claims())
    verify(good, cache, idp, vcache)
    header, payload, _ = good.split(".")
    forged = ".".join([header, payload, sign(attacker_key, claims(), kid=ec_key.kid).split(".")[2]])
    with pytest.raises(InvalidGrant, match="bad signature"):
        verify(forged, cache, idp, vcache)


def test_the_cache_is_bounded(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey,
                              vcache: VerifiedTokenCache) -> None:
    for i in range(10):
        verify(sign(ec_key, claims(sub=f"user-{i}")), cache, idp, vcache)
    assert len(vcache) == 3


def test_refusals_are_not_cached(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey,
                                 vcache: VerifiedTokenCache) -> None:
    token = sign(ec_key, claims())
    with pytest.raises(InvalidGrant):
        verify(token, cache, idp, vcache, audience="someone-else")
    assert len(vcache) == 0


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "x" * 20_000, "a.!!.c", "a.bm90IGpzb24.c"])
def test_peek_issuer_never_raises(token: str) -> None:
    assert peek_issuer(token) is None


def test_peek_issuer_reads_iss(ec_key: SigningKey) -> None:
    assert peek_issuer(sign(ec_key, claims())) == ISSUER
