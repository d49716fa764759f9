"""End to end: a live issuer over HTTP, real tokens from a real (fake) IdP.

Happy paths, every error of DESIGN section 3, and one test per attack the
checks stop. Each asserts the exact error code or claim.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from issuer.models import AuditEvent
from tests.conftest import ACCESS_TOKEN, TOKEN_EXCHANGE, LiveIssuer
from tests.support.fake_idp import FakeIdP


def verify(live: LiveIssuer, token: str, audience: str = "https://tickets.example") -> dict[str, Any]:
    jwks = live.http.get("/jwks.json").json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
    return jwt.decode(token, key, algorithms=["ES256", "EdDSA"], audience=audience, issuer=live.url)


def error_of(resp: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"] == error, body
    assert body["error_description"]
    assert "access_token" not in body
    assert resp.headers.get("cache-control") == "no-store"
    return body


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ----------------------------------------------------------------------------- happy paths


def test_exchange_by_resource(live: LiveIssuer) -> None:
    resp = live.exchange()
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["issued_token_type"] == ACCESS_TOKEN
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "tickets:read"
    assert 0 < body["expires_in"] <= 300
    claims = verify(live, body["access_token"])
    header = jwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    assert claims["sub"] == "idp-a:alice"
    assert claims["aud"] == "https://tickets.example"
    assert claims["client_id"] == "mcp-helpdesk"
    assert claims["act"] == {"sub": "mcp-helpdesk"}
    assert claims["scope"] == "tickets:read"
    assert claims["pol"] == 1
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["nbf"] == claims["iat"]
    assert len(claims["jti"]) >= 20


def test_exchange_by_audience_name_and_post_auth(live: LiveIssuer) -> None:
    resp = live.exchange(resource=None, extra=[("audience", "tickets")], auth="post")
    assert resp.status_code == 200, resp.text
    assert verify(live, resp.json()["access_token"])["aud"] == "https://tickets.example"


def test_rs256_subject_token_and_array_audience(live: LiveIssuer) -> None:
    token = live.idp.token(alg="RS256", aud=["https://other.example", "https://mcp.helpdesk.example"], drop=("nbf",))
    assert live.exchange(subject_token=token).status_code == 200


def test_scope_omitted_gets_rule_defaults(live: LiveIssuer) -> None:
    resp = live.exchange(scope=None)
    assert resp.status_code == 200 and resp.json()["scope"] == "tickets:read"


def test_policy_lifetime_ceiling(live: LiveIssuer) -> None:
    resp = live.exchange(resource="https://files.example", scope="files:read")
    assert resp.status_code == 200 and resp.json()["expires_in"] == 120


def test_lifetime_never_outlives_the_subject_token(live: LiveIssuer) -> None:
    resp = live.exchange(subject_token=live.idp.token(lifetime=45))
    assert resp.status_code == 200 and 40 <= resp.json()["expires_in"] <= 45


def test_subject_act_is_nested(live: LiveIssuer) -> None:
    token = live.idp.token(act={"sub": "portal-agent"})
    claims = verify(live, live.exchange(subject_token=token).json()["access_token"])
    assert claims["act"] == {"sub": "mcp-helpdesk", "act": {"sub": "portal-agent"}}


def test_every_grant_has_its_audit_row(live: LiveIssuer) -> None:
    from sqlalchemy import select

    jti = verify(live, live.exchange().json()["access_token"])["jti"]
    live.exchange(scope="tickets:write")
    with live.db.session() as s:
        rows = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    granted = [r for r in rows if r.decision == "granted"]
    denied = [r for r in rows if r.decision == "denied"]
    assert [r.jti for r in granted] == [jti]
    assert granted[0].sub == "idp-a:alice" and granted[0].tool == "tickets" and granted[0].policy_version == 1
    assert denied and denied[0].reason == "scope_not_entitled" and denied[0].jti is None


def test_new_policy_version_takes_effect(live: LiveIssuer) -> None:
    assert live.exchange(scope="tickets:write").status_code == 400
    version = live.apply("""
