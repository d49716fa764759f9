"""The capability cache, against the real issuer: the audit table counts the exchanges that reached it.

Expiry is driven by freezegun (the issuer runs in this process, so its clock is frozen too); nothing sleeps.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from issuer.sdk.client import ExchangeClient, InvalidScope
from tests.conftest import LiveIssuer
from tests.test_exchange_e2e import verify

from .conftest import FILES, TICKETS, client_for, exchanges
from .test_exchange import HOME_POLICY


def test_same_user_tool_and_scope_twice_is_one_exchange(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    token = live_sqlite.idp.token(sub="alice")
    first = client.exchange(token, tool=TICKETS, scope="tickets:read")
    second = client.exchange(token, tool=TICKETS, scope=["tickets:read"])
    assert second == first
    assert exchanges(live_sqlite) == 1


def test_scopes_are_one_key_whatever_their_order(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    live_sqlite.apply(HOME_POLICY.replace("scopes: [tickets:read]", "scopes: [tickets:read, tickets:write]"))
    token = live_sqlite.idp.token()
    a = client.exchange(token, tool=TICKETS, scope="tickets:read tickets:write")
    b = client.exchange(token, tool=TICKETS, scope=["tickets:write", "tickets:read", "tickets:write"])
    assert a == b and exchanges(live_sqlite) == 1
    client.exchange(token, tool=TICKETS, scope="tickets:read")  # fewer scopes: another capability
    assert exchanges(live_sqlite) == 2


def test_different_users_never_share(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    alice = client.exchange(live_sqlite.idp.token(sub="alice"), tool=TICKETS, scope="tickets:read")
    bob = client.exchange(live_sqlite.idp.token(sub="bob"), tool=TICKETS, scope="tickets:read")
    assert verify(live_sqlite, alice.access_token)["sub"] == "idp-a:alice"
    assert verify(live_sqlite, bob.access_token)["sub"] == "idp-a:bob"
    assert exchanges(live_sqlite) == 2
    # a new token of the same user is a new key too: the cache never decides who the user is
    client.exchange(live_sqlite.idp.token(sub="alice"), tool=TICKETS, scope="tickets:read")
    assert exchanges(live_sqlite) == 3


def test_tool_and_narrowing_are_part_of_the_key(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    live_sqlite.apply(HOME_POLICY)
    token = live_sqlite.idp.token()
    client.exchange(token, tool=TICKETS)
    client.exchange(token, tool=FILES)
    docs = client.exchange(token, tool=FILES, constraints={"path": {"prefix": "/home/alice/docs/"}})
    read = client.exchange(token, tool=FILES, actions=["read"])
    assert exchanges(live_sqlite) == 4
    assert client.exchange(token, tool=FILES, constraints={"path": {"prefix": "/home/alice/docs/"}}) == docs
    assert client.exchange(token, tool=FILES, actions=["read"]) == read
    assert exchanges(live_sqlite) == 4


def test_expiry_within_the_margin_triggers_a_new_exchange(live_sqlite: LiveIssuer) -> None:
    client = client_for(live_sqlite, refresh_margin=30)
    with freeze_time(datetime.now(UTC)) as frozen:
        token = live_sqlite.idp.token(lifetime=3600)
        first = client.exchange(token, tool=TICKETS, scope="tickets:read")
        lifetime = first.expires_at - datetime.now(UTC).timestamp()
        assert lifetime > 30
        frozen.tick(timedelta(seconds=lifetime - 31))  # 31 s left: still fresh
        assert client.exchange(token, tool=TICKETS, scope="tickets:read") == first
        assert exchanges(live_sqlite) == 1
        frozen.tick(timedelta(seconds=2))  # 29 s left: inside the margin
        second = client.exchange(token, tool=TICKETS, scope="tickets:read")
        assert second.access_token != first.access_token
        assert second.expires_at > first.expires_at
        assert exchanges(live_sqlite) == 2
        assert client.exchange(token, tool=TICKETS, scope="tickets:read") == second
        assert exchanges(live_sqlite) == 2


def test_a_capability_shorter_than_the_margin_is_not_cached(live_sqlite: LiveIssuer) -> None:
    client = client_for(live_sqlite, refresh_margin=3600)
    token = live_sqlite.idp.token()
    client.exchange(token, tool=TICKETS)
    client.exchange(token, tool=TICKETS)
    assert exchanges(live_sqlite) == 2


def test_call_bound_capabilities_are_never_cached(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    live_sqlite.apply(HOME_POLICY)
    token = live_sqlite.idp.token()
    args = {"path": "/home/alice/notes.txt"}
    one = client.exchange(token, tool=FILES, scope="files:read", arguments=args)
    two = client.exchange(token, tool=FILES, scope="files:read", arguments=args)
    assert one.call_bound and two.call_bound
    assert one.access_token != two.access_token
    assert exchanges(live_sqlite) == 2
    # and a session capability for the same user and tool is still its own entry
    session = client.exchange(token, tool=FILES, scope="files:read")
    assert not session.call_bound
    assert client.exchange(token, tool=FILES, scope="files:read") == session
    assert exchanges(live_sqlite) == 3


def test_refusals_are_not_cached(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    token = live_sqlite.idp.token()
    for _ in range(2):
        with pytest.raises(InvalidScope):
            client.exchange(token, tool=TICKETS, scope="tickets:write")
    assert exchanges(live_sqlite) == 2


def test_force_refresh_bypasses_and_replaces_the_entry(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    token = live_sqlite.idp.token()
    first = client.exchange(token, tool=TICKETS)
    fresh = client.exchange(token, tool=TICKETS, force_refresh=True)
    assert fresh.access_token != first.access_token
    assert client.exchange(token, tool=TICKETS) == fresh
    assert exchanges(live_sqlite) == 2


def test_clear_cache(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    token = live_sqlite.idp.token()
    client.exchange(token, tool=TICKETS)
    client.clear_cache()
    client.exchange(token, tool=TICKETS)
    assert exchanges(live_sqlite) == 2


def test_cache_is_bounded_and_evicts_the_oldest(live_sqlite: LiveIssuer) -> None:
    client = client_for(live_sqlite, max_cache_entries=2)
    tokens = {sub: live_sqlite.idp.token(sub=sub) for sub in ("alice", "bob", "carol")}
    for token in tokens.values():
        client.exchange(token, tool=TICKETS)
    assert exchanges(live_sqlite) == 3
    client.exchange(tokens["carol"], tool=TICKETS)
    client.exchange(tokens["bob"], tool=TICKETS)
    assert exchanges(live_sqlite) == 3  # the two newest are still there
    client.exchange(tokens["alice"], tool=TICKETS)
    assert exchanges(live_sqlite) == 4  # the oldest was evicted


def test_zero_entries_disables_the_cache(live_sqlite: LiveIssuer) -> None:
    client = client_for(live_sqlite, max_cache_entries=0)
    token = live_sqlite.idp.token()
    client.exchange(token, tool=TICKETS)
    client.exchange(token, tool=TICKETS)
    assert exchanges(live_sqlite) == 2


def test_cached_details_cannot_be_changed_by_a_caller(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    live_sqlite.apply(HOME_POLICY)
    token = live_sqlite.idp.token()
    cap = client.exchange(token, tool=FILES)
    cap.authorization_details[0]["constraints"]["path"]["prefix"] = "/"
    again = client.exchange(token, tool=FILES)
    assert again.authorization_details[0]["constraints"] == {"path": {"prefix": "/home/alice/"}}
    assert exchanges(live_sqlite) == 1


def test_concurrent_misses_make_one_exchange(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    token = live_sqlite.idp.token()
    results: list[str] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        results.append(client.exchange(token, tool=TICKETS).access_token)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert exchanges(live_sqlite) == 1


def test_concurrent_users_each_get_their_own(live_sqlite: LiveIssuer, client: ExchangeClient) -> None:
    subs = [f"user{i}" for i in range(6)]
    tokens = {sub: live_sqlite.idp.token(sub=sub) for sub in subs}
    got: dict[str, str] = {}

    def worker(sub: str) -> None:
        got[sub] = client.exchange(tokens[sub], tool=TICKETS).access_token

    threads = [threading.Thread(target=worker, args=(sub,)) for sub in subs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {sub: verify(live_sqlite, tok)["sub"] for sub, tok in got.items()} == {s: f"idp-a:{s}" for s in subs}
    assert exchanges(live_sqlite) == 6
