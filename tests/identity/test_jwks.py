"""JwksCache: where keys may come from, how long they are trusted, and how hard we hit the provider."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from freezegun.api import FrozenDateTimeFactory

from issuer.errors import ConfigurationError, InvalidGrant, TemporarilyUnavailable
from issuer.identity.jwks import MAX_DOCUMENT_BYTES, JwksCache, check_fetch_url
from issuer.identity.types import TrustedIdp
from issuer.identity.verify import verify_token

from .conftest import AUDIENCE, FakeIdp, LoopbackServer, SigningKey, claims, sign

# --------------------------------------------------------------------------- URL policy


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com/jwks",
        "https://idp.example.com:8443/.well-known/jwks.json",
        "https://127.0.0.1/jwks",
    ],
)
def test_https_urls_accepted(url: str) -> None:
    check_fetch_url(url, False)
    check_fetch_url(url, True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/jwks",
        "http://127.9.9.9/jwks",
        "http://localhost/jwks",
        "http://[::1]:9000/jwks",
    ],
)
def test_http_loopback_refused_unless_allowed(url: str) -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_loopback"):
        check_fetch_url(url, False)
    check_fetch_url(url, True)


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example.com/jwks",
        "http://10.0.0.1/jwks",
        "http://localhost.evil.example/jwks",
        "http://127.0.0.1.nip.io/jwks",
        "http://0x7f000001/jwks",
        "ftp://idp.example.com/jwks",
        "file:///etc/passwd",
        "https:///jwks",
        "https://idp.example.com/jw ks",
        "https://idp.example.com/jwks#frag",
        "https://idp.example.com:99999/jwks",
        "",
    ],
)
def test_non_https_non_loopback_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        check_fetch_url(url, True)


def test_credentials_in_url_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_fetch_url("https://admin:hunter2@idp.example.com/jwks", False)
    assert "hunter2" not in str(info.value)


def test_policy_applies_before_every_fetch(fake_idp: FakeIdp, idp: TrustedIdp, ec_key: SigningKey) -> None:
    cache = JwksCache(transport=fake_idp.transport, allow_insecure_loopback=True)
    with pytest.raises(ConfigurationError):
        cache.key_for(replace(idp, jwks_uri="http://idp.example.com/jwks"), ec_key.kid, "ES256")
    plain = JwksCache(transport=fake_idp.transport)
    with pytest.raises(ConfigurationError):
        plain.key_for(replace(idp, jwks_uri="http://127.0.0.1/jwks"), ec_key.kid, "ES256")
    assert fake_idp.calls == 0


def test_idp_without_a_key_source_is_a_configuration_error(cache: JwksCache, idp: TrustedIdp) -> None:
    with pytest.raises(ConfigurationError):
        cache.key_for(replace(idp, jwks_uri=None), "ec-1", "ES256")


# --------------------------------------------------------------------------- caching


def test_keys_cached_for_max_age(
    frozen: FrozenDateTimeFactory, fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    for _ in range(5):
        cache.key_for(idp, ec_key.kid, "ES256")
    assert fake_idp.calls == 1
    frozen.tick(cache.max_age - 1)
    cache.key_for(idp, ec_key.kid, "ES256")
    assert fake_idp.calls == 1
    frozen.tick(2)
    cache.key_for(idp, ec_key.kid, "ES256")
    assert fake_idp.calls == 2


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        ("max-age=120", 120),
        ("public, max-age=600, must-revalidate", 300),  # capped at max_age
        ("max-age=0", 60),  # floored
        ("no-cache", 300),  # no max-age: our own
        ('max-age="90"', 90),
    ],
)
def test_cache_control_max_age_is_honoured_within_bounds(
    frozen: FrozenDateTimeFactory,
    fake_idp: FakeIdp,
    cache: JwksCache,
    idp: TrustedIdp,
    ec_key: SigningKey,
    cache_control: str,
    ttl: int,
) -> None:
    fake_idp.cache_control = cache_control
    cache.key_for(idp, ec_key.kid, "ES256")
    frozen.tick(ttl - 1)
    cache.key_for(idp, ec_key.kid, "ES256")
    assert fake_idp.calls == 1
    frozen.tick(2)
    cache.key_for(idp, ec_key.kid, "ES256")
    assert fake_idp.calls == 2


def test_invalidate_forgets_the_keys(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    cache.key_for(idp, ec_key.kid, "ES256")
    cache.invalidate(idp.name)
    cache.key_for(idp, ec_key.kid, "ES256")
    assert fake_idp.calls == 2


def test_a_changed_jwks_uri_is_not_served_from_the_old_set(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    cache.key_for(idp, ec_key.kid, "ES256")
    fake_idp.down = True
    with pytest.raises(TemporarilyUnavailable):
        cache.key_for(replace(idp, jwks_uri="https://idp.example.com/jwks-v2"), ec_key.kid, "ES256")


def test_stats_count_fetches(
    frozen: FrozenDateTimeFactory, fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    cache.key_for(idp, ec_key.kid, "ES256")
    for kid in ("x", "y", "z"):
        with pytest.raises(InvalidGrant):
            cache.key_for(idp, kid, "ES256")
    fake_idp.down = True
    frozen.tick(cache.max_age + 1)
    cache.key_for(idp, ec_key.kid, "ES256")
    assert cache.stats() == {"corp": {"fetches": 3, "failures": 1, "suppressed": 2}}


# --------------------------------------------------------------------------- failures


def _too_large() -> Iterator[bytes]:
    chunk = b" " * 65536
    for _ in range(MAX_DOCUMENT_BYTES // len(chunk) + 2):
        yield chunk


FAILURES: dict[str, Any] = {
    "500": {"status": 500},
    "404": {"status": 404},
    "redirect": {"status": 302},
    "bad json": {"body": b"{not json"},
    "json list": {"body": b"[]"},
    "keys not a list": {"body": b'{"keys": "x"}'},
    "empty set": {"body": b'{"keys": []}'},
    "only symmetric keys": {
        "body": json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "ec-1"}]}).encode()
    },
    "too large": {"body": b'{"keys": []}' + b" " * MAX_DOCUMENT_BYTES},
    "network": {"down": True},
}


def _break(fake_idp: FakeIdp, how: dict[str, Any]) -> None:
    for k, v in how.items():
        setattr(fake_idp, k, v)


@pytest.mark.parametrize("how", FAILURES.values(), ids=FAILURES.keys())
def test_failed_fetch_without_a_good_set_is_temporarily_unavailable(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, how: dict[str, Any]
) -> None:
    _break(fake_idp, how)
    with pytest.raises(TemporarilyUnavailable):
        cache.key_for(idp, ec_key.kid, "ES256")


@pytest.mark.parametrize("how", FAILURES.values(), ids=FAILURES.keys())
def test_failed_fetch_keeps_the_last_good_set(
    frozen: FrozenDateTimeFactory,
    fake_idp: FakeIdp,
    cache: JwksCache,
    idp: TrustedIdp,
    ec_key: SigningKey,
    how: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = cache.key_for(idp, ec_key.kid, "ES256")
    _break(fake_idp, how)
    frozen.tick(cache.max_age + 1)
    assert cache.key_for(idp, ec_key.kid, "ES256") is good
    assert fake_idp.calls == 2
    assert "serving the last good key set" in caplog.text
    # An unknown kid is still the client's problem, not an outage.
    frozen.tick(cache.refetch_cooldown + 1)
    with pytest.raises(InvalidGrant, match="unknown key id"):
        cache.key_for(idp, "rotated", "ES256")


def test_streamed_response_is_capped(idp: TrustedIdp, ec_key: SigningKey) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=_too_large()))
    with pytest.raises(TemporarilyUnavailable):
        JwksCache(transport=transport).key_for(idp, ec_key.kid, "ES256")


def test_failure_backs_off_then_recovers(
    frozen: FrozenDateTimeFactory, fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    fake_idp.down = True
    for _ in range(20):
        with pytest.raises(TemporarilyUnavailable):
            cache.key_for(idp, ec_key.kid, "ES256")
    assert fake_idp.calls == 1  # a down provider is not hammered
    fake_idp.down = False
    frozen.tick(cache.refetch_cooldown + 1)
    cache.key_for(idp, ec_key.kid, "ES256")
    assert fake_idp.calls == 2


# --------------------------------------------------------------------------- key selection


def test_unknown_kid_refetch_is_rate_limited(
    frozen: FrozenDateTimeFactory, fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp
) -> None:
    for i in range(50):
        with pytest.raises(InvalidGrant, match="unknown key id"):
            cache.key_for(idp, f"kid-{i}", "ES256")
    assert fake_idp.calls == 1  # the initial fetch was the refetch
    frozen.tick(cache.refetch_cooldown)
    for i in range(50):
        with pytest.raises(InvalidGrant, match="unknown key id"):
            cache.key_for(idp, f"kid-{i}", "ES256")
    assert fake_idp.calls == 2


def test_cooldown_is_per_idp(fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp) -> None:
    other = replace(idp, name="other", issuer="https://other.example.com")
    for target in (idp, other, idp, other):
        with pytest.raises(InvalidGrant):
            cache.key_for(target, "nope", "ES256")
    assert fake_idp.calls == 2


def test_concurrent_misses_cause_one_fetch(fake_idp: FakeIdp, idp: TrustedIdp, ec_key: SigningKey) -> None:
    threads_n = 16
    entered = threading.Semaphore(0)
    release = threading.Event()

    def slow_idp() -> None:
        # Hold the one fetch until every thread has asked for the key.
        for _ in range(threads_n):
            entered.acquire(timeout=5)
        release.wait(0.2)

    fake_idp.on_request = slow_idp
    cache = JwksCache(transport=fake_idp.transport)
    results: list[Any] = []

    def worker() -> None:
        entered.release()
        try:
            results.append(cache.key_for(idp, ec_key.kid, "ES256"))
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == threads_n
    assert all(isinstance(r, jwt.PyJWK) for r in results)
    assert fake_idp.calls == 1


def test_stale_key_served_while_another_thread_refreshes(
    frozen: FrozenDateTimeFactory, fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    good = cache.key_for(idp, ec_key.kid, "ES256")
    frozen.tick(cache.max_age + 1)
    state = cache._state(idp.name)
    with state.lock:  # as if another thread were mid-fetch
        assert cache.key_for(idp, ec_key.kid, "ES256") is good
    assert fake_idp.calls == 1


def test_no_kid_picks_the_single_fitting_key(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, rsa_key: SigningKey, ed_key: SigningKey
) -> None:
    assert cache.key_for(idp, None, "ES256").key_id == ec_key.kid
    assert cache.key_for(idp, None, "RS256").key_id == rsa_key.kid
    assert cache.key_for(idp, None, "PS384").key_id == rsa_key.kid
    assert cache.key_for(idp, None, "EdDSA").key_id == ed_key.kid


def test_no_kid_with_several_fitting_keys_refused(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, attacker_key: SigningKey
) -> None:
    fake_idp.keys = [ec_key.jwk(), attacker_key.jwk()]
    with pytest.raises(InvalidGrant, match="several keys fit"):
        cache.key_for(idp, None, "ES256")


def test_no_kid_and_no_fitting_key_is_unknown(fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp) -> None:
    with pytest.raises(InvalidGrant, match="unknown key id"):
        cache.key_for(idp, None, "ES384")


@pytest.mark.parametrize(
    ("kid", "alg"), [("ec-1", "RS256"), ("ec-1", "ES384"), ("rsa-1", "ES256"), ("ed-1", "PS256")]
)
def test_key_must_fit_the_token_algorithm(cache: JwksCache, idp: TrustedIdp, kid: str, alg: str) -> None:
    with pytest.raises(InvalidGrant, match="does not fit"):
        cache.key_for(idp, kid, alg)


def test_jwk_alg_must_match_the_token_alg(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, rsa_key: SigningKey
) -> None:
    fake_idp.keys = [rsa_key.jwk(alg="PS256")]
    assert cache.key_for(idp, rsa_key.kid, "PS256").algorithm_name == "PS256"
    with pytest.raises(InvalidGrant, match="bound to another algorithm"):
        cache.key_for(idp, rsa_key.kid, "RS256")
    with pytest.raises(InvalidGrant, match="unknown key id"):
        cache.key_for(idp, None, "RS256")


@pytest.mark.parametrize("extra", [{"use": "enc"}, {"key_ops": ["encrypt"]}, {"use": 1}])
def test_keys_not_for_signatures_are_skipped(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, rsa_key: SigningKey, extra: Any
) -> None:
    fake_idp.keys = [ec_key.jwk(**extra), rsa_key.jwk()]
    with pytest.raises(InvalidGrant, match="unknown key id"):
        cache.key_for(idp, ec_key.kid, "ES256")


def test_symmetric_keys_are_ignored(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    fake_idp.keys = [{"kty": "oct", "kid": "shared", "k": "c2VjcmV0", "alg": "HS256"}, ec_key.jwk()]
    with pytest.raises(InvalidGrant, match="algorithm not allowed"):
        cache.key_for(idp, "shared", "HS256")
    with pytest.raises(InvalidGrant, match="unknown key id"):
        cache.key_for(idp, "shared", "ES256")


def test_private_members_are_never_used(fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    leaked = jwt.algorithms.ECAlgorithm.to_jwk(private, as_dict=True) | {"kid": "leaky"}
    fake_idp.keys = [leaked]
    key = cache.key_for(idp, "leaky", "ES256")
    assert isinstance(key.key, ec.EllipticCurvePublicKey)


def test_short_rsa_keys_are_skipped(fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp) -> None:
    weak = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=1024), "RS256", "weak")
    fake_idp.keys = [weak.jwk()]
    with pytest.raises(TemporarilyUnavailable):  # no usable key at all: not a key set
        cache.key_for(idp, "weak", "RS256")


def test_broken_keys_are_skipped(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    bad_point = ec_key.jwk(kid="bad", y=ec_key.jwk()["x"])
    fake_idp.keys = [
        bad_point,
        {"kty": "EC", "kid": "nox"},
        "junk",
        {"kty": "RSA", "n": 5, "e": "AQAB"},
        ec_key.jwk(),
    ]
    assert cache.key_for(idp, ec_key.kid, "ES256").key_id == ec_key.kid
    with pytest.raises(InvalidGrant, match="unknown key id"):
        cache.key_for(idp, "bad", "ES256")


def test_ed448_verifies(fake_idp: FakeIdp, idp: TrustedIdp) -> None:
    key = SigningKey(ed448.Ed448PrivateKey.generate(), "EdDSA", "ed448")
    fake_idp.keys = [key.jwk()]
    cache = JwksCache(transport=fake_idp.transport)
    subject = verify_token(
        sign(key), idps_by_issuer={idp.issuer: idp}, keys=cache, audience=AUDIENCE, leeway=0
    )
    assert subject.sub == "alice"


# --------------------------------------------------------------------------- against a real server


def test_real_http_server_on_loopback(server: LoopbackServer, idp: TrustedIdp, ec_key: SigningKey) -> None:
    jwks = server.route("/jwks", {"keys": [ec_key.jwk()]}, headers={"Cache-Control": "max-age=120"})
    local = replace(idp, jwks_uri=f"{server.base}/jwks")

    refused = JwksCache()
    with pytest.raises(ConfigurationError, match="allow_insecure_loopback"):
        refused.key_for(local, ec_key.kid, "ES256")
    assert jwks.hits == 0

    cache = JwksCache(allow_insecure_loopback=True)
    try:
        for _ in range(3):
            subject = verify_token(
                sign(ec_key, claims()),
                idps_by_issuer={idp.issuer: local},
                keys=cache,
                audience=AUDIENCE,
                leeway=0,
            )
            assert subject.principal == "corp:alice"
        assert jwks.hits == 1
    finally:
        cache.close()
        refused.close()


def test_real_server_redirect_is_not_followed(
    server: LoopbackServer, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    server.route("/jwks", b"", status=302, headers={"Location": "/elsewhere"})
    elsewhere = server.route("/elsewhere", {"keys": [ec_key.jwk()]})
    cache = JwksCache(allow_insecure_loopback=True)
    try:
        with pytest.raises(TemporarilyUnavailable):
            cache.key_for(replace(idp, jwks_uri=f"{server.base}/jwks"), ec_key.kid, "ES256")
    finally:
        cache.close()
    assert elsewhere.hits == 0


def test_constructor_refuses_nonsense() -> None:
    with pytest.raises(ConfigurationError):
        JwksCache(max_age=0)
