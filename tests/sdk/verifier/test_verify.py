"""verify(): every header and claim check, each with the attack it stops."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from freezegun import freeze_time

from issuer.sdk.verifier import (
    Capability,
    CapabilityError,
    CapabilityVerifier,
    ExpiredToken,
    InvalidToken,
    WrongAudience,
)
from issuer.sdk.verifier._capability import thaw
from tests.sdk.verifier.conftest import AUDIENCE, FakeIssuer, compact, hs256

START = "2030-01-01T00:00:00Z"


def refused(verifier: CapabilityVerifier, token: str, kind: type[CapabilityError] = InvalidToken) -> CapabilityError:
    """Verify must refuse with exactly ``kind``, never leaking PyJWT or the token."""
    with pytest.raises(CapabilityError) as info:
        verifier.verify(token)
    err = info.value
    assert type(err) is kind, f"{type(err).__name__}: {err}"
    assert not isinstance(err, jwt.PyJWTError)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert token not in str(err) and token not in err.www_authenticate()
    return err


# --------------------------------------------------------------------------- the good path


def test_valid_es256_capability(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    token = fake.token(authorization_details=[{"type": "tool_invocation", "locations": [AUDIENCE],
                                               "actions": ["read"], "constraints": {"project": {"eq": "p1"}}}])
    cap = verifier.verify(token)
    assert isinstance(cap, Capability)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (cap.sub, cap.client_id, cap.jti, cap.txn, cap.policy_version) == (
        "alice", "mcp-helpdesk", claims["jti"], "txn-1", 7)
    assert cap.actor_chain == ("mcp-helpdesk", "portal")
    assert cap.act == {"sub": "mcp-helpdesk", "act": {"sub": "portal"}}
    assert cap.scopes == frozenset({"tickets:read", "tickets:write"})
    assert (cap.issued_at, cap.expires_at) == (claims["iat"], claims["exp"])
    assert cap.groups == ("support",)
    assert cap.issuer == fake.url and cap.audience == AUDIENCE
    assert cap.authorization_details[0]["constraints"]["project"]["eq"] == "p1"
    assert cap.tool_invocations == cap.authorization_details
    assert not cap.call_bound and cap.arguments is None and cap.arguments_sha256 is None
    assert dict(cap.claims)["jti"] == claims["jti"]


def test_valid_eddsa_capability(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    assert verifier.verify(fake.token(kid=fake.ed_kid)).sub == "alice"


def test_capability_is_read_only(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = verifier.verify(fake.token(authorization_details=[{"type": "tool_invocation", "actions": ["read"]}]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cap.sub = "mallory"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cap.claims["sub"] = "mallory"  # type: ignore[index]
    with pytest.raises(TypeError):
        cap.authorization_details[0]["actions"] = ["delete"]  # type: ignore[index]
    with pytest.raises(TypeError):
        cap.authorization_details[0]["actions"].append("delete")
    with pytest.raises(TypeError):
        cap.act["act"].update(sub="mallory")  # type: ignore[index]
    assert isinstance(cap.scopes, frozenset) and isinstance(cap.authorization_details, tuple)
    # Read-only, yet plain JSON to compare and serialise:
    assert cap.authorization_details[0] == {"type": "tool_invocation", "actions": ["read"]}
    assert json.loads(json.dumps(cap.claims)) == cap.claims
    assert copy.deepcopy(cap.claims) == cap.claims and pickle.loads(pickle.dumps(cap.claims)) == cap.claims
    mutable = thaw(cap.claims)
    mutable["groups"].append("admins")
    assert cap.groups == ("support",) and cap.claims["groups"] == ["support"]


def test_no_optional_claims(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = verifier.verify(fake.token(act=None, scope=None, pol=None, txn=None, groups=None, nbf=None))
    assert cap.actor_chain == () and cap.act is None and cap.scopes == frozenset()
    assert cap.policy_version is None and cap.txn is None and cap.groups == ()


# --------------------------------------------------------------------------- header attacks


def test_alg_none_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    token = compact({"alg": "none", "typ": "at+jwt", "kid": fake.ec_kid}, fake.claims(), lambda _: b"")
    err = refused(verifier, token)
    assert "algorithm" in err.description


def test_hs256_keyed_with_the_public_key_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    """Algorithm confusion: HMAC with the issuer's public key (PEM or JWK x) as the secret."""
    public = fake.keys[fake.ec_kid][1].public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (pem, fake.public_jwk(fake.ec_kid)["x"].encode()):
        token = compact({"alg": "HS256", "typ": "at+jwt", "kid": fake.ec_kid}, fake.claims(), hs256(secret))
        refused(verifier, token)
    assert fake.hits["/jwks.json"] == 0  # refused on the header, before any key is fetched


