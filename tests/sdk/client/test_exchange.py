"""ExchangeClient against the real issuer: happy paths, client authentication, every refusal."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from issuer.sdk.client import (
    ACCESS_TOKEN_TYPE,
    ClientSecret,
    DiscoveryError,
    ExchangeClient,
    ExchangeError,
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    InvalidTarget,
    IssuedCapability,
    IssuerUnavailable,
    PrivateKeyJwt,
    ProtocolError,
)
from tests.conftest import LiveIssuer, free_port
from tests.test_exchange_e2e import verify

from .conftest import FILES, HELPDESK_AUD, TICKETS, client_for

HOME_POLICY = """
rules:
  - id: support-tickets-read
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
  - id: home-files
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: files
    scopes: [files:read]
    actions: [read, list]
    constraints:
      path: {prefix: "/home/${sub}/"}
"""


def check_capability(live: LiveIssuer, cap: IssuedCapability, aud: str = TICKETS, client_id: str = "mcp-helpdesk",
                     scope: tuple[str, ...] = ("tickets:read",)) -> dict[str, Any]:
    assert cap.token_type == "Bearer"
    assert cap.issued_token_type == ACCESS_TOKEN_TYPE
    assert cap.scope == scope
    claims = verify(live, cap.access_token, audience=aud)
    assert claims["sub"] == "idp-a:alice"
    assert claims["act"] == {"sub": client_id}
    assert claims["client_id"] == client_id
    assert claims["scope"] == " ".join(scope)
    assert abs(cap.expires_at - claims["exp"]) <= 2
    return claims


# ----------------------------------------------------------------------------- happy paths


def test_alice_gets_tickets_read_by_resource(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    cap = client.exchange(live_sqlite.idp.token(sub="alice"), tool=TICKETS, scope="tickets:read")
    check_capability(live_sqlite, cap)
    assert cap.authorization_details == () and not cap.call_bound


def test_alice_gets_tickets_read_by_audience_name(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    cap = client.exchange(live_sqlite.idp.token(sub="alice"), audience="tickets", scope=["tickets:read"])
    check_capability(live_sqlite, cap)


def test_scope_omitted_gets_the_policy_defaults(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    cap = client.exchange(live_sqlite.idp.token(), tool=TICKETS)
    check_capability(live_sqlite, cap)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_secret_authentication_methods(live_sqlite: LiveIssuer, method: str) -> None:
    client = client_for(live_sqlite, method=method)
    check_capability(live_sqlite, client.exchange(live_sqlite.idp.token(), tool=TICKETS, scope="tickets:read"))


@pytest.mark.parametrize("alg", [
    "ES256",
    "EdDSA",  # joserfc's RFC 9864 naming notice must not break the issuer's client authentication
])
def test_private_key_jwt(live_sqlite: LiveIssuer, alg: str) -> None:
    key: Any
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="k1", alg=alg)
    live_sqlite.add_client("mcp-pkjwt", "https://mcp.pkjwt.example", ["tickets"], auth_methods=("private_key_jwt",),
                           jwks={"keys": [jwk]})
    live_sqlite.apply("""
rules:
  - id: r
    idp: idp-a
    groups: [support]
    clients: [mcp-pkjwt]
    tool: tickets
    scopes: [tickets:read]
