"""Discovery and the JWKS cache: refetch rules, outages, pinned keys, the URL policy."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

import pytest
from freezegun import freeze_time

from issuer.sdk.verifier import CapabilityVerifier, InvalidToken, IssuerUnavailable
from tests.conftest import free_port
from tests.sdk.verifier.conftest import AUDIENCE, FakeIssuer

START = "2030-01-01T00:00:00Z"


def test_discovery_then_jwks_once(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    for _ in range(5):
        verifier.verify(fake.token())
    assert fake.hits["/.well-known/oauth-authorization-server"] == 1
    assert fake.hits["/jwks.json"] == 1


def test_unknown_kids_cause_one_refetch_per_cooldown(
    fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]
) -> None:
    verifier = make_verifier(refetch_cooldown=30)
    with freeze_time(START) as frozen:
        verifier.verify(fake.token())
        assert fake.hits["/jwks.json"] == 1
        frozen.tick(31)
        for _ in range(50):
            token = fake.token(headers={"kid": secrets.token_hex(8)})
            with pytest.raises(InvalidToken, match="unknown signing key"):
                verifier.verify(token)
        assert fake.hits["/jwks.json"] == 2  # the first unknown kid refetched; 49 others were rate-limited
        frozen.tick(31)
        with pytest.raises(InvalidToken):
            verifier.verify(fake.token(headers={"kid": "another"}))
        assert fake.hits["/jwks.json"] == 3


def test_unknown_kid_refetch_is_single_flight(
    fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]
) -> None:
    """50 threads with random kids at once: one fetch, everyone refused, nobody crashes."""
    verifier = make_verifier(refetch_cooldown=30)
    tokens = [fake.token(headers={"kid": secrets.token_hex(8)}) for _ in range(50)]
    results: list[str] = []
    barrier = threading.Barrier(len(tokens))

    def attempt(token: str) -> None:
        barrier.wait()
        try:
            verifier.verify(token)
            results.append("ok")
        except InvalidToken as e:
            results.append(e.description)

    threads = [threading.Thread(target=attempt, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["unknown signing key"] * 50
    assert fake.hits["/jwks.json"] == 1


def test_rotated_key_is_fetched(fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]) -> None:
    verifier = make_verifier(refetch_cooldown=30)
    with freeze_time(START) as frozen:
        verifier.verify(fake.token())
        new_kid = fake.add_key("EdDSA")
        frozen.tick(31)
        assert verifier.verify(fake.token(kid=new_kid)).sub == "alice"
        assert fake.hits["/jwks.json"] == 2


def test_issuer_down_after_first_fetch_keeps_serving_keys(
    fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]
) -> None:
    verifier = make_verifier(jwks_max_age=300, refetch_cooldown=30)
    with freeze_time(START) as frozen:
        verifier.verify(fake.token())
        fake.down = True
        frozen.tick(3600)  # the set is long stale; the refresh fails; the last good set is used
        assert verifier.verify(fake.token()).sub == "alice"
        assert fake.hits["/jwks.json"] == 2
        assert verifier.verify(fake.token(kid=fake.ed_kid)).sub == "alice"  # within the cooldown: no fetch
        assert fake.hits["/jwks.json"] == 2
        with pytest.raises(InvalidToken, match="unknown signing key"):
            verifier.verify(fake.token(headers={"kid": "unknown"}))
        frozen.tick(31)
        fake.down = False
        assert verifier.verify(fake.token()).sub == "alice"  # stale again: refreshed now
        assert fake.hits["/jwks.json"] == 3


def test_stale_set_drops_a_retired_key(fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]) -> None:
    verifier = make_verifier(jwks_max_age=300)
    with freeze_time(START) as frozen:
        token = fake.token(kid=fake.ed_kid, exp=int(fake.claims()["iat"]) + 900)
        verifier.verify(token)
        del fake.keys[fake.ed_kid]  # the issuer stops publishing the key
        frozen.tick(301)
        with pytest.raises(InvalidToken, match="unknown signing key"):
            verifier.verify(token)  # the stale set was refreshed, and the key is gone
        assert fake.hits["/jwks.json"] == 2


def test_issuer_never_reachable(make_verifier: Callable[..., CapabilityVerifier], fake: FakeIssuer) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    verifier = make_verifier(issuer=url, refetch_cooldown=30, timeout=0.5)
    token = fake.token(iss=url)
    with pytest.raises(IssuerUnavailable) as info:
        verifier.verify(token)
    err = info.value
    assert err.status_code == 503
    assert err.www_authenticate() == (
        'Bearer error="temporarily_unavailable", error_description="the issuer\'s signing keys could not be fetched"')
    assert err.headers()["Retry-After"] == "30"
    assert token not in str(err)


def test_issuer_down_at_start_is_retried_after_the_cooldown(
    fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]
) -> None:
    verifier = make_verifier(refetch_cooldown=30)
    with freeze_time(START) as frozen:
        fake.down = True
        for _ in range(3):
            with pytest.raises(IssuerUnavailable):
                verifier.verify(fake.token())
        assert fake.hits["/.well-known/oauth-authorization-server"] == 1  # no hammering
        fake.down = False
        frozen.tick(31)
        assert verifier.verify(fake.token()).sub == "alice"


def test_pinned_jwks_never_fetches(fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]) -> None:
    verifier = make_verifier(jwks=fake.jwks())
    assert verifier.verify(fake.token()).sub == "alice"
    assert verifier.verify(fake.token(kid=fake.ed_kid)).sub == "alice"
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier.verify(fake.token(headers={"kid": "unknown"}))
    assert sum(fake.hits.values()) == 0


def test_pinned_jwks_works_offline(fake: FakeIssuer) -> None:
    offline = "https://issuer.invalid"
    with CapabilityVerifier(issuer=offline, audience=AUDIENCE, jwks=fake.jwks()) as verifier:
        assert verifier.verify(fake.token(iss=offline)).issuer == offline


def test_pinned_jwks_must_hold_a_usable_key(fake: FakeIssuer) -> None:
    with pytest.raises(ValueError, match="jwks"):
        CapabilityVerifier(issuer=fake.url, audience=AUDIENCE, jwks={"keys": []}, allow_insecure_loopback=True)
    with pytest.raises(ValueError, match="jwks"):
        CapabilityVerifier(issuer=fake.url, audience=AUDIENCE, jwks={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
                           allow_insecure_loopback=True)


@pytest.mark.parametrize("mutate", [
    lambda j: j.update(use="enc"),
    lambda j: j.update(alg="ES384"),
    lambda j: j.update(key_ops=["encrypt"]),
    lambda j: j.pop("kid"),
    lambda j: j.update(crv="P-384"),
    lambda j: j.update(x="AAAA"),
])
def test_unusable_jwks_members_are_skipped(fake: FakeIssuer, mutate: Callable[[dict[str, Any]], Any]) -> None:
    jwk = fake.public_jwk(fake.ec_kid)
    mutate(jwk)
    keys = {"keys": [jwk, fake.public_jwk(fake.ed_kid)]}
    verifier = CapabilityVerifier(issuer=fake.url, audience=AUDIENCE, jwks=keys, allow_insecure_loopback=True)
    with pytest.raises(InvalidToken):
        verifier.verify(fake.token())
    assert verifier.verify(fake.token(kid=fake.ed_kid)).sub == "alice"


def test_two_keys_under_one_kid_are_both_refused(fake: FakeIssuer) -> None:
    other = {**fake.public_jwk(fake.add_key("ES256")), "kid": fake.ec_kid}
    keys = {"keys": [fake.public_jwk(fake.ec_kid), other, fake.public_jwk(fake.ed_kid)]}
    verifier = CapabilityVerifier(issuer=fake.url, audience=AUDIENCE, jwks=keys, allow_insecure_loopback=True)
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier.verify(fake.token())


def test_private_members_are_ignored(fake: FakeIssuer) -> None:
    """A set that (wrongly) publishes ``d`` still yields a verification key built from public members only."""
    jwk = fake.public_jwk(fake.ec_kid, d="AAAA")
    verifier = CapabilityVerifier(issuer=fake.url, audience=AUDIENCE, jwks={"keys": [jwk]},
                                  allow_insecure_loopback=True)
    assert verifier.verify(fake.token()).sub == "alice"


# --------------------------------------------------------------------------- discovery


def test_metadata_issuer_must_match_exactly(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    fake.metadata_overrides["issuer"] = fake.url + "/"
    with pytest.raises(IssuerUnavailable):
        verifier.verify(fake.token())
    assert fake.hits["/jwks.json"] == 0


@pytest.mark.parametrize("jwks_uri", ["http://keys.example/jwks.json", "ftp://x/jwks", "/jwks.json", 5, None])
def test_metadata_jwks_uri_policy(fake: FakeIssuer, verifier: CapabilityVerifier, jwks_uri: Any) -> None:
    fake.metadata_overrides["jwks_uri"] = jwks_uri
    with pytest.raises(IssuerUnavailable):
        verifier.verify(fake.token())


def test_redirects_are_not_followed(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    fake.metadata_overrides["jwks_uri"] = fake.url + "/redirect"
    with pytest.raises(IssuerUnavailable):
        verifier.verify(fake.token())
    assert fake.hits["/redirect"] == 1 and fake.hits["/jwks.json"] == 0


def test_metadata_is_kept_when_a_refresh_fails(
    fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]
) -> None:
    verifier = make_verifier(jwks_max_age=300, refetch_cooldown=30)
    with freeze_time(START) as frozen:
        verifier.verify(fake.token())
        fake.metadata_overrides["issuer"] = "https://somebody-else.example"  # a bad document now
        new_kid = fake.add_key("ES256")
        frozen.tick(301)
        assert verifier.verify(fake.token(kid=new_kid)).sub == "alice"  # old jwks_uri, fresh keys


@pytest.mark.parametrize(("issuer", "loopback"), [
    ("http://127.0.0.1:8000", False), ("http://issuer.example", True), ("ftp://issuer.example", True),
    ("https://user:pw@issuer.example", False), ("https://issuer.example#x", False), ("", False),
])
def test_issuer_url_policy(issuer: str, loopback: bool) -> None:
    with pytest.raises(ValueError):
        CapabilityVerifier(issuer=issuer, audience=AUDIENCE, allow_insecure_loopback=loopback)


def test_http_is_allowed_on_loopback_with_the_opt_in() -> None:
    for host in ("127.0.0.1", "localhost", "[::1]"):
        CapabilityVerifier(issuer=f"http://{host}:8000", audience=AUDIENCE, allow_insecure_loopback=True).close()


@pytest.mark.parametrize("kw", [
    {"audience": ""}, {"jwks_max_age": 0}, {"refetch_cooldown": -1}, {"leeway": -1}, {"leeway": 3600},
    {"timeout": 0}, {"revocation_poll_interval": 0}, {"replay_cache": object()},
])
def test_bad_configuration_refused(kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"issuer": "https://issuer.example", "audience": AUDIENCE, **kw}
    with pytest.raises((ValueError, TypeError)):
        CapabilityVerifier(**args)