def test_rs256_refused_even_with_a_published_rsa_key(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    rsa_kid = fake.add_key("RS256")  # published in the JWKS, yet never usable
    refused(verifier, fake.token(kid=rsa_kid))
    # The same RSA key under a header claiming ES256 fails too: the kid names no usable key.
    assert verifier.verify(fake.token()).sub == "alice"
    refused(verifier, compact({"alg": "ES256", "typ": "at+jwt", "kid": rsa_kid}, fake.claims(), lambda _: b"x" * 64))


def test_es256_header_with_an_eddsa_key_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    token = fake.token(kid=fake.ec_kid)
    header, payload, sig = token.split(".")
    swapped = compact({"alg": "ES256", "typ": "at+jwt", "kid": fake.ed_kid}, fake.claims(), lambda _: b"\0" * 64)
    err = refused(verifier, swapped)
    assert "does not match" in err.description
    refused(verifier, f"{header}.{payload}.{sig[:-4]}AAAA")  # tampered signature


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt+x", "application/jwt", None, 7])
def test_wrong_typ_refused(fake: FakeIssuer, verifier: CapabilityVerifier, typ: Any) -> None:
    token = fake.token(headers={"typ": typ})
    if typ is None:
        token = compact({"alg": "ES256", "kid": fake.ec_kid}, fake.claims(), lambda _: b"\0" * 64)
    assert "typ" in refused(verifier, token).description


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_typ_forms_accepted(fake: FakeIssuer, verifier: CapabilityVerifier, typ: str) -> None:
    assert verifier.verify(fake.token(headers={"typ": typ})).sub == "alice"


def test_crit_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    refused(verifier, fake.token(headers={"crit": ["exp"], "exp": 1}))


def test_missing_or_bad_kid_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    key = fake.keys[fake.ec_kid][1]
    no_kid = jwt.encode(fake.claims(), key, algorithm="ES256", headers={"typ": "at+jwt"})
    assert "kid" in refused(verifier, no_kid).description
    assert "kid" in refused(verifier, fake.token(headers={"kid": ""})).description
    assert "kid" in refused(verifier, fake.token(headers={"kid": "k" * 300})).description


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "a.b.c", "é.é.é", "!!!.e30.sig"])
def test_malformed_tokens_refused(verifier: CapabilityVerifier, token: str) -> None:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_non_string_token_refused(verifier: CapabilityVerifier) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(b"a.b.c")  # type: ignore[arg-type]