""")
    client = ExchangeClient(issuer=live_sqlite.url, client_id="mcp-pkjwt", allow_insecure_loopback=True,
                            credentials=PrivateKeyJwt(key, kid="k1", alg=alg))  # type: ignore[arg-type]
    # twice with different users: each request signs a new assertion (a replayed jti would be refused)
    for sub in ("alice", "bob"):
        token = live_sqlite.idp.token(sub=sub, aud="https://mcp.pkjwt.example")
        cap = client.exchange(token, tool=TICKETS, scope="tickets:read")
        claims = verify(live_sqlite, cap.access_token)
        assert claims["sub"] == f"idp-a:{sub}" and claims["act"] == {"sub": "mcp-pkjwt"}

    wrong_key = ExchangeClient(issuer=live_sqlite.url, client_id="mcp-pkjwt", allow_insecure_loopback=True,
                               credentials=PrivateKeyJwt(ec.generate_private_key(ec.SECP256R1()), kid="k1"))
    with pytest.raises(InvalidClient) as e:
        wrong_key.exchange(live_sqlite.idp.token(aud="https://mcp.pkjwt.example"), tool=TICKETS)
    assert e.value.status_code == 401


def test_private_key_jwt_from_pem(live_sqlite: LiveIssuer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="pem-1", alg="ES256")
    live_sqlite.add_client("mcp-pem", "https://mcp.pem.example", ["tickets"], auth_methods=("private_key_jwt",),
                           jwks={"keys": [jwk]})
    live_sqlite.apply(HOME_POLICY.replace("clients: [mcp-helpdesk]\n    tool: tickets",
                                          "clients: [mcp-pem]\n    tool: tickets"))
    client = ExchangeClient(issuer=live_sqlite.url, client_id="mcp-pem", allow_insecure_loopback=True,
                            credentials=PrivateKeyJwt(pem, kid="pem-1"))
    cap = client.exchange(live_sqlite.idp.token(aud="https://mcp.pem.example"), tool=TICKETS, scope="tickets:read")
    assert verify(live_sqlite, cap.access_token)["act"] == {"sub": "mcp-pem"}


def test_files_capability_narrowed_by_constraints(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    live_sqlite.apply(HOME_POLICY)
    cap = client.exchange(live_sqlite.idp.token(), tool=FILES, scope="files:read",
                          constraints={"path": {"prefix": "/home/alice/docs/"}})
    expected = {"type": "tool_invocation", "locations": [FILES], "actions": ["list", "read"],
                "constraints": {"path": {"prefix": "/home/alice/docs/"}}}
    assert cap.authorization_details == (expected,)
    assert not cap.call_bound
    claims = check_capability(live_sqlite, cap, aud=FILES, scope=("files:read",))
    assert claims["authorization_details"] == [expected]


def test_files_capability_narrowed_by_actions_and_audience(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    live_sqlite.apply(HOME_POLICY)
    cap = client.exchange(live_sqlite.idp.token(), audience="files", scope="files:read", actions=["read"])
    [d] = cap.authorization_details
    assert d["actions"] == ["read"] and d["constraints"] == {"path": {"prefix": "/home/alice/"}}


def test_call_bound_arguments_inside_the_users_home(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    live_sqlite.apply(HOME_POLICY)
    cap = client.exchange(live_sqlite.idp.token(), tool=FILES, scope="files:read", actions=["read"],
                          arguments={"path": "/home/alice/notes.txt"})
    assert cap.call_bound
    assert cap.authorization_details == ({"type": "tool_invocation", "locations": [FILES], "actions": ["read"],
                                          "arguments": {"path": "/home/alice/notes.txt"}},)
    claims = check_capability(live_sqlite, cap, aud=FILES, scope=("files:read",))
    assert claims["authorization_details"] == list(cap.authorization_details)


@pytest.mark.parametrize("path", ["/home/bob/notes.txt", "/home/alice/../bob/secret"])
def test_call_bound_arguments_outside_are_refused(live_sqlite: LiveIssuer, client: ExchangeClient,
                                                  path: str) -> None:
    live_sqlite.apply(HOME_POLICY)
    with pytest.raises(InvalidScope) as e:
        client.exchange(live_sqlite.idp.token(), tool=FILES, scope="files:read", arguments={"path": path})
    assert e.value.error == "invalid_scope" and e.value.status_code == 400
    assert "path" in e.value.description


def test_actor_token_is_sent_and_keys_the_cache(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    user = live_sqlite.idp.token()
    good = live_sqlite.idp.token(sub="mcp-helpdesk", aud=live_sqlite.url)
    cap = client.exchange(user, tool=TICKETS, actor_token=good, actor_token_type=ACCESS_TOKEN_TYPE)
    check_capability(live_sqlite, cap)
    # another actor token for the same user and tool is a different request, never a cache hit
    impostor = live_sqlite.idp.token(sub="mcp-other", aud=live_sqlite.url)
    with pytest.raises(InvalidGrant):
        client.exchange(user, tool=TICKETS, actor_token=impostor, actor_token_type=ACCESS_TOKEN_TYPE)


# ----------------------------------------------------------------------------- refusals


def test_mallory_gets_invalid_target(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    with pytest.raises(InvalidTarget) as e:
        client.exchange(live_sqlite.idp.token(sub="mallory", groups=["contractor"]), tool=TICKETS,
                        scope="tickets:read")
    assert (e.value.error, e.value.status_code) == ("invalid_target", 400)
    assert e.value.description


def test_unknown_tool_gets_invalid_target(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    with pytest.raises(InvalidTarget):
        client.exchange(live_sqlite.idp.token(), audience="payroll")


def test_tickets_write_gets_invalid_scope(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    with pytest.raises(InvalidScope) as e:
        client.exchange(live_sqlite.idp.token(), tool=TICKETS, scope="tickets:write")
    assert (e.value.error, e.value.status_code) == ("invalid_scope", 400)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_wrong_secret_gets_invalid_client(live_sqlite: LiveIssuer, method: str) -> None:
    client = client_for(live_sqlite, method=method, secret="not-the-secret")
    with pytest.raises(InvalidClient) as e:
        client.exchange(live_sqlite.idp.token(), tool=TICKETS)
    assert (e.value.error, e.value.status_code) == ("invalid_client", 401)


def test_other_clients_secret_gets_invalid_client(live_sqlite: LiveIssuer) -> None:
    client = client_for(live_sqlite, "mcp-helpdesk", secret=live_sqlite.secrets["mcp-other"])
    with pytest.raises(InvalidClient):
        client.exchange(live_sqlite.idp.token(), tool=TICKETS)


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda live: "not-a-jwt", id="garbage"),
        pytest.param(lambda live: live.idp.token(lifetime=-60), id="expired"),
        pytest.param(lambda live: live.idp.token(aud="https://mcp.other.example"), id="someone-elses-token"),
    ],
)
def test_bad_subject_token_gets_invalid_grant(live_sqlite: LiveIssuer, client: ExchangeClient, make_token: Any) -> None:
    token = make_token(live_sqlite)
    with pytest.raises(InvalidGrant) as e:
        client.exchange(token, tool=TICKETS, scope="tickets:read")
    assert (e.value.error, e.value.status_code) == ("invalid_grant", 400)
    assert token not in str(e.value) and token not in repr(e.value)


def test_refusal_is_an_exchange_error(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    with pytest.raises(ExchangeError):
        client.exchange(live_sqlite.idp.token(), tool=TICKETS, scope="tickets:write")


# ----------------------------------------------------------------------------- reaching the issuer


def test_issuer_down_is_issuer_unavailable(live_sqlite: LiveIssuer) -> None:
    port = free_port()  # bound then released: nothing listens there
    client = ExchangeClient(issuer=f"http://127.0.0.1:{port}", client_id="mcp-helpdesk",
                            credentials=ClientSecret("x" * 32), allow_insecure_loopback=True)
    with pytest.raises(IssuerUnavailable) as e:
        client.exchange(live_sqlite.idp.token(), tool=TICKETS)
    assert e.value.status_code is None and e.value.error is None


def test_issuer_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel accepts the connection; nobody ever answers
        client = ExchangeClient(issuer=f"http://127.0.0.1:{listener.getsockname()[1]}", client_id="c",
                                credentials=ClientSecret("x" * 32), allow_insecure_loopback=True, timeout=0.2)
        with pytest.raises(IssuerUnavailable, match=r"within 0\.2 seconds"):
            client.exchange("user-token", tool=TICKETS)


@pytest.mark.parametrize("configured", ["http://localhost:{port}", "http://127.0.0.1:{port}/"])
def test_metadata_issuer_must_match_exactly(live_sqlite: LiveIssuer, configured: str) -> None:
    port = live_sqlite.settings.port
    client = ExchangeClient(issuer=configured.format(port=port), client_id="mcp-helpdesk",
                            credentials=ClientSecret(live_sqlite.secrets["mcp-helpdesk"]),
                            allow_insecure_loopback=True)
    with pytest.raises(DiscoveryError, match="not the configured issuer") as e:
        client.exchange(live_sqlite.idp.token(), tool=TICKETS)
    assert isinstance(e.value, ProtocolError)


def test_discovery_happens_once_and_failures_are_not_remembered(scripted: Any) -> None:
    client = scripted.client()
    scripted.metadata_status = 503
    with pytest.raises(IssuerUnavailable) as e:
        client.exchange("user-token", tool=TICKETS)
    assert e.value.status_code == 503
    scripted.metadata_status = 200
    for _ in range(3):
        scripted.answer(400, {"error": "invalid_grant"})
        with pytest.raises(InvalidGrant):
            client.exchange("user-token", tool=TICKETS)
    assert scripted.metadata_fetches == 2
    assert [path for path, _, _ in scripted.requests] == ["/token"] * 3


def test_metadata_url_of_an_issuer_with_a_path(scripted: Any) -> None:
    """RFC 8414 section 3.1: /.well-known/oauth-authorization-server goes before the issuer's path."""
    client = ExchangeClient(issuer=scripted.url + "/tenant", client_id="c", credentials=ClientSecret("x" * 32),
                            allow_insecure_loopback=True)
    with pytest.raises(DiscoveryError, match="HTTP 404"):  # the scripted issuer serves only the root document
        client.exchange("user-token", tool=TICKETS)
    assert scripted.gets == ["/.well-known/oauth-authorization-server/tenant"]


