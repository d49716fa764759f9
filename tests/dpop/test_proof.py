"""verify_proof: each check of RFC 9449 section 4.3, with the forged or stolen proof it stops."""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from freezegun import freeze_time
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from issuer.dpop import DPoPError, access_token_hash, htu_matches, jwk_thumbprint, verify_proof

URL = "https://issuer.example/token"


class Holder:
    """A client's DPoP key pair, making proofs."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        if alg == "ES256":
            self.key: Any = ec.generate_private_key(ec.SECP256R1())
            self.jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        else:
            self.key = ed25519.Ed25519PrivateKey.generate()
            self.jwk = OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True)

    @property
    def jkt(self) -> str:
        return jwk_thumbprint(self.jwk)

    def proof(self, *, htm: str = "POST", htu: str = URL, iat: float | None = None,
              header: dict[str, Any] | None = None, drop: tuple[str, ...] = (), sign_with: Any = None,
              **claims: Any) -> str:
        body: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": htm, "htu": htu,
                                "iat": int(time.time()) if iat is None else iat, **claims}
        for k in drop:
            body.pop(k, None)
        hdr = {"typ": "dpop+jwt", "jwk": self.jwk, **(header or {})}
        return jwt.encode(body, sign_with or self.key, algorithm=self.alg, headers=hdr)


def check(proof: str, **kw: Any) -> Any:
    kw.setdefault("method", "POST")
    kw.setdefault("url", URL)
    kw.setdefault("now", time.time())
    return verify_proof(proof, **kw)


def refused(proof: str, reason: str, **kw: Any) -> None:
    with pytest.raises(DPoPError, match=reason):
        check(proof, **kw)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_good_proof_names_its_key(alg: str) -> None:
    holder = Holder(alg)
    proof = check(holder.proof())
    assert proof.jkt == holder.jkt and len(proof.jkt) == 43


def test_the_thumbprint_is_rfc_7638() -> None:
    """RFC 7638 section 3.1's example key and thumbprint."""
    jwk = {"kty": "RSA", "e": "AQAB",
           "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
                "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaS"
                "qzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksIN"
                "HaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_typ_must_be_dpop_jwt() -> None:
    """An access token or ID token signed by the client is not a proof."""
    refused(Holder().proof(header={"typ": "JWT"}), "typ")


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256"])
def test_only_the_allowlisted_asymmetric_algorithms(alg: str) -> None:
    """`none` and HMAC prove nothing about a private key."""
    holder = Holder()
    good = holder.proof()
    head = jwt.utils.base64url_encode(jwt.api_jws.json.dumps({"typ": "dpop+jwt", "alg": alg,
                                                              "jwk": holder.jwk}).encode()).decode()
    refused(head + good[good.index("."):], "alg must be")


def test_a_private_key_in_the_header_is_refused() -> None:
    holder = Holder()
    private = {**holder.jwk, "d": "AAAA"}
    refused(holder.proof(header={"jwk": private}), "private key")


def test_a_key_of_another_type_than_alg_is_refused() -> None:
    refused(Holder().proof(header={"jwk": Holder("EdDSA").jwk}), "does not fit")


def test_a_proof_signed_by_another_key_than_its_jwk_is_refused() -> None:
    """Copying someone's public key into the header proves nothing: the signature must match it."""
    victim, attacker = Holder(), Holder()
    refused(attacker.proof(header={"jwk": victim.jwk}), "signature")


def test_no_jwk_header_is_refused() -> None:
    holder = Holder()
    token = jwt.encode({"jti": "x", "htm": "POST", "htu": URL, "iat": int(time.time())}, holder.key,
                       algorithm="ES256", headers={"typ": "dpop+jwt"})
    refused(token, "jwk header")


def test_method_and_uri_must_match_the_request() -> None:
    """A proof made for another request (a GET, another server) cannot be replayed here."""
    holder = Holder()
    refused(holder.proof(htm="GET"), "htm")
    refused(holder.proof(htu="https://other.example/token"), "htu")
    refused(holder.proof(htu="https://issuer.example/introspect"), "htu")
    check(holder.proof(htu="https://ISSUER.example:443/token?x=1#f"))  # case, default port, query, fragment


def test_htu_comparison() -> None:
    assert htu_matches("https://a.example/t", "https://A.EXAMPLE:443/t?q=1")
    assert not htu_matches("http://a.example/t", "https://a.example/t")
    assert not htu_matches("https://a.example:8443/t", "https://a.example/t")
    assert not htu_matches("not a url", "https://a.example/t")


def test_iat_window() -> None:
    """A proof from the future, or older than the window, is refused: stolen proofs age out."""
    holder = Holder()
    with freeze_time("2030-01-01T00:00:00Z"):
        now = time.time()
        check(holder.proof(iat=now - 60), now=now)
        refused(holder.proof(iat=now + 30), "future", now=now)
        refused(holder.proof(iat=now - 120), "too old", now=now)
        refused(holder.proof(iat="soon"), "iat", now=now)
        refused(holder.proof(iat=True), "iat", now=now)


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_every_required_claim(claim: str) -> None:
    refused(Holder().proof(drop=(claim,)), claim)


def test_ath_binds_the_proof_to_one_access_token() -> None:
    holder = Holder()
    check(holder.proof(ath=access_token_hash("token-a")), access_token="token-a")
    refused(holder.proof(ath=access_token_hash("token-a")), "ath", access_token="token-b")
    refused(holder.proof(), "ath", access_token="token-a")


@pytest.mark.parametrize("proof", ["", "a.b", "a.b.c.d", "!!.!!.!!", "x" * 9000, "e30.e30.e30"])
def test_malformed_proofs(proof: str) -> None:
    with pytest.raises(DPoPError):
        check(proof)


def test_critical_headers_are_refused() -> None:
    refused(Holder().proof(header={"crit": ["exp"]}), "critical")
