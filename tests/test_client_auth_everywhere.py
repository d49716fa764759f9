"""Client authentication holds the same way at /token, /introspect and /revoke.

A form ``client_id`` must name the client that authenticated; a failed
authentication is audited without pretending the claimed client acted,
counted, and throttled per claimed client id; the RFC 7009 / RFC 7662 token
type rules; and hostile bytes in ``Authorization`` are a 401, never a 500.
"""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select

from issuer.models import AuditEvent
from issuer.oauth.client_auth import FAILED_AUTH_PER_CLIENT, FAILED_AUTH_PER_SOURCE
from tests.conftest import ACCESS_TOKEN, TOKEN_EXCHANGE, LiveIssuer, make_settings, need_service
from tests.support.fake_idp import FakeIdP
from tests.test_exchange_e2e import error_of

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _rows(live: LiveIssuer) -> list[AuditEvent]:
    with live.db.session() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _metric(live: LiveIssuer, line_start: str) -> float:
    for line in live.http.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _raw_post(live: LiveIssuer, path: str, authorization: bytes, body: bytes) -> tuple[int, bytes]:
    """One request over a plain socket: httpx refuses non-ASCII header values, an attacker does not."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.settings.port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n").encode()
    with socket.create_connection(("127.0.0.1", live.settings.port), timeout=30) as s:
        s.sendall(head + b"Authorization: " + authorization + b"\r\n\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


# ----------------------------------------------------------------------------- form client_id vs credentials


def test_form_client_id_must_name_the_basic_client(live: LiveIssuer) -> None:
    resp = live.exchange(extra=[("client_id", "mcp-other")])  # Basic authenticates mcp-helpdesk
    error_of(resp, 401, "invalid_client")
    row = _rows(live)[-1]
    # the refusal is the authenticated client's, and the contradicting id is kept apart
    assert (row.reason, row.client_id) == ("invalid_client", "mcp-helpdesk")
    assert row.actor == {"endpoint": "/token", "claimed_client_id": "mcp-other"}
    assert live.exchange(extra=[("client_id", "mcp-helpdesk")]).status_code == 200  # the same id is fine


def test_form_client_id_must_name_the_basic_client_at_introspect_and_revoke(live: LiveIssuer) -> None:
    token = live.exchange().json()["access_token"]
    auth = ("mcp-helpdesk", live.secrets["mcp-helpdesk"])
    for path in ("/introspect", "/revoke"):
        resp = live.post_form(path, [("token", token), ("client_id", "mcp-other")], auth=auth)
        error_of(resp, 401, "invalid_client")
    assert live.post_form("/introspect", [("token", token)], auth=auth).json()["active"] is True


def test_form_client_id_must_name_the_assertion_client(live: LiveIssuer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="c1", alg="ES256")
    live.add_client("mcp-pkjwt", "https://mcp.pkjwt.example", ["tickets"], auth_methods=("private_key_jwt",),
                    jwks={"keys": [jwk]})
    now = int(time.time())
    assertion = jwt.encode({"iss": "mcp-pkjwt", "sub": "mcp-pkjwt", "aud": live.url + "/token", "iat": now,
                            "exp": now + 60, "jti": "m-1"}, key, algorithm="ES256", headers={"kid": "c1"})
    resp = live.post_form("/token", [
        ("grant_type", TOKEN_EXCHANGE), ("subject_token", live.idp.token(aud="https://mcp.pkjwt.example")),
        ("subject_token_type", ACCESS_TOKEN), ("resource", "https://tickets.example"),
        ("client_id", "mcp-helpdesk"), ("client_assertion_type", ASSERTION_TYPE), ("client_assertion", assertion)])
    error_of(resp, 401, "invalid_client")
    row = _rows(live)[-1]
    assert (row.client_id, row.actor) == ("mcp-pkjwt", {"endpoint": "/token", "claimed_client_id": "mcp-helpdesk"})


def test_failed_authentication_is_not_recorded_as_the_claimed_client(live: LiveIssuer) -> None:
    error_of(live.exchange(secret="wrong-secret-wrong-secret"), 401, "invalid_client")
    row = _rows(live)[-1]
    assert row.client_id is None  # nobody authenticated: no row may read as mcp-helpdesk acting
    assert row.actor == {"endpoint": "/token", "claimed_client_id": "mcp-helpdesk"}
    error_of(live.exchange(secret="x", client_id="evil\u0000\u202e\nid" + "x" * 200), 401, "invalid_client")
    claimed = _rows(live)[-1].actor["claimed_client_id"]  # type: ignore[index]
    assert claimed == "evilid" + "x" * 94  # printable only, at most 100 characters


def test_audit_tail_shows_a_claimed_id_as_claimed(live: LiveIssuer) -> None:
    from click.testing import CliRunner

    from issuer.cli import cli

    live.exchange(secret="wrong-secret-wrong-secret")
    live.exchange()
    env = {"ISSUER_DATABASE_URL": live.settings.database_url, "ISSUER_KEYS_DIR": str(live.settings.keys_dir)}
    res = CliRunner().invoke(cli, ["audit", "tail", "-n", "2"], env=env)
    assert res.exit_code == 0, res.output
    refused, granted = res.output.splitlines()
    assert "invalid_client" in refused and "via claimed mcp-helpdesk -> -" in refused
    assert "via mcp-helpdesk -> tickets" in granted


# ----------------------------------------------------------------------------- audited, counted, throttled


def test_failed_authentication_at_introspect_and_revoke_is_audited_and_counted(live: LiveIssuer) -> None:
    token = live.exchange().json()["access_token"]
    before = len(_rows(live))
    for path, endpoint in (("/introspect", "introspection"), ("/revoke", "revocation")):
        counted = _metric(live, f'issuer_client_auth_failures_total{{endpoint="{endpoint}",reason="invalid_client"}}')
        error_of(live.post_form(path, [("token", token)], auth=("mcp-helpdesk", "wrong-secret-value")),
                 401, "invalid_client")
        row = _rows(live)[-1]
        assert (row.decision, row.reason, row.client_id) == ("denied", "invalid_client", None)
        assert row.actor == {"endpoint": path, "claimed_client_id": "mcp-helpdesk"}
        assert row.mac and row.client_addr == "127.0.0.1"
        assert _metric(
            live, f'issuer_client_auth_failures_total{{endpoint="{endpoint}",reason="invalid_client"}}'
        ) == counted + 1
    assert len(_rows(live)) == before + 2


def _guess(live: LiveIssuer, path: str, client: str = "mcp-helpdesk") -> Any:
    if path == "/token":
        return live.exchange(client, secret="wrong-secret-value")
    return live.post_form(path, [("token", "t")], auth=(client, "wrong-secret-value"))


def test_guessing_a_secret_is_throttled_everywhere(live_sqlite: LiveIssuer) -> None:
    live = live_sqlite
    budget = FAILED_AUTH_PER_SOURCE.amount
    paths = ["/token", "/introspect", "/revoke"]
    for i in range(budget):  # the budget is one per client id, whichever endpoint is guessed at
        error_of(_guess(live, paths[i % 3]), 401, "invalid_client")
    for path in paths:
        body = error_of(_guess(live, path), 429, "rate_limited")
        assert "client authentication" in body["error_description"]
    # while throttled even the right secret is refused: otherwise the guessing would go on
    limited = live.exchange()
    error_of(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert _rows(live)[-1].reason == "rate_limited" and _rows(live)[-1].client_id is None
    assert _metric(live, 'issuer_client_auth_failures_total{endpoint="token",reason="rate_limited"}') == 2
    # another client is not affected
    assert live.exchange("mcp-other", subject_token=live.idp.token(aud="https://mcp.other.example")).status_code == 200


def test_guessing_from_many_addresses_is_bounded_per_client_id(live_sqlite: LiveIssuer) -> None:
    live = live_sqlite
    wrong = "Basic " + base64.b64encode(b"mcp-helpdesk:wrong-secret-value").decode()
    right = "Basic " + base64.b64encode(f"mcp-helpdesk:{live.secrets['mcp-helpdesk']}".encode()).decode()

    def introspect(address: str, authorization: str) -> int:
        client = live.app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        return client.post("/introspect", data={"token": "t"}, headers={"Authorization": authorization}).status_code

    per_address = FAILED_AUTH_PER_SOURCE.amount - 1  # each address stays under its own budget
    for i in range(FAILED_AUTH_PER_CLIENT.amount):
        assert introspect(f"10.1.{i // per_address}.{i % per_address}", wrong) == 401
    assert introspect("10.2.0.1", right) == 429  # a fresh address, the right secret: the client id is spent
    other = "Basic " + base64.b64encode(f"mcp-other:{live.secrets['mcp-other']}".encode()).decode()
    assert introspect("10.2.0.1", other) == 200


def test_replicas_share_the_budget_through_redis(tmp_path: Path, sqlite_url: str, idp: FakeIdP) -> None:
    redis_url = need_service("ISSUER_TEST_REDIS_URL", "Redis")
    one = LiveIssuer(make_settings(tmp_path, sqlite_url, redis_url=redis_url), idp)
    two = LiveIssuer(make_settings(tmp_path, sqlite_url, redis_url=redis_url, keys_dir=tmp_path / "keys"), idp)
    try:
        client = f"mcp-{time.time_ns()}"  # a fresh client id: Redis keeps windows across test runs
        secret = one.add_client(client, "https://mcp.shared.example", [])
        for i in range(FAILED_AUTH_PER_SOURCE.amount):
            replica = (one, two)[i % 2]
            error_of(replica.post_form("/introspect", [("token", "t")], auth=(client, "wrong-secret-value")),
                     401, "invalid_client")
        # The replica whose failure spent the last unit refuses unchecked at once; the other learns it from
        # its own next failure (one more check), and from then refuses the right secret too.
        error_of(two.post_form("/introspect", [("token", "t")], auth=(client, secret)), 429, "rate_limited")
        error_of(one.post_form("/introspect", [("token", "t")], auth=(client, "wrong-secret-value")),
                 429, "rate_limited")
        error_of(one.post_form("/introspect", [("token", "t")], auth=(client, secret)), 429, "rate_limited")
    finally:
        two.close()
        one.close()


def test_successful_authentications_spend_no_budget(live_sqlite: LiveIssuer) -> None:
    live = live_sqlite
    token = live.exchange().json()["access_token"]
    auth = ("mcp-helpdesk", live.secrets["mcp-helpdesk"])
    for _ in range(FAILED_AUTH_PER_SOURCE.amount + 2):
        assert live.post_form("/introspect", [("token", token)], auth=auth).status_code == 200


# ----------------------------------------------------------------------------- token types (RFC 7009, RFC 7662)


def test_unsupported_token_type_is_400_at_revoke(live: LiveIssuer) -> None:
    token = live.exchange().json()["access_token"]
    auth = ("mcp-helpdesk", live.secrets["mcp-helpdesk"])
    error_of(live.post_form("/revoke", [("token", token), ("token_type_hint", "id_token")], auth=auth),
             400, "unsupported_token_type")
    assert _rows(live)[-1].reason == "unsupported_token_type"
    # a registered hint that does not match the token: the search goes on (RFC 7009 section 2.1)
    assert live.post_form("/revoke", [("token", token), ("token_type_hint", "refresh_token")],
                          auth=auth).status_code == 200
    assert live.post_form("/introspect", [("token", token)], auth=auth).json() == {"active": False}


def test_introspection_keeps_searching_past_the_hint(live: LiveIssuer) -> None:
    token = live.exchange().json()["access_token"]
    auth = ("mcp-helpdesk", live.secrets["mcp-helpdesk"])
    for hint in ("refresh_token", "access_token", "urn:example:unknown"):
        resp = live.post_form("/introspect", [("token", token), ("token_type_hint", hint)], auth=auth)
        assert resp.status_code == 200, resp.text
        assert resp.json()["active"] is True
    resp = live.post_form("/introspect", [("token", "nope"), ("token_type_hint", "refresh_token")], auth=auth)
    assert resp.json() == {"active": False}


# ----------------------------------------------------------------------------- hostile Authorization bytes


def test_non_ascii_basic_header_is_401_and_audited(live: LiveIssuer) -> None:
    exchange = (f"grant_type={TOKEN_EXCHANGE}&subject_token=x&subject_token_type={ACCESS_TOKEN}"
                "&resource=https%3A%2F%2Ftickets.example").encode()
    not_utf8 = b"Basic " + base64.b64encode(b"\xff\xfe:\xfa\xfb")
    for value in (b"Basic \xff\xfe\xe9", b"Basic bWNw\xc3\xa9OnNlY3JldA==", not_utf8):
        for path, body in (("/token", exchange), ("/introspect", b"token=x"), ("/revoke", b"token=x")):
            before = len(_rows(live))
            status, payload = _raw_post(live, path, value, body)
            assert status == 401, (path, value, payload)
            assert b'"invalid_client"' in payload
            rows = _rows(live)
            assert len(rows) == before + 1 and rows[-1].reason == "invalid_client" and rows[-1].client_id is None


def test_non_ascii_bearer_at_the_admin_api_is_401(live_sqlite: LiveIssuer) -> None:
    for value in (b"Bearer iak_\xff\xfe", b"Bearer \xc3\xa9t\xc3\xa9", b"Basic \xff"):
        with socket.create_connection(("127.0.0.1", live_sqlite.settings.port), timeout=30) as s:
            s.sendall(b"GET /admin/v1/clients HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
                      + value + b"\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.split(b" ", 2)[1] == b"401", data
        assert b'"invalid_token"' in data
