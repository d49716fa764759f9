"""Failed admin-key sign-ins, on the admin API and in the console: logged (never the key), counted in
``issuer_admin_auth_failures_total`` and throttled per source address and per key id."""

from __future__ import annotations

import logging
import secrets

import pytest
from flask.testing import FlaskClient

from issuer.admin.credentials import FAILED_SIGN_INS_PER_ADDRESS, FAILED_SIGN_INS_PER_KEY
from tests.conftest import LiveIssuer
from tests.console.conftest import Console, make_key


def _client(live: LiveIssuer, address: str) -> FlaskClient:
    client = live.app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _api(live: LiveIssuer, key: str, address: str) -> int:
    return _client(live, address).get("/admin/v1/clients", headers={"Authorization": f"Bearer {key}"}).status_code


def _metric(live: LiveIssuer, surface: str, reason: str) -> float:
    want = f'issuer_admin_auth_failures_total{{reason="{reason}",surface="{surface}"}}'
    for line in live.http.get("/metrics").text.splitlines():
        if line.startswith(want):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wrong(key: str) -> str:
    """The same key id with another secret."""
    return key[: len("iak_") + 17] + secrets.token_urlsafe(32)[:43]


def _random_key() -> str:
    """A well-formed key of a key id that does not exist."""
    return f"iak_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)[:43]}"


def test_api_failures_are_logged_counted_and_throttled_per_address(
    live_sqlite: LiveIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    live = live_sqlite
    key = make_key(live, "auditor", "ops")
    caplog.set_level(logging.WARNING, logger="issuer.admin.credentials")
    guesses = [_wrong(key) for _ in range(FAILED_SIGN_INS_PER_ADDRESS.amount - 1)] + ["not-a-key"]
    for guess in guesses:
        assert _api(live, guess, "10.0.0.1") == 401
    assert _metric(live, "api", "invalid_key") == len(guesses)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("admin key sign-in failed (api): address 10.0.0.1" in m for m in messages) == len(guesses)
    assert any(key[4:20] in m for m in messages) and any("malformed" in m for m in messages)
    assert not any(guess[21:] in m for guess in guesses[:-1] for m in messages)  # never a key's secret
    assert not any("not-a-key" in m for m in messages)
    assert not any(key[21:] in m for m in messages)
    # throttled: even the right key is refused unchecked from that address, with when to come back
    resp = _client(live, "10.0.0.1").get("/admin/v1/clients", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 429 and resp.json["error"] == "rate_limited"  # type: ignore[index]
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert _metric(live, "api", "rate_limited") == 1
    other = make_key(live, "auditor", "other")
    assert _api(live, other, "10.0.0.2") == 200  # another address is not affected
    assert _client(live, "10.0.0.3").get("/admin/v1/clients").status_code == 401
    assert _metric(live, "api", "invalid_key") == len(guesses)  # no credentials sent: nothing guessed


def test_api_failures_are_throttled_per_key_id_across_addresses(live_sqlite: LiveIssuer) -> None:
    live = live_sqlite
    key = make_key(live, "auditor", "ops")
    for i in range(FAILED_SIGN_INS_PER_KEY.amount):
        assert _api(live, _wrong(key), f"10.0.1.{i}") == 401
    assert _api(live, key, "10.0.2.1") == 429  # that key id, from an address that never failed
    assert _api(live, make_key(live, "auditor", "other"), "10.0.2.1") == 200  # other keys are fine


def test_console_sign_in_failures_are_counted_and_throttled(
    live_sqlite: LiveIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    live = live_sqlite
    key = make_key(live, "admin", "ops")
    caplog.set_level(logging.WARNING, logger="issuer.admin.credentials")
    console = Console(_client(live, "10.0.3.1"), key)
    console.get("/sign-in")
    for _ in range(FAILED_SIGN_INS_PER_ADDRESS.amount):  # other key ids: only the address budget is spent
        assert console.post("/sign-in", {"admin_key": _random_key()}).status_code == 401
    assert _metric(live, "console", "invalid_key") == FAILED_SIGN_INS_PER_ADDRESS.amount
    assert any("admin key sign-in failed (console): address 10.0.3.1" in r.getMessage() for r in caplog.records)
    resp = console.post("/sign-in", {"admin_key": key})
    assert resp.status_code == 429
    assert "Too many failed sign-ins" in resp.get_data(as_text=True)
    assert key not in resp.get_data(as_text=True)
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert console.client.get("/console/").status_code == 302  # not signed in
    assert _metric(live, "console", "rate_limited") == 1
    # the budget is shared with the admin API: the same address is throttled there too
    assert _api(live, key, "10.0.3.1") == 429
    Console(_client(live, "10.0.3.2"), key).sign_in()  # another address signs in
