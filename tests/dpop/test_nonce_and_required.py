"""DPoP-required clients and server nonces (RFC 9449 sections 5 and 8), over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from freezegun import freeze_time

from issuer.audit import query_audit
from issuer.dpop import NonceSource
from issuer.registry import set_client_dpop_required
from tests.conftest import LiveIssuer, make_settings
from tests.dpop.test_proof import Holder
from tests.dpop.test_token_endpoint import exchange, token_url
from tests.support.fake_idp import FakeIdP
from tests.test_exchange_e2e import error_of


def test_a_dpop_required_client_without_a_proof_is_refused(live: LiveIssuer) -> None:
    """A client registered as DPoP-required never receives a bearer capability, whatever it forgets."""
    set_client_dpop_required(live.db, "mcp-helpdesk", True)
    live.app.extensions["issuer"].snapshots.invalidate()
    desc = error_of(exchange(live), 400, "invalid_dpop_proof")["error_description"]
    assert "must send one" in desc
    assert query_audit(live.db, newest_first=True, limit=1)[0].reason == "invalid_dpop_proof"
    holder = Holder()
    body = exchange(live, proofs=[holder.proof(htu=token_url(live))]).json()
    assert body["token_type"] == "DPoP"
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["cnf"] == {"jkt": holder.jkt}


@pytest.fixture
def nonced(tmp_path: Path, sqlite_url: str, idp: FakeIdP) -> Iterator[LiveIssuer]:
    issuer = LiveIssuer(make_settings(tmp_path, sqlite_url, dpop_nonce=True), idp)
    issuer.standard_setup()
    yield issuer
    issuer.close()


def test_nonces_are_required_and_served_when_on(nonced: LiveIssuer) -> None:
    holder = Holder()
    url = token_url(nonced)
    first = exchange(nonced, proofs=[holder.proof(htu=url)])
    assert error_of(first, 400, "use_dpop_nonce")
    nonce = first.headers["DPoP-Nonce"]
    resp = exchange(nonced, proofs=[holder.proof(htu=url, nonce=nonce)])
    assert resp.status_code == 200, resp.text
    assert resp.headers["DPoP-Nonce"]  # every answer carries the current nonce
    error_of(exchange(nonced, proofs=[holder.proof(htu=url, nonce="made-up")]), 400, "use_dpop_nonce")
    assert exchange(nonced).status_code == 200  # nonces concern proofs; a bearer client is unaffected


def test_a_nonce_expires_after_two_periods(nonced: LiveIssuer) -> None:
    """A proof made in advance (say, by malware that can sign but not send) stops working."""
    holder = Holder()
    url = token_url(nonced)
    with freeze_time("2030-01-01T00:00:00Z") as frozen:
        nonce = exchange(nonced, proofs=[holder.proof(htu=url)]).headers["DPoP-Nonce"]
        frozen.tick(NonceSource.PERIOD)  # the next window: still good
        assert exchange(nonced, proofs=[holder.proof(htu=url, nonce=nonce)]).status_code == 200
        frozen.tick(NonceSource.PERIOD)
        error_of(exchange(nonced, proofs=[holder.proof(htu=url, nonce=nonce)]), 400, "use_dpop_nonce")


def test_nonces_of_another_deployment_are_refused(nonced: LiveIssuer) -> None:
    foreign = NonceSource(b"another pepper").current(__import__("time").time())
    error_of(exchange(nonced, proofs=[Holder().proof(htu=token_url(nonced), nonce=foreign)]), 400,
             "use_dpop_nonce")


def test_nonce_source_is_shared_by_replicas_with_one_pepper() -> None:
    one, two = NonceSource(b"p" * 32), NonceSource(b"p" * 32)
    assert two.valid(one.current(1000.0), 1000.0)
    assert not two.valid(one.current(1000.0), 1000.0 + 2 * NonceSource.PERIOD)
    assert not one.valid(None, 1000.0) and not one.valid("x" * 100, 1000.0)
