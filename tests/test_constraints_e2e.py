"""Argument constraints and call-bound capabilities (RFC 9396) over HTTP.

The files tool is granted with `path` under `/home/${sub}/`; tickets with a
project allowlist from the user's `projects` claim; a SQL tool with tenant
equality. The same evaluator the SDK imports decides what a capability admits.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from issuer.constraints import evaluate
from issuer.registry import ScopeSpec, add_tool
from issuer.tool_invocation import arguments_digest
from tests.conftest import LiveIssuer
from tests.test_exchange_e2e import error_of, verify

POLICY = """
rules:
  - id: home-files
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: files
    scopes: [files:read]
    actions: [read, list]
    constraints:
      path: {prefix: "/home/${sub}/"}
  - id: project-tickets
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
    constraints:
      project: {in: ["${claims.projects}"]}
  - id: tenant-sql
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: sql
    scopes: [sql:query]
    constraints:
      tenant: {eq: "${claims.tenant}"}
      limit: {max: 1000}
"""


@pytest.fixture
def cons(live: LiveIssuer) -> LiveIssuer:
    add_tool(live.db, name="sql", resource_uri="https://sql.example",
             scopes=[ScopeSpec("sql:query", actions=("select",))])
    from issuer.registry import add_client

    _, secret = add_client(live.db, client_id="mcp-sql", resource_uri="https://mcp.sql.example",
                           tools=["sql"], pepper=live.pepper)
    live.secrets["mcp-sql"] = secret or ""
    live.apply(POLICY.replace("clients: [mcp-helpdesk]\n    tool: sql", "clients: [mcp-sql]\n    tool: sql"))
    return live


def files(live: LiveIssuer, detail: Any = None, sub: str = "alice", raw: str | None = None) -> httpx.Response:
    extra = []
    if raw is not None:
        extra.append(("authorization_details", raw))
    elif detail is not None:
        extra.append(("authorization_details", json.dumps([{"type": "tool_invocation", **detail}])))
    return live.exchange(subject_token=live.idp.token(sub=sub), resource="https://files.example",
                         scope="files:read", extra=extra)


def details_of(live: LiveIssuer, resp: httpx.Response, aud: str = "https://files.example") -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    claims = verify(live, resp.json()["access_token"], audience=aud)
    assert resp.json()["authorization_details"] == claims["authorization_details"]
    return list(claims["authorization_details"])


def test_session_capability_carries_filled_constraints(cons: LiveIssuer) -> None:
    [d] = details_of(cons, files(cons))
    assert d == {"type": "tool_invocation", "locations": ["https://files.example"], "actions": ["list", "read"],
                 "constraints": {"path": {"prefix": "/home/alice/"}}}
    # the evaluator the SDK uses admits and refuses the same arguments as the exchange
    assert evaluate(d["constraints"], {"path": "/home/alice/notes.txt"}) == []
    assert evaluate(d["constraints"], {"path": "/home/alice/../bob/secret"})
    assert evaluate(d["constraints"], {"path": "/home/bob/x"})


def test_call_bound_inside_is_granted(cons: LiveIssuer) -> None:
    [d] = details_of(cons, files(cons, {"actions": ["read"], "arguments": {"path": "/home/alice/notes.txt"}}))
    assert d["arguments"] == {"path": "/home/alice/notes.txt"} and d["actions"] == ["read"]
    assert "constraints" not in d
    from sqlalchemy import select

    from issuer.models import AuditEvent

    with cons.db.session() as s:
        row = s.scalars(select(AuditEvent).where(AuditEvent.decision == "granted")).one()
    assert row.authorization_details == [d]  # the audit trail holds the call's arguments


@pytest.mark.parametrize("path", ["/home/alice/../bob/secret", "/home/bob/x", "/home/alicex/y", "/home/alice//x"])
def test_call_bound_outside_is_refused_at_the_exchange(cons: LiveIssuer, path: str) -> None:
    resp = files(cons, {"arguments": {"path": path}})
    body = error_of(resp, 400, "invalid_scope")
    assert "path" in body["error_description"]
    assert "secret" not in body["error_description"] and "bob" not in body["error_description"]
    assert evaluate({"path": {"prefix": "/home/alice/"}}, {"path": path})  # the SDK's evaluator agrees


def test_missing_constrained_argument_is_refused(cons: LiveIssuer) -> None:
    error_of(files(cons, {"arguments": {"file": "/home/alice/x"}}), 400, "invalid_scope")


@pytest.mark.parametrize("sub", ["*", "../bob", "a/../../etc", ".", "al*ce", "x/y"])
def test_hostile_subject_gets_no_wildcard_and_no_escape(cons: LiveIssuer, sub: str) -> None:
    error_of(files(cons, sub=sub), 400, "invalid_grant")


def test_session_request_may_narrow_but_never_widen(cons: LiveIssuer) -> None:
    [d] = details_of(cons, files(cons, {"constraints": {"path": {"prefix": "/home/alice/docs/"}}}))
    assert d["constraints"] == {"path": {"prefix": "/home/alice/docs/"}}
    # asking for more gets the intersection: still only alice's home
    [d] = details_of(cons, files(cons, {"constraints": {"path": {"prefix": "/home/"}}}))
    assert d["constraints"] == {"path": {"prefix": "/home/alice/"}}
    error_of(files(cons, {"constraints": {"path": {"prefix": "/home/bob/"}}}), 400, "invalid_scope")
    [d] = details_of(cons, files(cons, {"constraints": {"path": {"max_length": 50}}}))
    assert d["constraints"] == {"path": {"prefix": "/home/alice/", "max_length": 50}}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("not json", "invalid_request"),
        ("{}", "invalid_request"),
        ("[]", "invalid_request"),
        ('[{"type": "payment"}]', "invalid_request"),
        ('[{"type": "tool_invocation", "surprise": 1}]', "invalid_request"),
        ('[{"type": "tool_invocation", "constraints": {}, "arguments": {}}]', "invalid_request"),
        ('[{"type": "tool_invocation", "constraints": {"path": {"prefix": "/home/${sub}/"}}}]', "invalid_request"),
        ('[{"type": "tool_invocation", "constraints": {"path": {"regex": ".*"}}}]', "invalid_request"),
        ('[{"type": "tool_invocation", "arguments": [1]}]', "invalid_request"),
        ('[{"type": "tool_invocation", "arguments": {"n": NaN}}]', "invalid_request"),
        ('[{"type": "tool_invocation", "locations": ["https://tickets.example"]}]', "invalid_target"),
        ('[{"type": "tool_invocation"}, {"type": "tool_invocation"}]', "invalid_target"),
        ('[{"type": "tool_invocation", "actions": ["delete"]}]', "invalid_scope"),
        ("[" * 5000 + "]" * 5000, "invalid_request"),
    ],
)
def test_bad_authorization_details(cons: LiveIssuer, raw: str, error: str) -> None:
    error_of(files(cons, raw=raw), 400, error)


def test_project_allowlist_from_a_claim(cons: LiveIssuer) -> None:
    token = cons.idp.token(projects=["p1", "p2"])

    def call(project: str) -> httpx.Response:
        detail = json.dumps([{"type": "tool_invocation", "arguments": {"project": project, "id": 7}}])
        return cons.exchange(subject_token=token, extra=[("authorization_details", detail)])

    [d] = details_of(cons, cons.exchange(subject_token=token), aud="https://tickets.example")
    assert d["constraints"] == {"project": {"in": ["p1", "p2"]}}
    assert call("p1").status_code == 200
    error_of(call("p3"), 400, "invalid_scope")
    error_of(call("P1"), 400, "invalid_scope")  # exact comparison, no case folding
    # a user without the claim cannot be placed in the template: refused, not unconstrained
    error_of(cons.exchange(subject_token=cons.idp.token()), 400, "invalid_grant")


def test_tenant_equality_for_a_sql_tool(cons: LiveIssuer) -> None:
    token = cons.idp.token(aud="https://mcp.sql.example", tenant="acme")

    def call(args: dict[str, Any]) -> httpx.Response:
        detail = json.dumps([{"type": "tool_invocation", "actions": ["select"], "arguments": args}])
        return cons.exchange("mcp-sql", token, resource="https://sql.example", scope="sql:query",
                             extra=[("authorization_details", detail)])

    [d] = details_of(cons, call({"tenant": "acme", "limit": 10}), aud="https://sql.example")
    assert d["arguments"] == {"tenant": "acme", "limit": 10}
    error_of(call({"tenant": "globex", "limit": 10}), 400, "invalid_scope")
    error_of(call({"tenant": "acme", "limit": 5000}), 400, "invalid_scope")
    error_of(call({"tenant": "acme", "limit": "10"}), 400, "invalid_scope")  # strict types


def test_large_arguments_travel_as_a_digest(cons: LiveIssuer) -> None:
    args = {"path": "/home/alice/big.txt", "content": "x" * 5000}
    [d] = details_of(cons, files(cons, {"arguments": args}))
    assert "arguments" not in d and d["arguments_sha256"] == arguments_digest(args)


def test_policy_test_shows_filled_constraints(cons: LiveIssuer, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from issuer.cli import cli

    env = {"ISSUER_DATABASE_URL": cons.settings.database_url, "ISSUER_KEYS_DIR": str(cons.settings.keys_dir)}
    res = CliRunner().invoke(cli, ["policy", "test", "--sub", "alice", "--groups", "support", "--client",
                                   "mcp-helpdesk", "--tool", "files", "--scope", "files:read", "--json"], env=env)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["decision"] == "granted" and out["rule"] == "home-files"
    assert out["constraints"] == {"path": {"prefix": "/home/alice/"}}
    assert out["actions"] == ["list", "read"]
    res = CliRunner().invoke(cli, ["policy", "test", "--sub", "../bob", "--groups", "support", "--client",
                                   "mcp-helpdesk", "--tool", "files", "--json"], env=env)
    assert json.loads(res.output)["decision"] == "denied"


def test_an_empty_action_grant_is_refused_not_unrestricted() -> None:
    """Rules naming actions none of the granted scopes cover would otherwise mint a detail without `actions`."""
    from issuer.errors import InvalidScope
    from issuer.grant_details import allowed_actions
    from issuer.policy import Decision, Reason
    from issuer.registry import ScopeSpec, ToolView

    tool = ToolView("t", "https://t.example", {"t:read": ScopeSpec("t:read", actions=("view",))})
    decision = Decision(granted=True, reason=Reason.GRANTED, description="", policy_version=1,
                        scopes=("t:read",), actions=frozenset({"delete"}))
    with pytest.raises(InvalidScope):
        allowed_actions(tool, decision)
    assert allowed_actions(tool, Decision(granted=True, reason=Reason.GRANTED, description="", policy_version=1,
                                          scopes=("t:read",))) == {"view"}