rules:
  - id: support-tickets-write
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read, tickets:write]
""")
    resp = live.exchange(scope="tickets:write")
    assert resp.status_code == 200, resp.text
    assert verify(live, resp.json()["access_token"])["pol"] == version == 2


def test_metadata_and_jwks(live: LiveIssuer) -> None:
    md = live.http.get("/.well-known/oauth-authorization-server").json()
    assert md["issuer"] == live.url
    assert md["token_endpoint"] == live.url + "/token"
    assert TOKEN_EXCHANGE in md["grant_types_supported"]
    assert "none" not in md["token_endpoint_auth_methods_supported"]
    jwks = live.http.get(md["jwks_uri"])
    assert "max-age" in jwks.headers["cache-control"]
    keys = jwks.json()["keys"]
    assert len(keys) == 2  # active + the pre-published next key
    for k in keys:
        assert not {"d", "p", "q", "k"} & set(k)


# ----------------------------------------------------------------------------- request errors


@pytest.mark.parametrize(
    ("extra", "drop", "error"),
    [
        ([], "subject_token", "invalid_request"),
        ([], "subject_token_type", "invalid_request"),
        ([("subject_token_type", ACCESS_TOKEN)], None, "invalid_request"),  # repeated
        ([("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")], None, "invalid_request"),
        ([("actor_token", "x")], None, "invalid_request"),  # without actor_token_type
        ([("resource", "https://files.example")], None, "invalid_target"),  # two targets
        ([("audience", "files")], None, "invalid_target"),  # resource + audience
    ],
)
def test_malformed_requests(live: LiveIssuer, extra: list[tuple[str, str]], drop: str | None, error: str) -> None:
    data = [("grant_type", TOKEN_EXCHANGE), ("subject_token", live.idp.token()),
            ("subject_token_type", ACCESS_TOKEN), ("resource", "https://tickets.example"), *extra]
    data = [(k, v) for k, v in data if k != drop]
    resp = live.post_form("/token", data, auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    error_of(resp, 400, error)


def test_unsupported_subject_token_type(live: LiveIssuer) -> None:
    data = {"grant_type": TOKEN_EXCHANGE, "subject_token": live.idp.token(), "resource": "https://tickets.example",
            "subject_token_type": "urn:ietf:params:oauth:token-type:saml2"}
    error_of(live.http.post("/token", data=data, auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"])),
             400, "invalid_request")


def test_unknown_grant_type(live: LiveIssuer) -> None:
    resp = live.http.post("/token", data={"grant_type": 'password"\\\u00e9'},
                          auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    error_of(resp, 400, "unsupported_grant_type")


def test_parameters_in_query_string_are_refused(live: LiveIssuer) -> None:
    token = live.idp.token()
    resp = live.http.post(f"/token?subject_token={token}", data={"grant_type": TOKEN_EXCHANGE},
                          auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    body = error_of(resp, 400, "invalid_request")
    assert token not in json.dumps(body)


def test_json_body_is_refused(live: LiveIssuer) -> None:
    resp = live.http.post("/token", json={"grant_type": TOKEN_EXCHANGE},
                          auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"]))
    error_of(resp, 400, "invalid_request")


def test_oversized_body(live: LiveIssuer) -> None:
    resp = live.http.post("/token", data={"grant_type": TOKEN_EXCHANGE, "subject_token": "a" * 200_000})
    error_of(resp, 413, "invalid_request")


def test_unknown_route_and_method_are_json(live: LiveIssuer) -> None:
    error_of(live.http.get("/nope"), 404, "not_found")
    error_of(live.http.get("/token"), 405, "method_not_allowed")


# ----------------------------------------------------------------------------- client authentication


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_wrong_secret(live: LiveIssuer, auth: str) -> None:
    resp = live.exchange(secret="not-the-secret-at-all", auth=auth)
    error_of(resp, 401, "invalid_client")


def test_unknown_client_and_no_auth(live: LiveIssuer) -> None:
    error_of(live.exchange("nobody", secret="whatever-secret"), 401, "invalid_client")
    error_of(live.exchange(auth="none"), 401, "invalid_client")


def test_malformed_basic_header(live: LiveIssuer) -> None:
    resp = live.http.post("/token", data={"grant_type": TOKEN_EXCHANGE},
                          headers={"Authorization": "Basic %%%not-base64"})
    error_of(resp, 401, "invalid_client")
    resp = live.http.post("/token", data={"grant_type": TOKEN_EXCHANGE},
                          headers={"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()})
    error_of(resp, 401, "invalid_client")


def test_two_authentication_methods_at_once(live: LiveIssuer) -> None:
    secret = live.secrets["mcp-helpdesk"]
    resp = live.exchange(extra=[("client_id", "mcp-helpdesk"), ("client_secret", secret)])
    error_of(resp, 400, "invalid_request")


def test_private_key_jwt(live: LiveIssuer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="c1", alg="ES256")
    live.add_client("mcp-pkjwt", "https://mcp.pkjwt.example", ["tickets"], auth_methods=("private_key_jwt",),
                    jwks={"keys": [jwk]})
    live.apply("""
