"""The wire protocol in detail, against a scripted issuer: what is sent, and every malformed answer."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from freezegun import freeze_time

from issuer.sdk.client import (
    ACCESS_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    ClientSecret,
    DiscoveryError,
    ExchangeError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    IssuerUnavailable,
    ProtocolError,
    RateLimited,
    UnauthorizedClient,
)

from .conftest import TICKETS, Scripted

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
OK = {"access_token": "cap.jwt.value", "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
      "expires_in": 300, "scope": "tickets:read"}


def form_of(scripted: Scripted, index: int = -1) -> dict[str, list[str]]:
    return parse_qs(scripted.requests[index][2].decode(), keep_blank_values=True, strict_parsing=True)


# ----------------------------------------------------------------------------- the request


def test_request_by_resource(scripted: Scripted) -> None:
    scripted.answer(200, OK)
    cap = scripted.client().exchange("user-token", tool=TICKETS, scope="tickets:read tickets:read")
    assert cap.access_token == "cap.jwt.value" and cap.scope == ("tickets:read",)
    path, headers, _ = scripted.requests[0]
    assert path == "/token"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form_of(scripted) == {"grant_type": [GRANT], "subject_token": ["user-token"],
                                 "subject_token_type": [ACCESS_TOKEN_TYPE], "resource": [TICKETS],
                                 "scope": ["tickets:read"]}


def test_request_by_audience_with_actor_and_details(scripted: Scripted) -> None:
    scripted.answer(200, OK)
    scripted.client().exchange("user-token", audience="files", scope=["files:read", "files:list"],
                               actions=["read", "read", "list"], constraints={"path": {"prefix": "/home/a/"}},
                               actor_token="actor.jwt", actor_token_type=JWT_TOKEN_TYPE)
    form = form_of(scripted)
    assert form["audience"] == ["files"] and "resource" not in form
    assert form["scope"] == ["files:read files:list"]
    assert form["actor_token"] == ["actor.jwt"] and form["actor_token_type"] == [JWT_TOKEN_TYPE]
    assert json.loads(form["authorization_details"][0]) == [
        {"type": "tool_invocation", "actions": ["read", "list"], "constraints": {"path": {"prefix": "/home/a/"}}}]


def test_call_bound_details_name_the_location(scripted: Scripted) -> None:
    scripted.answer(200, {**OK, "authorization_details": [{"type": "tool_invocation", "arguments": {"n": 1}}]})
    cap = scripted.client().exchange("user-token", tool=TICKETS, arguments={"n": 1})
    assert cap.call_bound
    assert json.loads(form_of(scripted)["authorization_details"][0]) == [
        {"type": "tool_invocation", "locations": [TICKETS], "arguments": {"n": 1}}]


def test_basic_auth_form_urlencodes_id_and_secret(scripted: Scripted) -> None:
    """RFC 6749 section 2.3.1: id and secret are form-urlencoded, then joined with ':', then base64."""
    scripted.answer(200, OK)
    client = scripted.client(credentials=ClientSecret("p@ss:w rd+/é"))
    client.exchange("user-token", tool=TICKETS)
    header = scripted.requests[0][1]["Authorization"]
    assert header.startswith("Basic ")
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == "mcp-helpdesk:p%40ss%3Aw+rd%2B%2F%C3%A9"
    assert "client_secret" not in form_of(scripted) and "client_id" not in form_of(scripted)


def test_post_auth_puts_credentials_in_the_body(scripted: Scripted) -> None:
    scripted.answer(200, OK)
    scripted.client(credentials=ClientSecret("s3cret", method="client_secret_post")).exchange("t", tool=TICKETS)
    form = form_of(scripted)
    assert form["client_id"] == ["mcp-helpdesk"] and form["client_secret"] == ["s3cret"]
    assert "Authorization" not in scripted.requests[0][1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly once"),
        ({"tool": TICKETS, "audience": "tickets"}, "exactly once"),
        ({"tool": "tickets"}, "resource URI"),
        ({"tool": "https://tickets.example/#frag"}, "resource URI"),
        ({"audience": ""}, "registered name"),
        ({"tool": TICKETS, "scope": ""}, "empty"),
        ({"tool": TICKETS, "scope": []}, "empty"),
        ({"tool": TICKETS, "scope": ["a b"]}, "without spaces"),
        ({"tool": TICKETS, "constraints": {"p": {"eq": 1}}, "arguments": {"p": 1}}, "not both"),
        ({"tool": TICKETS, "arguments": {"n": float("nan")}}, "JSON"),
        ({"tool": TICKETS, "constraints": {"n": {"max": float("inf")}}}, "JSON"),
        ({"tool": TICKETS, "actions": []}, "non-empty"),
        ({"tool": TICKETS, "actor_token": "a"}, "go together"),
        ({"tool": TICKETS, "actor_token_type": ACCESS_TOKEN_TYPE}, "go together"),
    ],
)
def test_bad_arguments_are_value_errors_and_send_nothing(scripted: Scripted, kwargs: dict[str, Any],
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        scripted.client().exchange("user-token-value", **kwargs)
    assert "user-token-value" not in str(e.value)
    assert scripted.requests == [] and scripted.metadata_fetches == 0


@pytest.mark.parametrize("kwargs", [{"scope": 5}, {"actions": "read"}, {"arguments": [1]}, {"constraints": "x"}])
def test_wrong_types_are_type_errors(scripted: Scripted, kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        scripted.client().exchange("user-token", tool=TICKETS, **kwargs)


def test_empty_subject_token(scripted: Scripted) -> None:
    with pytest.raises(ValueError, match="subject_token"):
        scripted.client().exchange("", tool=TICKETS)


# ----------------------------------------------------------------------------- the success response


def test_success_fields(scripted: Scripted) -> None:
    with freeze_time("2030-01-01T00:00:00Z"):
        scripted.answer(200, {**OK, "token_type": "bearer", "scope": "a b"})
        cap = scripted.client().exchange("user-token", tool=TICKETS)
    assert cap.token_type == "Bearer" and cap.scope == ("a", "b")
    assert cap.expires_at == 1893456000 + 300
    assert cap.authorization_details == () and not cap.call_bound


def test_dpop_token_type_is_accepted_when_a_proof_was_sent(scripted: Scripted) -> None:
    scripted.answer(200, {**OK, "token_type": "DPoP"})
    assert scripted.client(dpop=True).exchange("user-token", tool=TICKETS).token_type == "DPoP"
    scripted.answer(200, {**OK, "token_type": "DPoP"})
    with pytest.raises(ProtocolError, match="no DPoP proof"):  # a binding this client cannot honour
        scripted.client().exchange("user-token", tool=TICKETS)


def test_an_issuer_nonce_challenge_is_followed_once(scripted: Scripted) -> None:
    err = {"error": "use_dpop_nonce", "error_description": "nonce"}
    scripted.answer(400, err, DPoP_Nonce="n-1")
    scripted.answer(200, {**OK, "token_type": "DPoP"})
    client = scripted.client(dpop=True)
    assert client.exchange("user-token", tool=TICKETS).token_type == "DPoP"
    first, second = (jwt.decode({k.lower(): v for k, v in h.items()}["dpop"], options={"verify_signature": False})
                     for _, h, _ in scripted.requests)
    assert "nonce" not in first and second["nonce"] == "n-1" and first["jti"] != second["jti"]
    assert first["htm"] == "POST" and first["htu"] == scripted.url + "/token"
    scripted.answer(400, err, DPoP_Nonce="n-1")  # the same nonce again: no loop
    with pytest.raises(ExchangeError) as info:
        client.exchange("user-token", tool=TICKETS, force_refresh=True)
    assert info.value.error == "use_dpop_nonce"


def test_scope_omitted_means_as_requested(scripted: Scripted) -> None:
    scripted.answer(200, {k: v for k, v in OK.items() if k != "scope"})
    assert scripted.client().exchange("t", tool=TICKETS, scope="x y").scope == ("x", "y")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        {**OK, "access_token": ""},
        {k: v for k, v in OK.items() if k != "access_token"},
        {k: v for k, v in OK.items() if k != "issued_token_type"},
        {**OK, "issued_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
        {**OK, "token_type": "MAC"},
        {k: v for k, v in OK.items() if k != "token_type"},
        {**OK, "expires_in": 0},
        {**OK, "expires_in": -5},
        {**OK, "expires_in": "300"},
        {**OK, "expires_in": True},
        {**OK, "expires_in": 30.5},
        {k: v for k, v in OK.items() if k != "expires_in"},
        {**OK, "scope": ["tickets:read"]},
        {**OK, "authorization_details": {"type": "tool_invocation"}},
        {**OK, "authorization_details": ["x"]},
    ],
)
def test_malformed_success_is_a_protocol_error(scripted: Scripted, body: Any) -> None:
    scripted.answer(200, body)
    with pytest.raises(ProtocolError) as e:
        scripted.client().exchange("user-token", tool=TICKETS)
    assert e.value.status_code == 200 and e.value.error is None
    assert "cap.jwt.value" not in str(e.value)


def test_oversized_response_is_a_protocol_error(scripted: Scripted) -> None:
    scripted.answer(200, {**OK, "padding": "x" * 300_000})
    with pytest.raises(ProtocolError, match="larger than"):
        scripted.client().exchange("user-token", tool=TICKETS)


# ----------------------------------------------------------------------------- error responses


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_request", InvalidRequest),
        (401, "invalid_client", InvalidClient),
        (400, "invalid_grant", InvalidGrant),
        (400, "unauthorized_client", UnauthorizedClient),
        (400, "invalid_target", InvalidTarget),
        (400, "invalid_scope", InvalidScope),
        (503, "temporarily_unavailable", IssuerUnavailable),
        (400, "temporarily_unavailable", IssuerUnavailable),
        (500, "server_error", IssuerUnavailable),
        (400, "invalid_dpop_proof", ExchangeError),
        (400, "unsupported_grant_type", ExchangeError),
    ],
)
def test_error_codes_map_to_classes(scripted: Scripted, status: int, code: str, cls: type[ExchangeError]) -> None:
    scripted.answer(status, {"error": code, "error_description": f"because {code}"})
    with pytest.raises(cls) as e:
        scripted.client().exchange("user-token", tool=TICKETS)
    assert type(e.value) is cls
    assert (e.value.error, e.value.status_code, e.value.description) == (code, status, f"because {code}")
    assert str(e.value) == f"{code}: because {code}"


def test_missing_description_gets_a_default(scripted: Scripted) -> None:
    scripted.answer(400, {"error": "invalid_grant"})
    with pytest.raises(InvalidGrant) as e:
        scripted.client().exchange("user-token", tool=TICKETS)
    assert e.value.description == "the issuer refused the subject or actor token"


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), (None, None), ("soon", None)])
def test_rate_limited_carries_retry_after(scripted: Scripted, header: str | None, expected: float | None) -> None:
    headers = {"Retry_After": header} if header is not None else {}
    scripted.answer(429, {"error": "rate_limited", "error_description": "slow down"}, **headers)
    with pytest.raises(RateLimited) as e:
        scripted.client().exchange("user-token", tool=TICKETS)
    assert e.value.status_code == 429 and e.value.retry_after == expected


def test_rate_limited_retry_after_as_a_date(scripted: Scripted) -> None:
    with freeze_time("2030-01-01T00:00:00Z"):
        when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
        scripted.answer(429, b"", Retry_After=when, Content_Type="text/plain")
        with pytest.raises(RateLimited) as e:
            scripted.client().exchange("user-token", tool=TICKETS)
    assert e.value.retry_after == 90.0 and e.value.error is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_without_json_is_issuer_unavailable(scripted: Scripted, status: int) -> None:
    scripted.answer(status, b"<html>Bad Gateway</html>", Content_Type="text/html", Retry_After="3")
    with pytest.raises(IssuerUnavailable) as e:
        scripted.client().exchange("user-token", tool=TICKETS)
    assert e.value.status_code == status and e.value.retry_after == 3.0
    assert "html" not in str(e.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(scripted: Scripted, status: int) -> None:
    scripted.answer(status, b"", Location=scripted.url + "/elsewhere")
    with pytest.raises(ProtocolError, match="redirect") as e:
        scripted.client().exchange("user-token", tool=TICKETS)
    assert e.value.status_code == status
    assert [p for p, _, _ in scripted.requests] == ["/token"]  # nothing was re-sent to /elsewhere


@pytest.mark.parametrize("body", [b"", b"<html>nope</html>", b'{"error": 5}', b'{"error": "bad\\u0000code"}'])
def test_4xx_without_an_oauth_error_is_a_protocol_error(scripted: Scripted, body: bytes) -> None:
    scripted.answer(400, body, Content_Type="text/html")
    with pytest.raises(ProtocolError) as e:
        scripted.client().exchange("user-token", tool=TICKETS)
    assert e.value.status_code == 400


def test_unexpected_2xx_is_a_protocol_error(scripted: Scripted) -> None:
    scripted.answer(201, OK)
    with pytest.raises(ProtocolError):
        scripted.client().exchange("user-token", tool=TICKETS)


def test_metadata_naming_another_grant_set(scripted: Scripted) -> None:
    scripted.metadata["grant_types_supported"] = ["client_credentials"]
    with pytest.raises(DiscoveryError, match="token exchange"):
        scripted.client().exchange("user-token", tool=TICKETS)


@pytest.mark.parametrize("doc", [{"issuer": "x"}, {}, {"token_endpoint": "/token"}])
def test_unusable_metadata_is_a_discovery_error(scripted: Scripted, doc: dict[str, Any]) -> None:
    scripted.metadata = doc
    with pytest.raises(DiscoveryError):
        scripted.client().exchange("user-token", tool=TICKETS)


def test_metadata_without_token_endpoint(scripted: Scripted) -> None:
    del scripted.metadata["token_endpoint"]
    with pytest.raises(DiscoveryError, match="token_endpoint"):
        scripted.client().exchange("user-token", tool=TICKETS)


# ----------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("answer", [(200, OK), (400, {"error": "invalid_grant", "error_description": "expired"})])
def test_concurrent_callers_share_one_exchange_and_its_outcome(scripted: Scripted, monkeypatch: pytest.MonkeyPatch,
                                                               answer: tuple[int, Any]) -> None:
    """The first caller asks the issuer; callers arriving meanwhile wait for its answer, success or refusal."""
    from issuer.sdk.client._cache import Flight

    waiting = threading.Semaphore(0)

    class CountingEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.release()
            return super().wait(timeout)

    plain_init = Flight.__init__

    def init(self: Flight) -> None:
        plain_init(self)
        self.done = CountingEvent()

    monkeypatch.setattr(Flight, "__init__", init)
    scripted.gate.clear()
    scripted.answer(*answer)
    client = scripted.client()
    outcomes: list[object] = []

    def call() -> None:
        try:
            outcomes.append(client.exchange("user-token", tool=TICKETS).access_token)
        except ExchangeError as e:
            outcomes.append(e)

    leader = threading.Thread(target=call)
    leader.start()
    assert scripted.arrived.wait(10)  # the leader's request is at the issuer, unanswered
    followers = [threading.Thread(target=call) for _ in range(5)]
    for t in followers:
        t.start()
    for _ in followers:
        assert waiting.acquire(timeout=10)  # every follower is waiting for the leader's flight
    scripted.gate.set()
    for t in (leader, *followers):
        t.join(10)
    assert len(scripted.requests) == 1
    assert len(outcomes) == 6
    if answer[0] == 200:
        assert outcomes == ["cap.jwt.value"] * 6
    else:
        assert all(type(o) is InvalidGrant and o.description == "expired" for o in outcomes)
        assert len({id(o) for o in outcomes}) == 6  # each thread raises its own exception object
