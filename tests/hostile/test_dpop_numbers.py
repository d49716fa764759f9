"""A DPoP proof's numbers must be finite JSON numbers: NaN passed the ``iat`` window (every comparison with NaN
is false) and then crashed the code that used it, a 500 at ``/token`` and an HTML 500 in a Flask tool."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import flask
import jwt
import pytest

from issuer.dpop import DPoPError, access_token_hash, verify_proof
from issuer.sdk.verifier import CapabilityVerifier
from issuer.sdk.verifier.flask import CapabilityProtect
from tests.conftest import LiveIssuer
from tests.dpop.test_proof import Holder
from tests.dpop.test_token_endpoint import exchange, token_url
from tests.hostile.conftest import audit_count, last_audit
from tests.sdk.verifier.conftest import FakeIssuer
from tests.test_exchange_e2e import error_of

#: iat values a proof may not carry: not numbers JSON allows, or not numbers at all.
BAD_IAT: dict[str, Any] = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf"),
                           "true": True}


@pytest.mark.parametrize("iat", sorted(BAD_IAT))
def test_a_proof_with_a_non_finite_iat_is_refused_at_the_token_endpoint(live: LiveIssuer, iat: str) -> None:
    rows = audit_count(live)
    resp = exchange(live, proofs=[Holder().proof(htu=token_url(live), iat=BAD_IAT[iat])])
    desc = error_of(resp, 400, "invalid_dpop_proof")["error_description"]
    assert desc.startswith("DPoP proof:")
    assert audit_count(live) == rows + 1 and last_audit(live).reason == "invalid_dpop_proof"


@pytest.mark.parametrize("iat", sorted(BAD_IAT))
def test_a_proof_with_a_non_finite_iat_is_a_401_json_in_a_flask_tool(fake: FakeIssuer, verifier: CapabilityVerifier,
                                                                      iat: str) -> None:
    holder = Holder()
    bound = fake.token(cnf={"jkt": holder.jkt})
    app = flask.Flask(__name__)

    @app.get("/tickets")
    @CapabilityProtect(verifier)("tickets:read")
    def tickets() -> dict[str, Any]:
        return {"user": flask.g.capability.sub}

    url = "http://localhost/tickets"
    proof = holder.proof(htm="GET", htu=url, ath=access_token_hash(bound), iat=BAD_IAT[iat])
    resp = app.test_client().get("/tickets", headers={"Authorization": f"DPoP {bound}", "DPoP": proof})
    assert resp.status_code == 401, resp.get_data(as_text=True)[:200]
    assert resp.get_json()["error"] == "invalid_dpop_proof"
    good = holder.proof(htm="GET", htu=url, ath=access_token_hash(bound))
    assert app.test_client().get("/tickets", headers={"Authorization": f"DPoP {bound}", "DPoP": good}).status_code \
        == 200


@pytest.mark.parametrize("claims", [{"htm": "GET"}, {"iat": 1}], ids=["htm", "iat"])
def test_a_proof_with_a_duplicate_member_is_refused(claims: dict[str, Any]) -> None:
    """Two parsers could read two different proofs out of one text: a duplicate member is no proof."""
    holder = Holder()
    proof = holder.proof(htu="https://issuer.example/token", iat=int(time.time()))
    payload = proof.split(".")[1]
    text = base64.urlsafe_b64decode(payload + "==").decode()
    name, value = next(iter(claims.items()))
    doubled = text[:-1] + f',"{name}":{json.dumps(value)}}}'
    signed = jwt.api_jws.encode(doubled.encode(), holder.key, algorithm="ES256",
                                headers={"typ": "dpop+jwt", "jwk": holder.jwk})
    with pytest.raises(DPoPError, match="not a compact JWS"):
        verify_proof(signed, method="POST", url="https://issuer.example/token", now=time.time())