rules:
  - id: r
    idp: idp-a
    groups: [support]
    clients: [mcp-pkjwt]
    tool: tickets
    scopes: [tickets:read]
""")
    import time

    def assertion(jti: str) -> str:
        now = int(time.time())
        return jwt.encode({"iss": "mcp-pkjwt", "sub": "mcp-pkjwt", "aud": live.url + "/token", "iat": now,
                           "exp": now + 60, "jti": jti}, key, algorithm="ES256", headers={"kid": "c1"})

    def call(a: str) -> httpx.Response:
        return live.http.post("/token", data={
            "grant_type": TOKEN_EXCHANGE, "subject_token": live.idp.token(aud="https://mcp.pkjwt.example"),
            "subject_token_type": ACCESS_TOKEN, "resource": "https://tickets.example", "scope": "tickets:read",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": a})

    first = assertion("a-1")
    assert call(first).status_code == 200
    replayed = error_of(call(first), 401, "invalid_client")
    long_lived = jwt.encode({"iss": "mcp-pkjwt", "sub": "mcp-pkjwt", "aud": live.url + "/token",
                             "exp": int(time.time()) + 86400, "jti": "a-3"}, key, algorithm="ES256",
                            headers={"kid": "c1"})
    error_of(call(long_lived), 401, "invalid_client")  # a day-long assertion would need a day of memory
    ghost = jwt.encode({"iss": "ghost", "sub": "ghost", "aud": live.url + "/token", "exp": int(time.time()) + 60,
                        "jti": "a-4"}, key, algorithm="ES256")
    unknown = error_of(call(ghost), 401, "invalid_client")
    assert unknown["error_description"] == replayed["error_description"]  # no client enumeration
    secret_only = jwt.encode({"iss": "mcp-helpdesk", "sub": "mcp-helpdesk", "aud": live.url + "/token",
                              "exp": int(time.time()) + 60, "jti": "a-5"}, key, algorithm="ES256")
    assert error_of(call(secret_only), 401, "invalid_client")["error_description"] == unknown["error_description"]
    forged = jwt.encode({"iss": "mcp-pkjwt", "sub": "mcp-pkjwt", "aud": live.url + "/token", "exp": 2**31,
                         "jti": "a-2"}, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"kid": "c1"})
    error_of(call(forged), 401, "invalid_client")


# ----------------------------------------------------------------------------- targets and scopes


def test_unknown_tool(live: LiveIssuer) -> None:
    error_of(live.exchange(resource="https://unknown.example"), 400, "invalid_target")
    error_of(live.exchange(resource=None, extra=[("audience", "nope")]), 400, "invalid_target")
    error_of(live.exchange(resource=None), 400, "invalid_target")


def test_unknown_and_unreachable_tools_look_the_same(live: LiveIssuer) -> None:
    """A client cannot probe which tools exist: both answers are identical."""
    unknown = error_of(live.exchange(resource="https://unknown.example"), 400, "invalid_target")
    token = live.idp.token(sub="mallory", groups=["contractor"])
    unreachable = error_of(live.exchange(subject_token=token), 400, "invalid_target")
    assert unknown == unreachable


def test_tool_outside_client_allowlist(live: LiveIssuer) -> None:
    token = live.idp.token(aud="https://mcp.other.example")
    error_of(live.exchange("mcp-other", token, resource="https://files.example", scope="files:read"),
             400, "invalid_target")


def test_default_deny_for_user_without_rule(live: LiveIssuer) -> None:
    token = live.idp.token(sub="mallory", groups=["contractor"])
    error_of(live.exchange(subject_token=token), 400, "invalid_target")


def test_new_tool_is_reachable_by_nobody(live: LiveIssuer) -> None:
    from issuer.registry import ScopeSpec, add_tool

    add_tool(live.db, name="payroll", resource_uri="https://payroll.example", scopes=[ScopeSpec("payroll:read")])
    error_of(live.exchange(resource="https://payroll.example", scope="payroll:read"), 400, "invalid_target")


def test_scope_escalation_is_refused(live: LiveIssuer) -> None:
    error_of(live.exchange(scope="tickets:read tickets:write"), 400, "invalid_scope")


def test_undefined_scope(live: LiveIssuer) -> None:
    error_of(live.exchange(scope="tickets:delete-everything"), 400, "invalid_scope")


# ----------------------------------------------------------------------------- attacks on the subject token


def _forge(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    h = b64(json.dumps(header).encode())
    p = b64(json.dumps(payload).encode())
    sig = b64(sign(f"{h}.{p}".encode())) if sign else ""
    return f"{h}.{p}.{sig}"


def _claims(idp: FakeIdP, **kw: Any) -> dict[str, Any]:
    import time

    now = int(time.time())
    c = {"iss": idp.issuer, "sub": "alice", "aud": "https://mcp.helpdesk.example", "iat": now, "exp": now + 300,
         "groups": ["support"]}
    c.update(kw)
    return c


def test_alg_none(live: LiveIssuer) -> None:
    token = _forge({"alg": "none", "typ": "at+jwt"}, _claims(live.idp))
    body = error_of(live.exchange(subject_token=token), 400, "invalid_grant")
    assert token not in body["error_description"]


def test_hs256_signed_with_the_public_key(live: LiveIssuer) -> None:
    kid = live.idp.kid_for("RS256")
    pem = live.idp.private_key(kid).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = _forge({"alg": "HS256", "kid": kid}, _claims(live.idp),
                   lambda m: hmac.new(pem, m, hashlib.sha256).digest())
    error_of(live.exchange(subject_token=token), 400, "invalid_grant")


def test_unknown_kid(live: LiveIssuer) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(_claims(live.idp), stranger, algorithm="ES256", headers={"kid": "not-published"})
    error_of(live.exchange(subject_token=token), 400, "invalid_grant")


def test_jku_header_is_never_followed(live: LiveIssuer) -> None:
    with _attacker() as attacker:
        kid = attacker.kid_for("ES256")
        token = jwt.encode(_claims(live.idp), attacker.private_key(kid), algorithm="ES256",
                           headers={"kid": kid, "jku": attacker.jwks_uri})
        error_of(live.exchange(subject_token=token), 400, "invalid_grant")
        assert attacker.fetches == 0


def test_embedded_jwk_header_is_never_trusted(live: LiveIssuer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    token = jwt.encode(_claims(live.idp), key, algorithm="ES256", headers={"kid": "x", "jwk": jwk})
    error_of(live.exchange(subject_token=token), 400, "invalid_grant")


def test_expired_subject_token(live: LiveIssuer) -> None:
    token = live.idp.token(lifetime=-120)  # expired two minutes ago, beyond the 30 s leeway
    error_of(live.exchange(subject_token=token), 400, "invalid_grant")


def test_token_passthrough_wrong_audience(live: LiveIssuer) -> None:
    """A user token meant for another MCP server (or the issuer itself) cannot be exchanged here."""
    error_of(live.exchange(subject_token=live.idp.token(aud="https://mcp.other.example")), 400, "invalid_grant")
    error_of(live.exchange(subject_token=live.idp.token(aud=live.url)), 400, "invalid_grant")


def test_untrusted_issuer(live: LiveIssuer) -> None:
    with _attacker() as attacker:
        token = attacker.token()
        error_of(live.exchange(subject_token=token), 400, "invalid_grant")


def test_may_act_excluding_the_client(live: LiveIssuer) -> None:
    error_of(live.exchange(subject_token=live.idp.token(may_act={"sub": "mcp-other"})), 400, "invalid_grant")
    assert live.exchange(subject_token=live.idp.token(may_act={"sub": "mcp-helpdesk"})).status_code == 200


def test_cross_provider_sub_collision(live: LiveIssuer) -> None:
    """Two providers both say `alice`: capabilities differ, and a subject rule for one never matches the other."""
    from issuer.registry import add_idp

    with _attacker("idp-b") as other:
        add_idp(live.db, name="idp-b", issuer=other.issuer, jwks_uri=other.jwks_uri, algorithms=("ES256",),
                allow_insecure_loopback=True)
        live.apply("""
