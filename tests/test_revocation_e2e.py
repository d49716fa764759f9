"""Revocation over HTTP: by token (RFC 7009), by jti and by subject (CLI), and the feed verifiers poll."""

from __future__ import annotations

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


def test_feed_lists_revoked_jtis_and_hashed_subjects(live: LiveIssuer) -> None:
    md = live.http.get("/.well-known/oauth-authorization-server").json()
    assert md["revocation_feed_endpoint"] == live.url + "/revocations"
    empty = live.http.get("/revocations").json()
    assert empty["jtis"] == [] and empty["subjects"] == []
    token = live.exchange().json()["access_token"]
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    live.post_form("/revoke", [("token", token)], auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    feed = live.http.get("/revocations").json()
    assert [e["jti"] for e in feed["jtis"]] == [jti]
    assert live.http.get("/revocations", params={"since": feed["issued_at"]}).json()["jtis"] == []
    _cli(live, "revoke", "subject", "idp-a:alice")
    subjects = live.http.get("/revocations", params={"since": feed["issued_at"] - 5}).json()["subjects"]
    assert [s["sub_sha256"] for s in subjects] == [sub_digest("idp-a:alice")]
    assert "alice" not in live.http.get("/revocations").text  # the feed names nobody
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
    assert live.http.get("/revocations").json()["subjects"] == []
