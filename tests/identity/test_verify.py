"""verify_token: one test per attack the checks stop, then the claim parsing."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import uuid
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from freezegun.api import FrozenDateTimeFactory

from issuer import clock
from issuer.errors import InvalidGrant, TemporarilyUnavailable
from issuer.identity.jwks import JwksCache
from issuer.identity.types import TrustedIdp, VerifiedSubject
from issuer.identity.verify import KeyResolver, verify_token

from .conftest import (
    AUDIENCE,
    ISSUER,
    FakeIdp,
    LoopbackServer,
    SigningKey,
    b64,
    b64json,
    claims,
    sign,
)

pytestmark = pytest.mark.usefixtures("frozen")


def verify(token: str, keys: KeyResolver, idp: TrustedIdp, **kw: Any) -> VerifiedSubject:
    kw.setdefault("audience", AUDIENCE)
    kw.setdefault("leeway", 0)
    return verify_token(token, idps_by_issuer={idp.issuer: idp}, keys=keys, **kw)


def assert_refused(
    token: str, keys: KeyResolver, idp: TrustedIdp, reason: str, *, what: str = "subject_token", **kw: Any
) -> InvalidGrant:
    with pytest.raises(InvalidGrant) as info:
        verify(token, keys, idp, what=what, **kw)
    err = info.value
    assert err.error == "invalid_grant"
    assert err.status_code == 400
    assert err.description == f"{what}: {reason}"
    # Nothing of the token is echoed back, and nothing of PyJWT leaks through the chain.
    assert not token or token not in err.description
    for part in token.split("."):
        if len(part) >= 6:
            assert part not in err.description
    assert err.__cause__ is None
    assert err.__suppress_context__
    return err


# --------------------------------------------------------------------------- accepted tokens


def test_es256_token_accepted(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    now = int(clock.now())
    token = sign(ec_key, claims(department="R&D", secret="x"))
    subject = verify(token, cache, idp)
    assert subject == VerifiedSubject(
        idp="corp",
        namespace="corp",
        sub="alice",
        groups=frozenset({"eng", "oncall"}),
        attributes={"department": "R&D"},
        claims=subject.claims,
        exp=now + 300,
    )
    assert subject.principal == "corp:alice"
    assert subject.claims["iss"] == ISSUER
    assert subject.act is None and subject.may_act is None and subject.scope == frozenset()


def test_rs256_token_accepted(cache: JwksCache, idp: TrustedIdp, rsa_key: SigningKey) -> None:
    assert verify(sign(rsa_key), cache, idp).sub == "alice"


def test_eddsa_token_accepted(cache: JwksCache, idp: TrustedIdp, ed_key: SigningKey) -> None:
    assert verify(sign(ed_key), cache, idp).sub == "alice"


def test_ps256_with_the_rsa_key_accepted_when_allowlisted(
    cache: JwksCache, idp: TrustedIdp, rsa_key: SigningKey
) -> None:
    ps = SigningKey(rsa_key.private, "PS256", rsa_key.kid)
    assert verify(sign(ps), cache, replace(idp, algorithms=("PS256",))).sub == "alice"


def test_inline_jwks_never_fetches(fake_idp: FakeIdp, idp: TrustedIdp, ec_key: SigningKey) -> None:
    inline = replace(idp, jwks_uri=None, jwks={"keys": [ec_key.jwk()]})
    cache = JwksCache(transport=fake_idp.transport)
    assert verify(sign(ec_key), cache, inline).sub == "alice"
    assert_refused(sign(ec_key, kid="other"), cache, inline, "unknown key id")
    assert fake_idp.calls == 0


# --------------------------------------------------------------------------- attacks on the algorithm


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_refused(fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, alg: str) -> None:
    token = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims())}.{b64(b'sig')}"
    assert_refused(token, cache, idp, "algorithm not allowed")
    assert fake_idp.calls == 0


def test_unsigned_token_refused_as_malformed(cache: JwksCache, idp: TrustedIdp) -> None:
    # The canonical alg=none form has an empty signature segment.
    token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims())}."
    assert_refused(token, cache, idp, "malformed token")


@pytest.mark.parametrize(("alg", "digest"), [("HS256", hashlib.sha256), ("HS512", hashlib.sha512)])
def test_hmac_signed_with_the_public_key_pem_refused(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, rsa_key: SigningKey, alg: str, digest: Any
) -> None:
    pem = rsa_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64json({'alg': alg, 'typ': 'JWT', 'kid': rsa_key.kid})}.{b64json(claims())}"
    token = f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), digest).digest())}"
    assert_refused(token, cache, idp, "algorithm not allowed")
    assert fake_idp.calls == 0


def test_hmac_refused_even_if_an_idp_allowlist_names_it(
    cache: JwksCache, idp: TrustedIdp, rsa_key: SigningKey
) -> None:
    pem = rsa_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64json({'alg': 'HS256', 'kid': rsa_key.kid})}.{b64json(claims())}"
    token = f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    assert_refused(token, cache, replace(idp, algorithms=("HS256", "RS256")), "algorithm not allowed")


def test_alg_allowed_globally_but_not_by_the_idp_refused(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, rsa_key: SigningKey
) -> None:
    assert_refused(
        sign(rsa_key), cache, replace(idp, algorithms=("ES256",)), "algorithm not allowed for this issuer"
    )
    assert fake_idp.calls == 0


def test_header_alg_that_does_not_fit_the_key_refused(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, rsa_key: SigningKey
) -> None:
    # An RS256 token naming the EC key's kid.
    assert_refused(sign(rsa_key, kid=ec_key.kid), cache, idp, "key does not fit the token algorithm")


# --------------------------------------------------------------------------- attacks on the key


def test_unknown_kid_refetches_once_per_cooldown(
    frozen: FrozenDateTimeFactory,
    fake_idp: FakeIdp,
    cache: JwksCache,
    idp: TrustedIdp,
    ec_key: SigningKey,
    attacker_key: SigningKey,
) -> None:
    verify(sign(ec_key), cache, idp)
    assert fake_idp.calls == 1
    for _ in range(50):
        token = sign(attacker_key, kid=uuid.uuid4().hex)
        assert_refused(token, cache, idp, "unknown key id")
    assert fake_idp.calls == 2  # one refetch for 50 unknown kids
    frozen.tick(cache.refetch_cooldown + 1)
    for _ in range(50):
        assert_refused(sign(attacker_key, kid=uuid.uuid4().hex), cache, idp, "unknown key id")
    assert fake_idp.calls == 3  # one more after the cooldown, not 50
    verify(sign(ec_key), cache, idp)  # known keys are unaffected
    assert fake_idp.calls == 3


def test_jku_header_is_never_followed(
    fake_idp: FakeIdp,
    cache: JwksCache,
    idp: TrustedIdp,
    ec_key: SigningKey,
    attacker_key: SigningKey,
    server: LoopbackServer,
) -> None:
    attacker_jwks = server.route("/attacker/jwks", {"keys": [attacker_key.jwk()]})
    jku = f"{server.base}/attacker/jwks"
    # The attacker's own kid: not in the registered set.
    assert_refused(sign(attacker_key, jku=jku), cache, idp, "unknown key id")
    # A registered kid: the registered key does not verify the attacker's signature.
    assert_refused(sign(attacker_key, jku=jku, kid=ec_key.kid), cache, idp, "bad signature")
    assert attacker_jwks.hits == 0
    assert set(fake_idp.paths) == {"/jwks"}


def test_x5u_header_is_never_followed(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, attacker_key: SigningKey, server: LoopbackServer
) -> None:
    cert_route = server.route("/attacker.pem", b"-----BEGIN CERTIFICATE-----")
    token = sign(attacker_key, x5u=f"{server.base}/attacker.pem", kid=ec_key.kid)
    assert_refused(token, cache, idp, "bad signature")
    assert cert_route.hits == 0


@pytest.mark.parametrize("kid", ["ec-1", None])
def test_embedded_jwk_header_is_ignored(
    cache: JwksCache, idp: TrustedIdp, attacker_key: SigningKey, kid: str | None
) -> None:
    token = sign(attacker_key, jwk=attacker_key.jwk(), kid=kid)
    assert_refused(token, cache, idp, "bad signature")


def test_embedded_x5c_header_is_ignored(cache: JwksCache, idp: TrustedIdp, attacker_key: SigningKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(attacker_key.private.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2029, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
        .sign(attacker_key.private, hashes.SHA256())
    )
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    assert_refused(sign(attacker_key, x5c=x5c, kid="ec-1"), cache, idp, "bad signature")


def test_tampered_payload_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    header, _, signature = sign(ec_key).split(".")
    forged = f"{header}.{b64json(claims(sub='admin'))}.{signature}"
    assert_refused(forged, cache, idp, "bad signature")


def test_key_rotation_new_kid_is_fetched_and_verifies(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, attacker_key: SigningKey
) -> None:
    verify(sign(ec_key), cache, idp)
    rotated = SigningKey(attacker_key.private, "ES256", "ec-2")  # the provider's new key
    fake_idp.keys = [ec_key.jwk(), rotated.jwk()]
    assert verify(sign(rotated), cache, idp).sub == "alice"
    assert fake_idp.calls == 2
    assert verify(sign(ec_key), cache, idp).sub == "alice"
    assert fake_idp.calls == 2


def test_idp_down_after_a_good_fetch_keeps_serving_cached_keys(
    frozen: FrozenDateTimeFactory, fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    token = sign(ec_key, claims(exp=int(clock.now()) + 3600))
    verify(token, cache, idp)
    fake_idp.down = True
    frozen.tick(cache.max_age + 100)  # past max_age
    assert verify(token, cache, idp).sub == "alice"
    assert fake_idp.calls == 2  # it tried, failed, and served the last good set
    assert verify(token, cache, idp).sub == "alice"
    assert fake_idp.calls == 2  # and backs off instead of retrying on every request


def test_idp_down_without_cached_keys_is_temporarily_unavailable(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    fake_idp.down = True
    token = sign(ec_key)
    with pytest.raises(TemporarilyUnavailable) as info:
        verify(token, cache, idp)
    assert info.value.error == "temporarily_unavailable"
    assert info.value.status_code == 503
    assert token not in info.value.description


# --------------------------------------------------------------------------- time


def test_expired_refused(
    frozen: FrozenDateTimeFactory, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    token = sign(ec_key)
    verify(token, cache, idp)
    frozen.tick(301)
    assert_refused(token, cache, idp, "expired")
    assert verify(token, cache, idp, leeway=30).sub == "alice"  # leeway covers small skew
    frozen.tick(30)
    assert_refused(token, cache, idp, "expired", leeway=30)


def test_not_yet_valid_nbf_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    token = sign(ec_key, claims(nbf=int(clock.now()) + 120))
    assert_refused(token, cache, idp, "not yet valid")
    assert verify(token, cache, idp, leeway=120).sub == "alice"


def test_iat_in_the_future_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    token = sign(ec_key, claims(iat=int(clock.now()) + 120))
    assert_refused(token, cache, idp, "not yet valid")
    assert verify(token, cache, idp, leeway=120).sub == "alice"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": None}, "missing exp claim"),
        ({"exp": "soon"}, "malformed exp"),
        ({"exp": str(2**40)}, "malformed exp"),
        ({"exp": True}, "malformed exp"),  # a boolean is no time, though Python would read it as 1
        ({"iat": True}, "malformed iat"),
        ({"nbf": "0"}, "malformed nbf"),
        ({"iat": 1.5e300}, "not yet valid"),
    ],
)
def test_malformed_time_claims_refused(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, overrides: dict[str, Any], reason: str
) -> None:
    assert_refused(sign(ec_key, claims(**overrides)), cache, idp, reason)


# --------------------------------------------------------------------------- audience and issuer


def test_token_for_another_client_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    # Token passthrough: a token the user got for another service.
    assert_refused(sign(ec_key, claims(aud="client-b")), cache, idp, "audience does not include this client")
    assert_refused(sign(ec_key, claims(aud=["x", "y"])), cache, idp, "audience does not include this client")


def test_aud_array_containing_the_audience_accepted(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    assert verify(sign(ec_key, claims(aud=["client-b", AUDIENCE])), cache, idp).sub == "alice"


def test_missing_aud_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    assert_refused(sign(ec_key, claims(aud=None)), cache, idp, "missing aud claim")


@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.example.com",
        ISSUER + "/",  # trailing slash variant
        "https://IDP.example.com",
        "https://idp.example.com:443",
        "http://idp.example.com",
        7,
        None,
    ],
)
def test_untrusted_issuer_refused(
    fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, iss: Any
) -> None:
    if isinstance(iss, str) or iss is None:
        token = sign(ec_key, claims(iss=iss))
    else:  # PyJWT will not sign a non-string iss; the check runs before the signature's anyway
        token = f"{b64json({'alg': 'ES256', 'kid': ec_key.kid})}.{b64json(claims(iss=iss))}.c2ln"
    assert_refused(token, cache, idp, "untrusted issuer")
    assert fake_idp.calls == 0


def test_disabled_idp_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    assert_refused(sign(ec_key), cache, replace(idp, enabled=False), "issuer is disabled")


def test_right_issuer_wrong_idp_key_refused(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, attacker_key: SigningKey
) -> None:
    # Provider B's token claiming provider A's issuer: A's keys do not verify it.
    assert_refused(sign(attacker_key, kid=ec_key.kid), cache, idp, "bad signature")


# --------------------------------------------------------------------------- shape

DUPLICATE_ALG = b64(b'{"alg":"ES256","alg":"none"}')
NAN_EXP = b64(b'{"iss":"https://idp.example.com","exp":NaN}')


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "a+b.c.d",
        "eyJ=.eyJ.sig",
        f"{b64json([1])}.{b64json({})}.c2ln",
        f"{b64(b'not json')}.{b64json({})}.c2ln",
        f"{b64json({'alg': 'ES256'})}.{b64json(['x'])}.c2ln",
        f"{DUPLICATE_ALG}.{b64json({'iss': ISSUER})}.c2ln",
        f"{b64json({'alg': 'ES256', 'kid': 5})}.{b64json({'iss': ISSUER})}.c2ln",
        f"{b64json({'alg': 'ES256'})}.{NAN_EXP}.c2ln",
    ],
)
def test_malformed_tokens_refused(fake_idp: FakeIdp, cache: JwksCache, idp: TrustedIdp, token: str) -> None:
    assert_refused(token, cache, idp, "malformed token")
    assert fake_idp.calls == 0


def test_oversized_token_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    token = sign(ec_key, claims(padding="x" * 16 * 1024))
    assert_refused(token, cache, idp, "token too large")


def test_crit_header_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    token = sign(ec_key, crit=["exp"], exp=1)
    assert_refused(token, cache, idp, "unsupported critical header")


# --------------------------------------------------------------------------- typ


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
def test_required_typ_accepted(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, typ: str) -> None:
    assert verify(sign(ec_key, typ=typ), cache, idp, required_typ="at+jwt").sub == "alice"


@pytest.mark.parametrize("typ", ["JWT", "", "application/jwt", "at+jwt+x"])
def test_wrong_typ_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, typ: str) -> None:
    assert_refused(sign(ec_key, typ=typ), cache, idp, "wrong token type", required_typ="at+jwt")


# --------------------------------------------------------------------------- subject, groups, attributes


@pytest.mark.parametrize(
    ("sub", "reason"),
    [
        (None, "missing subject"),
        ("", "invalid subject"),
        ("a" * 256, "invalid subject"),
        ("ali\nce", "invalid subject"),
        ("alice\u202e", "invalid subject"),
        (42, "malformed sub"),
    ],
)
def test_bad_subject_refused(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, sub: Any, reason: str
) -> None:
    assert_refused(sign(ec_key, claims(sub=sub)), cache, idp, reason)


def test_custom_subject_claim(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    custom = replace(idp, subject_claim="oid")
    assert verify(sign(ec_key, claims(oid="0000-1111")), cache, custom).sub == "0000-1111"
    assert_refused(sign(ec_key, claims(oid=["x"])), cache, custom, "invalid subject")


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (None, frozenset()),
        ([], frozenset()),
        (["a", "b", "a"], frozenset({"a", "b"})),
        ("a b  c", frozenset({"a", "b", "c"})),
    ],
)
def test_groups_forms(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, groups: Any, expected: frozenset[str]
) -> None:
    assert verify(sign(ec_key, claims(groups=groups)), cache, idp).groups == expected


@pytest.mark.parametrize("groups", [{"a": 1}, 5, [1], ["ok", None], True])
def test_bad_groups_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, groups: Any) -> None:
    assert_refused(sign(ec_key, claims(groups=groups)), cache, idp, "invalid groups claim")


@pytest.mark.parametrize("value", ["a\x00b", "\ud800"], ids=["NUL", "lone surrogate"])
def test_a_refused_character_anywhere_in_the_payload_is_a_malformed_token(
        cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, value: str) -> None:
    """The strict decoder refuses the text before any claim is read: no such string reaches storage or a log."""
    for claim in ("groups", "tenant", "name"):
        assert_refused(sign(ec_key, claims(**{claim: [value] if claim == "groups" else value})), cache, idp,
                       "malformed token")


def test_huge_integer_exp_does_not_crash(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    assert verify(sign(ec_key, claims(exp=10**400)), cache, idp).exp == 10**400


def test_too_many_groups_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    assert len(verify(sign(ec_key, claims(groups=[f"g{i}" for i in range(1000)])), cache, idp).groups) == 1000
    assert_refused(sign(ec_key, claims(groups=[f"g{i}" for i in range(1001)])), cache, idp, "too many groups")


def test_only_allowlisted_simple_attributes_copied(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey
) -> None:
    token = sign(
        ec_key,
        claims(
            department="eng",
            level=3,
            email_verified=True,
            roles=["a", "b"],
            address={"street": "x"},  # allowlisted, but not a simple value
            secret="s3",  # not allowlisted
        ),
    )
    assert verify(token, cache, idp).attributes == {
        "department": "eng",
        "level": 3,
        "email_verified": True,
        "roles": ["a", "b"],
    }


# --------------------------------------------------------------------------- act, may_act, scope


def test_act_and_may_act_returned(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    act = {"sub": "agent-1", "act": {"sub": "agent-0"}}
    subject = verify(sign(ec_key, claims(act=act, may_act={"sub": "agent-2"})), cache, idp)
    assert subject.act == act
    assert subject.may_act == {"sub": "agent-2"}


@pytest.mark.parametrize("name", ["act", "may_act"])
@pytest.mark.parametrize("value", ["agent", {}, {"sub": 1}, {"sub": ""}, ["agent"], {"sub": "a", "act": "b"}])
def test_bad_act_refused(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, name: str, value: Any
) -> None:
    assert_refused(sign(ec_key, claims(**{name: value})), cache, idp, f"invalid {name} claim")


def test_runaway_act_chain_refused(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    act: dict[str, Any] = {"sub": "a"}
    for _ in range(20):
        act = {"sub": "a", "act": act}
    assert_refused(sign(ec_key, claims(act=act)), cache, idp, "invalid act claim")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"scope": "read write"}, frozenset({"read", "write"})),
        ({"scp": ["read", "write"]}, frozenset({"read", "write"})),
        ({"scp": "read write"}, frozenset({"read", "write"})),
        ({}, frozenset()),
    ],
)
def test_scope_parsed(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, extra: dict[str, Any], expected: frozenset[str]
) -> None:
    assert verify(sign(ec_key, claims(**extra)), cache, idp).scope == expected


@pytest.mark.parametrize(
    ("extra", "name"), [({"scope": 5}, "scope"), ({"scp": [1]}, "scp"), ({"scp": {}}, "scp")]
)
def test_bad_scope_refused(
    cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey, extra: dict[str, Any], name: str
) -> None:
    assert_refused(sign(ec_key, claims(**extra)), cache, idp, f"invalid {name} claim")


# --------------------------------------------------------------------------- wiring


def test_descriptions_name_the_token_parameter(cache: JwksCache, idp: TrustedIdp, ec_key: SigningKey) -> None:
    assert_refused(
        sign(ec_key, claims(aud="x")), cache, idp, "audience does not include this client", what="actor_token"
    )
    assert_refused(sign(ec_key, kid="nope"), cache, idp, "unknown key id", what="actor_token")


def test_any_key_resolver_will_do(idp: TrustedIdp, ec_key: SigningKey) -> None:
    import jwt

    class Static:
        def key_for(self, idp: TrustedIdp, kid: str | None, alg: str) -> jwt.PyJWK:
            return jwt.PyJWK(ec_key.jwk(), alg)

    assert verify(sign(ec_key), Static(), idp).sub == "alice"
