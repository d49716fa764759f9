"""The revocation feed: revoked jtis, subjects and clients, incremental polls, staleness, the poller thread,
and the feed's signature, issuer, version and freshness (forged, replayed and frozen feeds)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from freezegun import freeze_time

from issuer import clock
from issuer.sdk.verifier import CapabilityVerifier, IssuerUnavailable, Revoked
from tests.sdk.verifier.conftest import FakeIssuer, compact, hs256

START = "2030-01-01T00:00:00Z"
Make = Callable[..., CapabilityVerifier]


def test_revoked_jti(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=30)
    token, other = fake.token(), fake.token()
    cap = verifier.verify(token)
    assert fake.hits["/revocations"] == 1  # the first verify polled once, synchronously
    fake.revoke_jti(cap.jti, cap.expires_at)
    verifier.poll_revocations()
    with pytest.raises(Revoked) as info:
        verifier.verify(token)
    assert info.value.www_authenticate() == (
        'Bearer error="invalid_token", error_description="the capability has been revoked"')
    assert info.value.status_code == 401
    assert verifier.verify(other).sub == "alice"


def test_revoked_subject(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=30)
    with freeze_time(START) as frozen:
        now = int(clock.now())
        before = fake.token()
        bob = fake.token(sub="bob")
        verifier.verify(before)
        fake.revoke_subject("alice", revoked_before=now + 1)
        verifier.poll_revocations()
        with pytest.raises(Revoked):
            verifier.verify(before)  # iat < revoked_before
        assert verifier.verify(bob).sub == "bob"
        frozen.tick(1)
        assert verifier.verify(fake.token()).sub == "alice"  # issued at revoked_before: a new login


def test_revoked_client_anywhere_in_the_act_chain(fake: FakeIssuer, make_verifier: Make) -> None:
    """A compromised MCP server: its own capabilities and the ones chained from them through another client."""
    verifier = make_verifier(revocation_poll_interval=30)
    with freeze_time(START) as frozen:
        now = int(clock.now())
        direct = fake.token(client_id="mcp-evil", act={"sub": "mcp-evil"})
        chained = fake.token(client_id="mcp-next", act={"sub": "mcp-next", "act": {"sub": "mcp-evil"}})
        unrelated = fake.token()
        fake.revoke_client("mcp-evil", revoked_before=now + 1)
        verifier.poll_revocations()
        for token in (direct, chained):
            with pytest.raises(Revoked):
                verifier.verify(token)
        assert verifier.verify(unrelated).client_id == "mcp-helpdesk"
        frozen.tick(1)
        assert verifier.verify(fake.token(client_id="mcp-evil", act={"sub": "mcp-evil"})).client_id == "mcp-evil"


def _applied(verifier: CapabilityVerifier) -> int:
    assert verifier._revocations is not None
    return verifier._revocations.version


@pytest.mark.parametrize("attack", ["unsigned", "unknown key", "capability typ", "other issuer", "hmac"])
def test_forged_feed_is_rejected_and_the_list_kept(fake: FakeIssuer, make_verifier: Make, attack: str) -> None:
    verifier = make_verifier(revocation_poll_interval=30)
    cap = verifier.verify(fake.token())
    fake.revoke_jti(cap.jti, cap.expires_at)
    verifier.poll_revocations()
    empty = {"iss": fake.url, "iat": int(clock.now()), "issued_at": clock.now(), "version": 99,
             "jtis": [], "subjects": [], "clients": []}
    if attack == "unsigned":  # the JSON the feed once was: anyone in the middle could write it
        fake.feed_raw = json.dumps(empty).encode()
    elif attack == "unknown key":
        kid = fake.add_key("ES256")
        fake.feed_raw = fake.feed_document(empty, kid=kid)
        del fake.keys[kid]  # signed by a key the issuer does not publish
    elif attack == "capability typ":  # a capability passed off as a feed
        fake.feed_raw = fake.feed_document(empty, typ="at+jwt")
    elif attack == "other issuer":
        fake.feed_raw = fake.feed_document(empty, iss="https://evil.example")
    else:
        fake.feed_raw = compact({"alg": "HS256", "kid": fake.ec_kid, "typ": "revocation-feed+jwt"}, empty,
                                hs256(b"guess"))
    with pytest.raises(IssuerUnavailable, match="rejected"):
        verifier.poll_revocations()
    with pytest.raises(Revoked):
        verifier.verify(fake.token(jti=cap.jti))
    assert _applied(verifier) == 1


def test_rolled_back_feed_is_rejected(fake: FakeIssuer, make_verifier: Make) -> None:
    """An older signed feed, replayed, would hide every revocation made since."""
    verifier = make_verifier(revocation_poll_interval=30)
    old = fake.feed_document()  # version 0: nothing revoked yet
    cap = verifier.verify(fake.token())
    fake.revoke_jti(cap.jti, cap.expires_at)
    verifier.poll_revocations()
    assert _applied(verifier) == 1
    fake.feed_raw = old
    with pytest.raises(IssuerUnavailable, match="older than the applied 1"):
        verifier.poll_revocations()
    assert _applied(verifier) == 1
    with pytest.raises(Revoked):
        verifier._revocations.check(cap)  # type: ignore[union-attr]
    fake.feed_raw = None
    verifier.poll_revocations()  # the same version again is fine
    assert _applied(verifier) == 1


def test_frozen_feed_is_rejected(fake: FakeIssuer, make_verifier: Make) -> None:
    """The newest feed, replayed forever, would keep a verifier "fresh" while the issuer revokes more."""
    verifier = make_verifier(revocation_poll_interval=10, timeout=2.0)
    with freeze_time(START) as frozen:
        verifier.poll_revocations()
        fake.feed_raw = fake.feed_document()
        frozen.tick(10)
        verifier.poll_revocations()  # still recent
        frozen.tick(43)  # 53 s: older than 2 * interval + timeout + leeway (22 s + 30 s)
        with pytest.raises(IssuerUnavailable, match="not recent"):
            verifier.poll_revocations()


def test_incremental_polls_ask_since_issued_at_minus_5(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=30)
    with freeze_time(START):
        verifier.poll_revocations()
        verifier.poll_revocations()
        issued_at = clock.now()  # what the fake feed answered
    assert fake.queries[0] == {}  # the first poll asks for everything still live
    assert fake.queries[1] == {"since": [repr(issued_at - 5)]}


def test_entries_are_merged_across_polls(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=30)
    first, second = verifier.verify(fake.token()), verifier.verify(fake.token())
    fake.revoke_jti(first.jti, first.expires_at)
    verifier.poll_revocations()
    fake.feed["jtis"] = [{"jti": second.jti, "exp": second.expires_at}]  # an incremental answer
    verifier.poll_revocations()
    for cap in (first, second):
        with pytest.raises(Revoked):
            verifier._revocations.check(cap)  # type: ignore[union-attr]


def test_entries_are_kept_only_while_they_matter(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=30, leeway=30)
    poller = verifier._revocations
    assert poller is not None
    with freeze_time(START) as frozen:
        now = int(clock.now())
        fake.revoke_jti("short", now + 60)
        fake.revoke_jti("long", now + 900)
        fake.revoke_subject("alice", now)
        verifier.poll_revocations()
        assert poller.size == (2, 1, 0)
        fake.feed = {"jtis": [], "subjects": []}
        frozen.tick(91)  # "short" expired 31 s ago: past exp + leeway
        verifier.poll_revocations()
        assert poller.size == (1, 1, 0)
        frozen.tick(3600)
        verifier.poll_revocations()
        assert poller.size == (0, 0, 0)


def test_expired_feed_entries_are_not_stored(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=30)
    fake.revoke_jti("old", int(clock.now()) - 3600)
    fake.revoke_subject("alice", int(clock.now()) - 7200)
    verifier.poll_revocations()
    assert verifier._revocations.size == (0, 0, 0)  # type: ignore[union-attr]


def test_feed_unreachable_at_start_fails_closed(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=30)
    fake.feed_down = True
    with pytest.raises(IssuerUnavailable) as info:
        verifier.verify(fake.token())
    assert info.value.status_code == 503
    assert "revocation" in info.value.description
    with pytest.raises(IssuerUnavailable):
        verifier.poll_revocations()


def test_stale_list_fails_closed_then_recovers(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=10, timeout=2.0, refetch_cooldown=5)
    with freeze_time(START) as frozen:
        verifier.verify(fake.token())
        fake.feed_down = True
        frozen.tick(22)  # within 2 * interval + timeout: the poller may just be late
        assert verifier.verify(fake.token()).sub == "alice"
        polls = fake.hits["/revocations"]
        frozen.tick(1)  # 23 s without a successful poll: too old to trust
        with pytest.raises(IssuerUnavailable, match="out of date"):
            verifier.verify(fake.token())
        assert fake.hits["/revocations"] == polls + 1  # it tried once, synchronously
        with pytest.raises(IssuerUnavailable):
            verifier.verify(fake.token())
        assert fake.hits["/revocations"] == polls + 1  # and not again within the retry interval
        fake.feed_down = False
        frozen.tick(5)
        assert verifier.verify(fake.token()).sub == "alice"


def test_malformed_feed_keeps_the_current_list(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=30)
    cap = verifier.verify(fake.token())
    fake.revoke_jti(cap.jti, cap.expires_at)
    verifier.poll_revocations()
    for body in ({"jtis": []}, {"issued_at": 1, "jtis": [{"jti": 5, "exp": 1}]},
                 {"issued_at": 1, "subjects": [{"sub_sha256": "x"}]}, [], {"issued_at": "now"}):
        fake.feed_body = body
        with pytest.raises(IssuerUnavailable):
            verifier.poll_revocations()
        with pytest.raises(Revoked):
            verifier._revocations.check(cap)  # type: ignore[union-attr]


def test_no_feed_advertised_means_nothing_to_poll(fake: FakeIssuer, make_verifier: Make) -> None:
    fake.metadata_overrides["revocation_feed_endpoint"] = None
    verifier = make_verifier(revocation_poll_interval=30)
    assert verifier.verify(fake.token()).sub == "alice"
    assert fake.hits["/revocations"] == 0


def test_polling_off_by_default(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    verifier.verify(fake.token())
    assert fake.hits["/revocations"] == 0
    with pytest.raises(RuntimeError):
        verifier.poll_revocations()


def test_pinned_jwks_still_polls_when_asked(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(jwks=fake.jwks(), revocation_poll_interval=30)
    cap = verifier.verify(fake.token())
    assert fake.hits["/jwks.json"] == 0 and fake.hits["/revocations"] == 1
    assert cap.sub == "alice"


def test_background_thread_polls_and_close_stops_it(fake: FakeIssuer, make_verifier: Make) -> None:
    verifier = make_verifier(revocation_poll_interval=0.05)
    token = fake.token()
    cap = verifier.verify(token)
    fake.revoke_jti(cap.jti, cap.expires_at)
    assert fake.wait_for_feed_requests(3)  # the thread polls by itself; no verify needed
    with pytest.raises(Revoked):
        verifier.verify(token)
    thread = verifier._revocations._thread  # type: ignore[union-attr]
    assert thread is not None and thread.daemon and thread.is_alive()
    verifier.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        verifier.verify(token)


def test_context_manager_closes(fake: FakeIssuer) -> None:
    with CapabilityVerifier(issuer=fake.url, audience="https://tickets.example", allow_insecure_loopback=True,
                            revocation_poll_interval=30) as verifier:
        verifier.verify(fake.token())
        thread = verifier._revocations._thread  # type: ignore[union-attr]
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()
