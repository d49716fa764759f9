"""The SDK against the real issuer on a real socket: capabilities minted by token exchange."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from freezegun import freeze_time

from issuer.revocation import RevocationList
from issuer.sdk.verifier import (
    CapabilityVerifier,
    ConstraintViolated,
    InsufficientScope,
    Replayed,
    Revoked,
    WrongAudience,
)
from tests.conftest import LiveIssuer

TICKETS = "https://tickets.example"
FILES = "https://files.example"
FILES_POLICY = """
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


@pytest.fixture
def make(live_sqlite: LiveIssuer) -> Iterator[Callable[..., CapabilityVerifier]]:
    made: list[CapabilityVerifier] = []

    def build(audience: str = TICKETS, **kw: Any) -> CapabilityVerifier:
        v = CapabilityVerifier(issuer=live_sqlite.url, audience=audience, allow_insecure_loopback=True, **kw)
        made.append(v)
        return v

    yield build
    for v in made:
        v.close()


def mint(live: LiveIssuer, **kw: Any) -> str:
    resp = live.exchange(**kw)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def files_token(live: LiveIssuer, detail: dict[str, Any] | None = None) -> str:
    extra = [("authorization_details", json.dumps([{"type": "tool_invocation", **detail}]))] if detail else []
    return mint(live, resource=FILES, scope="files:read", extra=extra)


def test_minted_capability_verifies(live_sqlite: LiveIssuer, make: Callable[..., CapabilityVerifier]) -> None:
    token = mint(live_sqlite)
    claims = jwt.decode(token, options={"verify_signature": False})
    cap = make().check(token, scope="tickets:read")
    assert cap.sub == claims["sub"] == "idp-a:alice"
    assert (cap.client_id, cap.actor_chain) == ("mcp-helpdesk", ("mcp-helpdesk",))
    assert cap.scopes == frozenset({"tickets:read"})
    assert (cap.jti, cap.txn, cap.policy_version) == (claims["jti"], claims["txn"], claims["pol"])
    assert (cap.issued_at, cap.expires_at) == (claims["iat"], claims["exp"])
    assert cap.groups == ("support",) and cap.claims == claims
    with pytest.raises(InsufficientScope):
        make().authorize(cap, scope="tickets:write")


def test_capability_for_another_tool_refused(
    live_sqlite: LiveIssuer, make: Callable[..., CapabilityVerifier]
) -> None:
    with pytest.raises(WrongAudience):
        make(FILES).verify(mint(live_sqlite))


def test_delegated_subject_token_gives_the_whole_actor_chain(
    live_sqlite: LiveIssuer, make: Callable[..., CapabilityVerifier]
) -> None:
    subject = live_sqlite.idp.token(act={"sub": "assistant-agent"})
    cap = make().verify(mint(live_sqlite, subject_token=subject))
    assert cap.actor_chain == ("mcp-helpdesk", "assistant-agent")
    assert cap.act == {"sub": "mcp-helpdesk", "act": {"sub": "assistant-agent"}}


def test_constraints_from_policy(live_sqlite: LiveIssuer, make: Callable[..., CapabilityVerifier]) -> None:
    live_sqlite.apply(FILES_POLICY)
    verifier = make(FILES)
    cap = verifier.verify(files_token(live_sqlite))
    verifier.authorize(cap, scope="files:read", action="read", arguments={"path": "/home/alice/notes.txt"})
    verifier.authorize(cap, action="list", arguments={"path": "/home/alice/"})
    with pytest.raises(ConstraintViolated):
        verifier.authorize(cap, action="read", arguments={"path": "/home/alice/../bob/notes.txt"})
    with pytest.raises(ConstraintViolated):
        verifier.authorize(cap, action="read", arguments={"path": "/home/bob/notes.txt"})
    with pytest.raises(InsufficientScope):
        verifier.authorize(cap, action="delete", arguments={"path": "/home/alice/notes.txt"})


def test_call_bound_capability_once(live_sqlite: LiveIssuer, make: Callable[..., CapabilityVerifier]) -> None:
    live_sqlite.apply(FILES_POLICY)
    verifier = make(FILES)
    call = {"path": "/home/alice/notes.txt"}
    token = files_token(live_sqlite, {"actions": ["read"], "arguments": call})
    cap = verifier.check(token, scope="files:read", action="read", arguments=call)
    assert cap.call_bound and cap.arguments == call
    with pytest.raises(Replayed):
        verifier.check(token, scope="files:read", action="read", arguments=call)
    other = files_token(live_sqlite, {"actions": ["read"], "arguments": call})
    with pytest.raises(ConstraintViolated):
        verifier.check(other, action="read", arguments={"path": "/home/alice/other.txt"})


def test_rfc7009_revocation_reaches_the_verifier(
    live_sqlite: LiveIssuer, make: Callable[..., CapabilityVerifier]
) -> None:
    verifier = make(revocation_poll_interval=30)
    token, kept = mint(live_sqlite), mint(live_sqlite)
    verifier.verify(token)
    resp = live_sqlite.post_form("/revoke", [("token", token)],
                                 auth=("mcp-helpdesk", live_sqlite.secrets["mcp-helpdesk"]))
    assert resp.status_code == 200
    verifier.poll_revocations()
    with pytest.raises(Revoked):
        verifier.verify(token)
    assert verifier.verify(kept).sub == "idp-a:alice"


def test_subject_revocation_reaches_the_verifier(
    live_sqlite: LiveIssuer, make: Callable[..., CapabilityVerifier]
) -> None:
    verifier = make(revocation_poll_interval=30)
    with freeze_time("2030-01-01T00:00:00Z") as frozen:
        before = mint(live_sqlite, subject_token=live_sqlite.idp.token())
        cap = verifier.verify(before)
        frozen.tick(2)
        RevocationList(live_sqlite.db).revoke_subject(cap.sub, by="tests")
        frozen.tick(2)
        after = mint(live_sqlite, subject_token=live_sqlite.idp.token())
        verifier.poll_revocations()
        with pytest.raises(Revoked):
            verifier.verify(before)
        assert verifier.verify(after).sub == cap.sub