rules:
  - id: alice-of-idp-a
    idp: idp-a
    subjects: [alice]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
""")
        ok = live.exchange()
        assert ok.status_code == 200
        assert verify(live, ok.json()["access_token"])["sub"] == "idp-a:alice"
        error_of(live.exchange(subject_token=other.token(sub="alice")), 400, "invalid_target")


def test_idp_key_rotation_mid_flight(live: LiveIssuer) -> None:
    assert live.exchange().status_code == 200
    new_kid = live.idp.add_key("ES256")
    fetches = live.idp.fetches
    assert live.exchange(subject_token=live.idp.token(kid=new_kid)).status_code == 200
    assert live.idp.fetches == fetches + 1


def test_issuer_key_rotation_mid_flight(live: LiveIssuer) -> None:
    """A capability signed before `keys rotate` still verifies against the JWKS after it."""
    before = live.exchange().json()["access_token"]
    live.keys.rotate()
    after = live.exchange().json()["access_token"]
    assert jwt.get_unverified_header(before)["kid"] != jwt.get_unverified_header(after)["kid"]
    assert verify(live, before)["jti"] != verify(live, after)["jti"]


def test_nothing_a_client_sends_is_a_500(live: LiveIssuer) -> None:
    secret = live.secrets["mcp-helpdesk"]
    bodies = [b"", b"%%%", b"grant_type=" + TOKEN_EXCHANGE.encode() + b"&subject_token=%FF%FE",
              b"grant_type=" + TOKEN_EXCHANGE.encode() + b"&subject_token=a.b.c&subject_token_type=" +
              ACCESS_TOKEN.encode() + b"&resource=https://tickets.example",
              b"grant_type=" + TOKEN_EXCHANGE.encode() + b"&subject_token=e30.e30.e30&subject_token_type=" +
              ACCESS_TOKEN.encode() + b"&resource=https://tickets.example&scope=%00"]
    for body in bodies:
        resp = live.http.post("/token", content=body, auth=("mcp-helpdesk", secret),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status_code < 500, (body, resp.text)
        assert resp.json()["error"]


from contextlib import contextmanager  # noqa: E402


@contextmanager
def _attacker(name: str = "attacker"):  # type: ignore[no-untyped-def]
    p = FakeIdP(name)
    try:
        yield p
    finally:
        p.close()


def test_basic_credentials_are_form_urlencoded_per_rfc6749(live: LiveIssuer) -> None:
    """RFC 6749 section 2.3.1: a client that form-encodes its secret ('+' for a space) authenticates."""
    from urllib.parse import quote_plus

    secret = "an imported secret with spaces"
    live.add_client("mcp-space", "https://mcp.space.example", ["tickets"], secret=secret)
    encoded = base64.b64encode(f"{quote_plus('mcp-space')}:{quote_plus(secret)}".encode()).decode()
    resp = live.http.post("/token", headers={"Authorization": f"Basic {encoded}"}, data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": live.idp.token(aud="https://mcp.space.example"),
        "subject_token_type": ACCESS_TOKEN, "resource": "https://tickets.example"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_target", resp.text  # past authentication
    wrong = base64.b64encode(b"mcp-space:an%20imported+secret+with+space").decode()
    resp = live.http.post("/token", headers={"Authorization": f"Basic {wrong}"}, data={"grant_type": TOKEN_EXCHANGE})
    assert resp.status_code == 401
