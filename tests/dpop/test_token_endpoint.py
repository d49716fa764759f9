"""DPoP at the token endpoint, over real HTTP: a proof binds the capability to its key; every bad proof,
a replayed one (also at a second replica) and a bound user token without its key are refused."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import httpx
import jwt
import pytest

from issuer.app import create_app
from tests.conftest import ACCESS_TOKEN, TOKEN_EXCHANGE, LiveIssuer, make_settings, need_service
from tests.dpop.test_proof import Holder
from tests.support.fake_idp import FakeIdP
from tests.test_exchange_e2e import error_of


def exchange(live: LiveIssuer, *, proofs: list[str] | None = None, subject_token: str | None = None) -> httpx.Response:
    pairs = [("grant_type", TOKEN_EXCHANGE), ("subject_token", subject_token or live.idp.token()),
             ("subject_token_type", ACCESS_TOKEN), ("resource", "https://tickets.example"), ("scope", "tickets:read")]
    headers = [("Content-Type", "application/x-www-form-urlencoded"), *(("DPoP", p) for p in proofs or [])]
    return live.http.post("/token", content=urlencode(pairs), headers=headers,
                          auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))


def token_url(live: LiveIssuer) -> str:
    return live.url + "/token"


def test_a_proof_binds_the_capability_to_its_key(live: LiveIssuer) -> None:
    holder = Holder()
    resp = exchange(live, proofs=[holder.proof(htu=token_url(live))])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "DPoP"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["cnf"] == {"jkt": holder.jkt}
    assert claims["act"]["sub"] == "mcp-helpdesk"


def test_without_a_proof_the_capability_stays_bearer(live: LiveIssuer) -> None:
    body = exchange(live).json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in jwt.decode(body["access_token"], options={"verify_signature": False})


def test_a_replayed_proof_is_refused_here_and_at_another_replica(live: LiveIssuer) -> None:
    """A proof captured in transit cannot be sent again, to this process or to any other."""
    proof = Holder().proof(htu=token_url(live))
    assert exchange(live, proofs=[proof]).status_code == 200
    desc = error_of(exchange(live, proofs=[proof]), 400, "invalid_dpop_proof")["error_description"]
    assert "already used" in desc
    replica = create_app(live.settings).test_client()  # same database (or Redis): the same replay store
    pairs = {"grant_type": TOKEN_EXCHANGE, "subject_token": live.idp.token(), "subject_token_type": ACCESS_TOKEN,
             "resource": "https://tickets.example", "scope": "tickets:read"}
    other = Holder().proof(htu=token_url(live))
    assert replica.post("/token", data=pairs, headers={"DPoP": other},
                        auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"])).status_code == 200
    assert "already used" in error_of(exchange(live, proofs=[other]), 400, "invalid_dpop_proof")["error_description"]
    replica.application.extensions["issuer"].db.dispose()


@pytest.mark.parametrize("case", ["two headers", "wrong htu", "wrong htm", "private key", "garbage"])
def test_bad_proofs_are_refused_and_audited(live: LiveIssuer, case: str) -> None:
    holder = Holder()
    url = token_url(live)
    proofs = {
        "two headers": [holder.proof(htu=url), holder.proof(htu=url)],
        "wrong htu": [holder.proof(htu=live.url + "/introspect")],
        "wrong htm": [holder.proof(htu=url, htm="GET")],
        "private key": [holder.proof(htu=url, header={"jwk": {**holder.jwk, "d": "AAAA"}})],
        "garbage": ["not-a-proof"],
    }[case]
    resp = exchange(live, proofs=proofs)
    desc = error_of(resp, 400, "invalid_dpop_proof")["error_description"]
    assert desc.startswith("DPoP proof:") and "eyJ" not in desc
    if case == "two headers":
        assert "exactly one" in desc
    from issuer.audit import query_audit

    assert query_audit(live.db, newest_first=True, limit=1)[0].reason == "invalid_dpop_proof"


def test_a_bound_user_token_needs_a_proof_with_its_key(live: LiveIssuer) -> None:
    """A user token bound to the MCP server's key (cnf.jkt) is useless to whoever stole it."""
    holder = Holder()
    bound = live.idp.token(cnf={"jkt": holder.jkt})
    url = token_url(live)
    error_of(exchange(live, subject_token=bound), 400, "invalid_grant")
    error_of(exchange(live, subject_token=bound, proofs=[Holder().proof(htu=url)]), 400, "invalid_grant")
    resp = exchange(live, subject_token=bound, proofs=[holder.proof(htu=url)])
    assert resp.status_code == 200, resp.text
    assert resp.json()["token_type"] == "DPoP"


def test_metadata_names_the_proof_algorithms(live: LiveIssuer) -> None:
    meta = live.http.get("/.well-known/oauth-authorization-server").json()
    assert meta["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA"]


def test_two_replicas_share_the_seen_proofs_through_redis(tmp_path: Path, database_url: str, idp: FakeIdP) -> None:
    """Two issuer processes on one Redis: a proof accepted by one is refused by the other."""
    redis_url = need_service("ISSUER_TEST_REDIS_URL", "Redis")
    one = LiveIssuer(make_settings(tmp_path, database_url, redis_url=redis_url), idp)
    one.standard_setup()
    two = LiveIssuer(make_settings(tmp_path, database_url, redis_url=redis_url, keys_dir=tmp_path / "keys",
                                   url=one.url), idp)
    two.secrets = one.secrets
    try:
        proof = Holder().proof(htu=token_url(one))  # both answer as the same issuer URL, as replicas do
        assert exchange(one, proofs=[proof]).status_code == 200
        desc = error_of(exchange(two, proofs=[proof]), 400, "invalid_dpop_proof")["error_description"]
        assert "already used" in desc
    finally:
        two.close()
        one.close()


def test_a_bound_capability_introspects_as_dpop_with_its_key(live: LiveIssuer) -> None:
    holder = Holder()
    token = exchange(live, proofs=[holder.proof(htu=token_url(live))]).json()["access_token"]
    info = live.post_form("/introspect", [("token", token)],
                          auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"])).json()
    assert info["active"] is True and info["token_type"] == "DPoP" and info["cnf"] == {"jkt": holder.jkt}
