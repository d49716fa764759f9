"""Revocation over HTTP: by token (RFC 7009), by jti and by subject (CLI), and the feed verifiers poll."""

from __future__ import annotations

from typing import Any

import jwt
from click.testing import CliRunner
from freezegun import freeze_time

from issuer.cli import cli
from issuer.revocation import sub_digest
from tests.conftest import LiveIssuer
from tests.test_delegation_e2e import CHAIN_POLICY
from tests.test_exchange_e2e import error_of


def _cli(live: LiveIssuer, *args: str) -> str:
    env = {"ISSUER_DATABASE_URL": live.settings.database_url, "ISSUER_KEYS_DIR": str(live.settings.keys_dir)}
    res = CliRunner().invoke(cli, list(args), env=env)
    assert res.exit_code == 0, res.output
    return res.output


def _introspect(live: LiveIssuer, token: str) -> bool:
    resp = live.post_form("/introspect", [("token", token)], auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    return bool(resp.json()["active"])


def feed(live: LiveIssuer, **params: Any) -> dict[str, Any]:
    """The feed as a verifier reads it: a JWS of typ revocation-feed+jwt signed by a key of the issuer's JWKS."""
    resp = live.http.get("/revocations", params=params)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/jwt"
    assert resp.headers["cache-control"] == "no-store"
    header = jwt.get_unverified_header(resp.text)
    assert header["typ"] == "revocation-feed+jwt"
    jwk = next(k for k in live.http.get("/jwks.json").json()["keys"] if k["kid"] == header["kid"])
    return jwt.decode(resp.text, jwt.PyJWK(jwk).key, algorithms=["ES256", "EdDSA"], issuer=live.url)


def test_feed_lists_revoked_jtis_and_hashed_subjects(live: LiveIssuer) -> None:
    md = live.http.get("/.well-known/oauth-authorization-server").json()
    assert md["revocation_feed_endpoint"] == live.url + "/revocations"
    empty = feed(live)
    assert empty["jtis"] == [] and empty["subjects"] == [] and empty["clients"] == []
    token = live.exchange().json()["access_token"]
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    live.post_form("/revoke", [("token", token)], auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    first = feed(live)
    assert [e["jti"] for e in first["jtis"]] == [jti]
    assert first["version"] > empty["version"]
    assert feed(live, since=first["issued_at"])["jtis"] == []
    _cli(live, "revoke", "subject", "idp-a:alice")
    second = feed(live, since=first["issued_at"] - 5)
    assert [s["sub_sha256"] for s in second["subjects"]] == [sub_digest("idp-a:alice")]
    assert second["version"] > first["version"]
    _cli(live, "revoke", "client", "mcp-other")
    third = feed(live)
    assert [c["client_id"] for c in third["clients"]] == ["mcp-other"] and third["version"] > second["version"]
    assert "alice" not in jwt.decode(live.http.get("/revocations").text,
                                     options={"verify_signature": False}).__repr__()  # the feed names nobody
    error_of(live.http.get("/revocations", params={"since": "nan"}), 400, "invalid_request")
    error_of(live.http.get("/revocations", params={"since": "yesterday"}), 400, "invalid_request")
    error_of(live.http.get("/revocations", params={"since": "1e12"}), 400, "invalid_request")  # no overflow 500
    error_of(live.http.get("/revocations", params={"since": "-5"}), 400, "invalid_request")


def test_subject_revocation_voids_earlier_capabilities_only(live: LiveIssuer) -> None:
    with freeze_time("2030-01-01T00:00:00Z") as frozen:
        before = live.exchange(subject_token=live.idp.token()).json()["access_token"]
        frozen.tick(2)
        _cli(live, "revoke", "subject", "idp-a:alice")
        frozen.tick(2)
        after = live.exchange(subject_token=live.idp.token()).json()["access_token"]
        assert not _introspect(live, before)
        assert _introspect(live, after)


def test_revoke_by_jti_from_the_audit_trail(live: LiveIssuer) -> None:
    live.add_client("tickets-svc", "https://tickets.example", ["files"], may_chain=True)
    live.apply(CHAIN_POLICY)
    token = live.exchange().json()["access_token"]
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert all(c in "0123456789abcdef" for c in jti)  # pasteable: never an option-like '-...'
    assert "revoked" in _cli(live, "revoke", "jti", jti)
    assert not _introspect(live, token)
    error_of(live.exchange("tickets-svc", token, resource="https://files.example", scope="files:read"),
             400, "invalid_grant")
    env = {"ISSUER_DATABASE_URL": live.settings.database_url, "ISSUER_KEYS_DIR": str(live.settings.keys_dir)}
    res = CliRunner().invoke(cli, ["revoke", "jti", "never-issued"], env=env)
    assert res.exit_code == 2 and "never-issued" in res.output


def test_revoke_subject_needs_a_registered_namespace(live: LiveIssuer) -> None:
    env = {"ISSUER_DATABASE_URL": live.settings.database_url, "ISSUER_KEYS_DIR": str(live.settings.keys_dir)}
    for typo in ("idpa:alice", "alice", "idp-a:"):
        res = CliRunner().invoke(cli, ["revoke", "subject", typo], env=env)
        assert res.exit_code == 2, (typo, res.output)
    assert feed(live)["subjects"] == []
