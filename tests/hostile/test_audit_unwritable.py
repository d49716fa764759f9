"""No refusal without its record: when the audit row cannot be written the answer is a 503 that says so.

The failure is real (a trigger that makes every INSERT into the trail fail, as a full disk or a read-only
replica would), not a mock. A refusal used to stand with its record silently lost.
"""

from __future__ import annotations

import logging
import re

import pytest

from issuer.oauth.rfc8414 import INTROSPECT_PATH
from tests.conftest import LiveIssuer
from tests.hostile.conftest import audit_count
from tests.test_audit_failure import _break_audit_writes
from tests.test_exchange_e2e import error_of


def _failures(live: LiveIssuer) -> float:
    text = live.http.get("/metrics").text
    return sum(float(v) for v in re.findall(r'^issuer_audit_write_failures_total\{[^}]*\} (\S+)$', text, re.M))


def test_an_unrecorded_refusal_is_a_503_counted_and_logged(live: LiveIssuer, caplog: pytest.LogCaptureFixture) -> None:
    assert live.exchange().status_code == 200
    rows = audit_count(live)
    _break_audit_writes(live)
    refusals = {
        "in the exchange (scope outside policy)": lambda: live.exchange(scope="tickets:write"),
        "before the exchange (wrong secret)": lambda: live.exchange(secret="wrong"),
        "at the form check (NUL)": lambda: live.exchange(scope="tickets:read\x00"),
        "at introspection (NUL)": lambda: live.post_form(INTROSPECT_PATH, [("token", "\x00")],
                                                         auth=("mcp-helpdesk", live.secrets["mcp-helpdesk"])),
    }
    with caplog.at_level(logging.ERROR):
        for what, send in refusals.items():
            failures = _failures(live)
            body = error_of(send(), 503, "temporarily_unavailable")
            assert "audit" in body["error_description"], what
            assert _failures(live) == failures + 1, what
    assert len([r for r in caplog.records if "audit write" in r.getMessage()]) >= len(refusals)
    assert audit_count(live) == rows
