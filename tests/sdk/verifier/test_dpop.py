"""DPoP upstream (RFC 9449 section 7): a bound capability is accepted only with a valid proof of its key.

Each check with the attack it stops: a stolen bound capability sent as Bearer, or with a proof by the thief's
key, a proof for another request or another token, an old or replayed proof (here and at a second process
sharing Redis), a proof that is not a proof (HMAC, none, a private key in the header).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import flask
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from issuer.dpop import access_token_hash
from issuer.sdk.verifier import CapabilityVerifier, InvalidDPoPProof, InvalidToken, MissingToken
from issuer.sdk.verifier.asgi import CapabilityMiddleware
from issuer.sdk.verifier.flask import CapabilityProtect
from tests.conftest import need_service
from tests.dpop.test_proof import Holder
from tests.sdk.verifier.conftest import FakeIssuer

URL = "https://tickets.example/tickets"
Make = Callable[..., CapabilityVerifier]


@pytest.fixture
def holder() -> Holder:
    return Holder()


@pytest.fixture
def bound(fake: FakeIssuer, holder: Holder) -> str:
    return fake.token(cnf={"jkt": holder.jkt})


def proof_for(holder: Holder, token: str, **kw: Any) -> str:
    kw.setdefault("htm", "GET")
    kw.setdefault("htu", URL)
    kw.setdefault("ath", access_token_hash(token))
    return holder.proof(**kw)


def verify(verifier: CapabilityVerifier, token: str, proof: str | list[str] | None, *, scheme: str = "DPoP",
           method: str = "GET", url: str = URL) -> Any:
    return verifier.verify_request(authorization=f"{scheme} {token}", dpop=proof, method=method, url=url)


def refused(verifier: CapabilityVerifier, token: str, proof: str | list[str] | None, **kw: Any) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        verify(verifier, token, proof, **kw)
    return info.value


def test_a_bound_capability_with_a_proof_of_its_key(verifier: CapabilityVerifier, holder: Holder, bound: str) -> None:
    cap = verify(verifier, bound, proof_for(holder, bound))
    assert cap.dpop_jkt == holder.jkt and cap.sub == "alice"
    # the query is not part of htu (RFC 9449 section 4.3)
    assert verify(verifier, bound, proof_for(holder, bound), url=URL + "?page=2").sub == "alice"


def test_a_stolen_bound_capability_sent_as_bearer_is_refused(verifier: CapabilityVerifier, bound: str) -> None:
    err = refused(verifier, bound, None, scheme="Bearer")
    assert isinstance(err, InvalidDPoPProof) and err.status_code == 401
    assert err.www_authenticate().startswith('DPoP error="invalid_dpop_proof"')
    assert 'algs="ES256 EdDSA"' in err.www_authenticate()
    with pytest.raises(InvalidDPoPProof):
        verifier.verify(bound)  # and by the plain verify, which checks no proof
    with pytest.raises(InvalidDPoPProof):
        verifier.check(bound)


def test_a_bearer_capability_sent_as_dpop_is_refused(fake: FakeIssuer, verifier: CapabilityVerifier,
                                                     holder: Holder) -> None:
    token = fake.token()
    err = refused(verifier, token, proof_for(holder, token))
    assert not isinstance(err, InvalidDPoPProof) and err.www_authenticate().startswith('DPoP error="invalid_token"')
    assert verify(verifier, token, None, scheme="Bearer").sub == "alice"


@pytest.mark.parametrize("case", [
    "no proof", "two proofs", "joined proofs", "another key", "wrong htm", "wrong htu", "no ath", "ath of another",
    "old", "future", "typ", "hmac", "none", "private jwk", "garbage",
])
def test_each_bad_proof_is_refused(fake: FakeIssuer, verifier: CapabilityVerifier, holder: Holder, bound: str,
                                   case: str) -> None:
    good = proof_for(holder, bound)
    proof: str | list[str] | None = {
        "no proof": None,
        "two proofs": [good, proof_for(holder, bound)],
        "joined proofs": f"{good}, {proof_for(holder, bound)}",
        "another key": proof_for(Holder(), bound),  # the thief's own key
        "wrong htm": proof_for(holder, bound, htm="POST"),
        "wrong htu": proof_for(holder, bound, htu="https://tickets.example/admin"),
        "no ath": holder.proof(htm="GET", htu=URL),
        "ath of another": proof_for(holder, fake.token(cnf={"jkt": holder.jkt})),
        "old": proof_for(holder, bound, iat=int(time.time()) - 300),
        "future": proof_for(holder, bound, iat=int(time.time()) + 300),
        "typ": proof_for(holder, bound, header={"typ": "jwt"}),
        "hmac": jwt.encode({"jti": "x", "htm": "GET", "htu": URL, "iat": int(time.time()),
                            "ath": access_token_hash(bound)}, "k" * 32, algorithm="HS256",
                           headers={"typ": "dpop+jwt", "jwk": holder.jwk}),
        "none": good.split(".")[0] + "." + good.split(".")[1] + ".",
        "private jwk": proof_for(holder, bound, header={"jwk": {**holder.jwk, "d": "AAAA"}}),
        "garbage": "not-a-proof",
    }[case]
    err = refused(verifier, bound, proof)
    assert isinstance(err, InvalidDPoPProof), err
    assert err.www_authenticate().startswith('DPoP error="invalid_dpop_proof"')
    assert "eyJ" not in err.description  # never the proof or the token


def test_a_replayed_proof_is_refused(verifier: CapabilityVerifier, holder: Holder, bound: str) -> None:
    proof = proof_for(holder, bound)
    verify(verifier, bound, proof)
    assert "already used" in refused(verifier, bound, proof).description


def test_a_replayed_proof_is_refused_by_another_process_sharing_redis(
        fake: FakeIssuer, make_verifier: Make, holder: Holder, bound: str) -> None:
    import redis

    client = redis.Redis.from_url(need_service("ISSUER_TEST_REDIS_URL", "Redis"))
    prefix = f"test-dpop-{time.time_ns()}:"
    one = make_verifier(replay_cache=client, replay_key_prefix=prefix)
    two = make_verifier(replay_cache=client, replay_key_prefix=prefix)
    proof = proof_for(holder, bound)
    verify(one, bound, proof)
    assert "already used" in refused(two, bound, proof).description
    client.close()


# --------------------------------------------------------------------------- the integrations


def test_flask_handles_dpop_with_no_extra_code(verifier: CapabilityVerifier, holder: Holder, bound: str) -> None:
    app = flask.Flask(__name__)

    @app.get("/tickets")
    @CapabilityProtect(verifier)("tickets:read")
    def tickets() -> dict[str, Any]:
        return {"user": flask.g.capability.sub}

    client = app.test_client()
    url = "http://localhost/tickets"
    ok = client.get("/tickets", headers={"Authorization": f"DPoP {bound}",
                                         "DPoP": proof_for(holder, bound, htu=url)})
    assert ok.status_code == 200 and ok.get_json() == {"user": "alice"}
    stolen = client.get("/tickets", headers={"Authorization": f"DPoP {bound}",
                                             "DPoP": proof_for(Holder(), bound, htu=url)})
    assert stolen.status_code == 401 and stolen.get_json()["error"] == "invalid_dpop_proof"
    assert stolen.headers["WWW-Authenticate"].startswith('DPoP error="invalid_dpop_proof"')
    as_bearer = client.get("/tickets", headers={"Authorization": f"Bearer {bound}"})
    assert as_bearer.status_code == 401 and as_bearer.get_json()["error"] == "invalid_dpop_proof"


def test_asgi_handles_dpop_with_no_extra_code(verifier: CapabilityVerifier, holder: Holder, bound: str) -> None:
    async def tickets(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.state.capability.sub})

    app = CapabilityMiddleware(Starlette(routes=[Route("/tickets", tickets)]), verifier, "tickets:read")
    client = TestClient(app, base_url="https://tickets.example")
    ok = client.get("/tickets", headers={"Authorization": f"DPoP {bound}", "DPoP": proof_for(holder, bound)})
    assert ok.status_code == 200 and ok.json() == {"user": "alice"}
    wrong_url = client.get("/tickets", headers={
        "Authorization": f"DPoP {bound}", "DPoP": proof_for(holder, bound, htu="https://evil.example/tickets")})
    assert wrong_url.status_code == 401 and wrong_url.json()["error"] == "invalid_dpop_proof"
    assert 'algs="ES256 EdDSA"' in wrong_url.headers["www-authenticate"]


def test_an_unknown_scheme_is_no_token(verifier: CapabilityVerifier, bound: str) -> None:
    with pytest.raises(MissingToken):
        verifier.verify_request(authorization=f"Basic {bound}", method="GET", url=URL)