@pytest.mark.parametrize("issuer", ["http://issuer.example", "http://10.0.0.1:8000", "ftp://127.0.0.1",
                                    "file:///etc/passwd", "https://", "issuer.example"])
def test_plain_http_to_a_non_loopback_issuer_is_refused(issuer: str) -> None:
    with pytest.raises(ValueError, match=r"https|host"):
        ExchangeClient(issuer=issuer, client_id="c", credentials=ClientSecret("x" * 32),
                       allow_insecure_loopback=True)


def test_loopback_http_needs_the_flag(live_sqlite: LiveIssuer) -> None:
    with pytest.raises(ValueError, match="allow_insecure_loopback"):
        ExchangeClient(issuer=live_sqlite.url, client_id="mcp-helpdesk", credentials=ClientSecret("x" * 32))


def test_token_endpoint_on_plain_http_elsewhere_is_refused(scripted: Any) -> None:
    scripted.metadata["token_endpoint"] = "http://issuer.example/token"
    with pytest.raises(DiscoveryError, match="https"):
        scripted.client().exchange("user-token", tool=TICKETS)
    assert scripted.requests == []  # nothing, least of all the user's token, went to that endpoint


def test_subject_token_must_be_addressed_to_the_client(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    with pytest.raises(InvalidGrant):
        client.exchange(live_sqlite.idp.token(aud="https://somewhere.else"), tool=TICKETS)
    # and the right audience works with the same client
    client.exchange(live_sqlite.idp.token(aud=[HELPDESK_AUD, "https://x.example"]), tool=TICKETS)


def test_pkjwt_assertion_shape(scripted: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    client = scripted.client(credentials=PrivateKeyJwt(key, kid="k9"))
    scripted.answer(400, {"error": "invalid_grant", "error_description": "no"})
    scripted.answer(400, {"error": "invalid_grant", "error_description": "no"})
    for _ in range(2):
        with pytest.raises(InvalidGrant):
            client.exchange("user-token", tool=TICKETS)
    jtis = set()
    for _path, headers, body in scripted.requests:
        form = parse_qs(body.decode())
        assert "Authorization" not in headers and "client_secret" not in form
        assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
        [assertion] = form["client_assertion"]
        assert jwt.get_unverified_header(assertion)["kid"] == "k9"
        claims = jwt.decode(assertion, key.public_key(), algorithms=["ES256"], audience=scripted.url + "/token")
        assert claims["iss"] == claims["sub"] == "mcp-helpdesk"
        assert claims["exp"] - claims["iat"] == 60
        jtis.add(claims["jti"])
    assert len(jtis) == 2