def test_oversized_token_refused_before_any_fetch(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    token = fake.token(padding="x" * 17000)
    assert len(token) > 16 * 1024
    assert "too large" in refused(verifier, token).description
    assert fake.hits["/jwks.json"] == 0


def test_payload_must_be_an_object(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    key = fake.keys[fake.ec_kid][1]
    token = jwt.api_jws.encode(b"[1, 2]", key, algorithm="ES256", headers={"typ": "at+jwt", "kid": fake.ec_kid})
    refused(verifier, token)
    nan = jwt.api_jws.encode(b'{"exp": NaN}', key, algorithm="ES256", headers={"typ": "at+jwt", "kid": fake.ec_kid})
    refused(verifier, nan)


# --------------------------------------------------------------------------- claim attacks


def test_wrong_issuer_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    assert "issuer" in refused(verifier, fake.token(iss="https://evil.example")).description
    refused(verifier, fake.token(iss=fake.url + "/"))  # exact comparison


@pytest.mark.parametrize("aud", ["https://files.example", [AUDIENCE, "https://files.example"],
                                 ["https://files.example"], [], AUDIENCE + "/", None, 5])
def test_wrong_audience_refused(fake: FakeIssuer, verifier: CapabilityVerifier, aud: Any) -> None:
    err = refused(verifier, fake.token(aud=aud), WrongAudience)
    assert err.www_authenticate() == (
        'Bearer error="invalid_token", error_description="the capability was issued for another tool"')


def test_single_element_audience_list_accepted(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    assert verifier.verify(fake.token(aud=[AUDIENCE])).audience == AUDIENCE


def test_expired_refused_after_leeway(fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]) -> None:
    verifier = make_verifier(leeway=30)
    with freeze_time(START) as frozen:
        token = fake.token()  # exp = now + 300
        frozen.tick(300 + 29)
        assert verifier.verify(token).sub == "alice"  # within leeway
        frozen.tick(1)
        err = refused(verifier, token, ExpiredToken)
        assert err.www_authenticate() == 'Bearer error="invalid_token", error_description="the capability has expired"'
        assert err.status_code == 401


def test_nbf_in_the_future_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    with freeze_time(START):
        now = int(fake.claims()["iat"])
        assert "not valid yet" in refused(verifier, fake.token(nbf=now + 31, iat=now)).description
        assert verifier.verify(fake.token(nbf=now + 30)).sub == "alice"  # within leeway
        assert "future" in refused(verifier, fake.token(iat=now + 120, nbf=None)).description


@pytest.mark.parametrize("claim", ["jti", "sub", "client_id", "exp", "iat"])
def test_missing_required_claim_refused(fake: FakeIssuer, verifier: CapabilityVerifier, claim: str) -> None:
    err = refused(verifier, fake.token(**{claim: None}))
    assert err.description == f"missing required claim '{claim}'"


@pytest.mark.parametrize(("claim", "value"), [
    ("jti", ""), ("jti", 5), ("jti", "j" * 300), ("sub", ["alice"]), ("client_id", ""),
    ("exp", "soon"), ("exp", True), ("iat", None), ("scope", ["tickets:read"]), ("pol", "7"), ("pol", True),
    ("act", {"client": "x"}), ("act", "mcp"), ("groups", "support"), ("txn", 5),
    ("cnf", {"x5t#S256": "abc"}), ("cnf", "abc"), ("cnf", {"jkt": 5}), ("cnf", {"jkt": "a", "x5t#S256": "b"}),
])
def test_malformed_claims_refused(fake: FakeIssuer, verifier: CapabilityVerifier, claim: str, value: Any) -> None:
    refused(verifier, fake.token(**{claim: value}))


def test_deeply_nested_act_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    act: dict[str, Any] = {"sub": "a0"}
    for i in range(1, 20):
        act = {"sub": f"a{i}", "act": act}
    assert "deeply" in refused(verifier, fake.token(act=act)).description


@pytest.mark.parametrize("details", [
    "tool_invocation", [{"type": "payment"}], [{"type": "tool_invocation", "future_member": 1}],
    [{"type": "tool_invocation", "actions": "read"}], [{"type": "tool_invocation", "constraints": []}],
    [{"type": "tool_invocation", "arguments": [1]}], [{"type": "tool_invocation", "arguments_sha256": 5}],
    [{"type": "tool_invocation", "arguments": {"a": 1}, "arguments_sha256": "not-the-digest"}],
    [{"type": "tool_invocation", "arguments": {"a": 1}}, {"type": "tool_invocation", "arguments": {"a": 2}}],
])
def test_authorization_details_fail_closed(fake: FakeIssuer, verifier: CapabilityVerifier, details: Any) -> None:
    """A type or member this verifier does not understand may carry a restriction: refuse the token."""
    refused(verifier, fake.token(authorization_details=details))


def test_details_for_another_location_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    token = fake.token(authorization_details=[{"type": "tool_invocation", "locations": ["https://files.example"]}])
    refused(verifier, token, WrongAudience)


def test_keys_named_in_the_token_are_ignored(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    """``jwk``/``jku``/``x5u`` in the header cannot point the verifier at the attacker's own key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    mine = ec.generate_private_key(ec.SECP256R1())
    embedded = ECAlgorithm.to_jwk(mine.public_key(), as_dict=True)
    token = jwt.encode(fake.claims(), mine, algorithm="ES256",
                       headers={"typ": "at+jwt", "kid": fake.ec_kid, "jwk": embedded,
                                "jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/cert"})
    assert refused(verifier, token).description == "the capability signature is invalid"
