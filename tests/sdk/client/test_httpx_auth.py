"""CapabilityAuth with real httpx clients, the real issuer and a tiny upstream tool on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from issuer.sdk.client import ExchangeClient, InvalidScope
from issuer.sdk.client.httpx_auth import CapabilityAuth
from tests.conftest import LiveIssuer
from tests.test_exchange_e2e import verify

from .conftest import FILES, TICKETS, Upstream, exchanges
from .test_exchange import HOME_POLICY


def bearer(header: str | None) -> str:
    assert header is not None and header.startswith("Bearer ")
    return header.removeprefix("Bearer ")


def test_requests_carry_alices_capability(live_sqlite: LiveIssuer, client: ExchangeClient,
                                          upstream: Upstream) -> None:
    user_token = live_sqlite.idp.token(sub="alice")
    auth = CapabilityAuth(client, user_token, tool=TICKETS, scope="tickets:read")
    with httpx.Client(auth=auth) as http:
        assert http.get(upstream.url + "/api/tickets/42").status_code == 200
        assert http.get(upstream.url + "/api/tickets/43").status_code == 200
    first, second = (bearer(h) for h in upstream.seen)
    claims = verify(live_sqlite, first)
    assert claims["sub"] == "idp-a:alice"
    assert claims["act"] == {"sub": "mcp-helpdesk"}
    assert claims["aud"] == TICKETS and claims["scope"] == "tickets:read"
    assert second == first  # from the cache
    assert exchanges(live_sqlite) == 1
    assert all(user_token not in (h or "") for h in upstream.seen)  # the user's token never reaches the tool


def test_a_401_retries_once_with_a_fresh_capability(live_sqlite: LiveIssuer, client: ExchangeClient,
                                                    upstream: Upstream) -> None:
    auth = CapabilityAuth(client, live_sqlite.idp.token(), tool=TICKETS, scope="tickets:read")
    with httpx.Client(auth=auth) as http:
        http.get(upstream.url + "/warm")  # caches a capability
        upstream.reject = 1
        resp = http.get(upstream.url + "/api/tickets/42")
    assert resp.status_code == 200
    assert len(resp.history) == 1 and resp.history[0].status_code == 401
    warm, rejected, retried = (bearer(h) for h in upstream.seen)
    assert rejected == warm  # the cached one was sent first...
    assert retried != rejected  # ...and the retry bypassed the cache
    assert verify(live_sqlite, retried)["sub"] == "idp-a:alice"
    assert exchanges(live_sqlite) == 2
    assert client.exchange(live_sqlite.idp.token(), tool=TICKETS) is not None  # another user: unaffected


def test_a_second_401_is_returned_to_the_caller(live_sqlite: LiveIssuer, client: ExchangeClient,
                                                upstream: Upstream) -> None:
    upstream.reject = 5
    auth = CapabilityAuth(client, live_sqlite.idp.token(), tool=TICKETS)
    with httpx.Client(auth=auth) as http:
        resp = http.get(upstream.url + "/x")
    assert resp.status_code == 401
    assert len(upstream.seen) == 2


def test_refused_exchange_raises_before_anything_is_sent(live_sqlite: LiveIssuer, client: ExchangeClient,
                                                         upstream: Upstream) -> None:
    auth = CapabilityAuth(client, live_sqlite.idp.token(), tool=TICKETS, scope="tickets:write")
    with httpx.Client(auth=auth) as http, pytest.raises(InvalidScope):
        http.get(upstream.url + "/x")
    assert upstream.seen == []


def test_call_bound_auth_gets_a_capability_per_request(live_sqlite: LiveIssuer, client: ExchangeClient,
                                                       upstream: Upstream) -> None:
    live_sqlite.apply(HOME_POLICY)
    auth = CapabilityAuth(client, live_sqlite.idp.token(), tool=FILES, scope="files:read", actions=["read"],
                          arguments={"path": "/home/alice/notes.txt"})
    with httpx.Client(auth=auth) as http:
        http.get(upstream.url + "/read")
        http.get(upstream.url + "/read")
    one, two = (bearer(h) for h in upstream.seen)
    assert one != two
    assert verify(live_sqlite, one, audience=FILES)["authorization_details"][0]["arguments"] == {
        "path": "/home/alice/notes.txt"}


def test_async_client(live_sqlite: LiveIssuer, client: ExchangeClient, upstream: Upstream) -> None:
    auth = CapabilityAuth(client, live_sqlite.idp.token(sub="alice"), audience="tickets", scope="tickets:read")
    upstream.reject = 1

    async def main() -> list[int]:
        async with httpx.AsyncClient(auth=auth) as http:
            a = await http.get(upstream.url + "/a")
            b = await http.get(upstream.url + "/b")
            return [a.status_code, b.status_code, len(a.history)]

    assert asyncio.run(main()) == [200, 200, 1]
    rejected, retried, cached = (bearer(h) for h in upstream.seen)
    assert retried != rejected and cached == retried
    claims = verify(live_sqlite, cached)
    assert claims["sub"] == "idp-a:alice" and claims["act"] == {"sub": "mcp-helpdesk"}
    assert exchanges(live_sqlite) == 2


def test_repr_hides_the_user_token(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    token = live_sqlite.idp.token()
    auth = CapabilityAuth(client, token, tool=TICKETS)
    assert token not in repr(auth) and live_sqlite.secrets["mcp-helpdesk"] not in repr(auth)
    assert "https://tickets.example" in repr(auth)
