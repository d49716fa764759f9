"""Decisions: default deny, no escalation, and exactly the scopes policy grants."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from issuer.errors import InvalidScope, InvalidTarget
from issuer.identity.types import VerifiedSubject
from issuer.policy import CompiledPolicy, Decision, PolicyError, Principal, Reason, parse_policy

TICKETS = frozenset({"tickets:read", "tickets:write", "tickets:admin"})

POLICY = """\
rules:
  - id: alice-read
    idp: idp-a
    subjects: [alice]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
    max_lifetime: 600
  - id: support-write
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read, tickets:write]
    default_scopes: [tickets:read]
    max_lifetime: 120
    actions: [comment]
    constraints: {queue: {in: [l1, l2]}}
  - id: acme-eng
    claims: {tenant: acme, dept: [eng, ops]}
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:write]
    default_scopes: []
    actions: [edit]
  - id: narrow-admins
    idp: [idp-a, idp-b]
    groups: [admins]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read, tickets:admin]
    allow_narrowing: true
  - id: search-all
    everyone: true
    clients: [mcp-search]
    tool: search
    scopes: [search:query]
"""


@pytest.fixture(scope="module")
def policy() -> CompiledPolicy:
    return CompiledPolicy(7, parse_policy(POLICY))


def who(
    sub: str = "someone",
    idp: str = "idp-a",
    groups: tuple[str, ...] = (),
    **attributes: Any,
) -> Principal:
    return Principal(idp=idp, sub=sub, groups=frozenset(groups), attributes=MappingProxyType(attributes))


def decide(
    policy: CompiledPolicy,
    principal: Principal,
    requested: list[str] | None = None,
    *,
    client: str = "mcp-helpdesk",
    tool: str = "tickets",
    tool_scopes: frozenset[str] = TICKETS,
) -> Decision:
    return policy.decide(principal, client, tool, tool_scopes, requested)


# --------------------------------------------------------------------------- default deny


def test_empty_policy_denies_everything() -> None:
    empty = CompiledPolicy.empty()
    assert empty.version == 0
    d = decide(empty, who("alice", groups=("support", "admins")), ["tickets:read"])
    assert not d.granted
    assert d.reason is Reason.NO_MATCHING_RULE
    assert d.rule_id is None
    assert d.scopes == ()
    assert d.policy_version == 0
    assert not decide(empty, who(), None).granted


def test_user_matching_no_rule_is_denied(policy: CompiledPolicy) -> None:
    d = decide(policy, who("mallory", groups=("marketing",)), ["tickets:read"])
    assert (d.granted, d.reason, d.rule_id) == (False, "no_matching_rule", None)
    assert d.policy_version == 7


def test_wrong_client_is_denied_even_for_an_entitled_user(policy: CompiledPolicy) -> None:
    d = decide(policy, who("alice"), ["tickets:read"], client="mcp-search")
    assert d.reason == "no_matching_rule"
    assert decide(policy, who("alice"), ["tickets:read"]).granted


def test_unknown_tool_is_indistinguishable_from_unreachable(policy: CompiledPolicy) -> None:
    unknown = decide(policy, who("alice"), ["x"], tool="no-such-tool", tool_scopes=frozenset())
    unreachable = decide(policy, who("bob"), ["tickets:read"])
    assert unknown.reason == unreachable.reason == "no_matching_rule"


def test_same_sub_from_another_provider_does_not_match(policy: CompiledPolicy) -> None:
    # The cross-provider collision: idp-b may issue its own 'alice'.
    d = decide(policy, who("alice", idp="idp-b"), ["tickets:read"])
    assert not d.granted
    assert d.reason == "no_matching_rule"
    assert decide(policy, who("alice", idp="idp-a"), ["tickets:read"]).rule_id == "alice-read"


def test_wrong_idp_for_a_group_rule_is_denied(policy: CompiledPolicy) -> None:
    assert decide(policy, who(idp="idp-b", groups=("admins",)), ["tickets:read"]).granted
    assert decide(policy, who(idp="idp-c", groups=("admins",)), ["tickets:read"]).reason == "no_matching_rule"


def test_subject_matching_is_exact(policy: CompiledPolicy) -> None:
    for sub in ("Alice", "alice ", "alic", "alice2"):
        assert decide(policy, who(sub), ["tickets:read"]).reason == "no_matching_rule"


def test_all_matcher_kinds_must_match() -> None:
    doc = parse_policy(
        "rules:\n  - id: both\n    idp: i\n    subjects: [alice]\n    groups: [g]\n"
        "    claims: {tenant: acme}\n    clients: [c]\n    tool: t\n    scopes: [s]\n"
    )
    p = CompiledPolicy(1, doc)
    full = who("alice", idp="i", groups=("g",), tenant="acme")
    assert p.decide(full, "c", "t", frozenset({"s"}), ["s"]).granted
    for partial in (
        who("bob", idp="i", groups=("g",), tenant="acme"),
        who("alice", idp="i", groups=("h",), tenant="acme"),
        who("alice", idp="i", groups=("g",), tenant="other"),
        who("alice", idp="i", groups=("g",)),
    ):
        assert not p.decide(partial, "c", "t", frozenset({"s"}), ["s"]).granted


# --------------------------------------------------------------------------- scopes


def test_requested_subset_is_granted_exactly(policy: CompiledPolicy) -> None:
    d = decide(policy, who(groups=("support",)), ["tickets:write"])
    assert d.granted
    assert d.reason == "granted"
    assert d.scopes == ("tickets:write",)
    assert d.rule_id == "support-write"
    assert d.contributing_rules == ("support-write",)


def test_scope_escalation_is_refused(policy: CompiledPolicy) -> None:
    d = decide(policy, who("alice"), ["tickets:read", "tickets:write"])
    assert not d.granted
    assert d.reason == "scope_not_entitled"
    assert d.rule_id == "alice-read"
    assert d.scopes == ()
    assert "tickets:write" in d.description
    with pytest.raises(InvalidScope):
        d.raise_for_denial()


def test_scope_the_tool_does_not_define_is_undefined(policy: CompiledPolicy) -> None:
    d = decide(policy, who("alice"), ["tickets:read", "tickets:teleport"])
    assert (d.granted, d.reason) == (False, "scope_undefined")
    assert "tickets:teleport" in d.description
    with pytest.raises(InvalidScope):
        d.raise_for_denial()


def test_scope_the_policy_grants_but_the_tool_no_longer_defines_is_not_granted(
    policy: CompiledPolicy,
) -> None:
    shrunk = frozenset({"tickets:write"})
    assert decide(policy, who(groups=("support",)), ["tickets:read"], tool_scopes=shrunk).reason == (
        "scope_undefined"
    )
    d = decide(policy, who(groups=("support",)), None, tool_scopes=shrunk)
    assert d.reason == "no_default_scopes"


def test_omitted_scope_gets_default_scopes(policy: CompiledPolicy) -> None:
    d = decide(policy, who(groups=("support",)), None)
    assert d.granted
    assert d.scopes == ("tickets:read",)
    assert d.reason == "granted"


def test_default_scopes_default_to_all_scopes(policy: CompiledPolicy) -> None:
    assert decide(policy, who("alice"), None).scopes == ("tickets:read",)
    assert decide(policy, who(groups=("admins",)), None).scopes == ("tickets:admin", "tickets:read")


def test_empty_request_is_treated_as_omitted(policy: CompiledPolicy) -> None:
    assert decide(policy, who(groups=("support",)), []).scopes == ("tickets:read",)


def test_no_default_scopes(policy: CompiledPolicy) -> None:
    d = decide(policy, who(tenant="acme", dept="eng"), None)
    assert (d.granted, d.reason, d.rule_id) == (False, "no_default_scopes", "acme-eng")
    with pytest.raises(InvalidScope):
        d.raise_for_denial()
    assert decide(policy, who(tenant="acme", dept="eng"), ["tickets:write"]).granted


def test_narrowing_is_off_by_default(policy: CompiledPolicy) -> None:
    d = decide(policy, who(groups=("support",)), ["tickets:write", "tickets:admin"])
    assert d.reason == "scope_not_entitled"


def test_narrowing_when_opted_in(policy: CompiledPolicy) -> None:
    d = decide(policy, who(groups=("admins",)), ["tickets:admin", "tickets:write"])
    assert d.granted
    assert d.reason == "granted_narrowed"
    assert d.scopes == ("tickets:admin",)
    assert d.rule_id == "narrow-admins"
    assert "tickets:write" in d.description


def test_narrowing_needs_every_supplying_rule_to_opt_in(policy: CompiledPolicy) -> None:
    # tickets:read comes from both an opted-in rule and one that is not.
    d = decide(
        policy,
        who(groups=("admins", "support")),
        ["tickets:read", "tickets:nuke"],
        tool_scopes=TICKETS | {"tickets:nuke"},
    )
    assert d.reason == "scope_not_entitled"


def test_narrowing_never_grants_an_empty_set() -> None:
    p = CompiledPolicy(
        1,
        parse_policy(
            "rules:\n  - {id: n, everyone: true, allow_narrowing: true, clients: [c], tool: t, scopes: [a]}\n"
        ),
    )
    d = p.decide(who(), "c", "t", frozenset({"a", "b"}), ["b"])
    assert (d.granted, d.reason) == (False, "scope_not_entitled")


def test_union_over_several_rules(policy: CompiledPolicy) -> None:
    user = who("alice", groups=("support",), tenant="acme", dept="ops")
    d = decide(policy, user, ["tickets:read", "tickets:write"])
    assert d.granted
    assert d.scopes == ("tickets:read", "tickets:write")
    assert d.contributing_rules == ("alice-read", "support-write", "acme-eng")
    assert d.rule_id == "alice-read"
    assert d.actions == frozenset({"comment", "edit"})
    assert [dict(c) for c in d.constraints] == [{}, {"queue": {"in": ("l1", "l2")}}, {}]


def test_contributors_are_only_rules_whose_scopes_were_granted(policy: CompiledPolicy) -> None:
    user = who("alice", groups=("support",), tenant="acme", dept="ops")
    d = decide(policy, user, ["tickets:write"])
    assert d.contributing_rules == ("support-write", "acme-eng")
    assert d.rule_id == "support-write"


def test_max_lifetime_is_the_minimum_of_contributors(policy: CompiledPolicy) -> None:
    user = who("alice", groups=("support",))
    assert decide(policy, user, ["tickets:read"]).max_lifetime == 120
    assert decide(policy, who("alice"), ["tickets:read"]).max_lifetime == 600
    assert decide(policy, who(tenant="acme", dept="eng"), ["tickets:write"]).max_lifetime is None


# --------------------------------------------------------------------------- claims


@pytest.mark.parametrize(
    ("attributes", "granted"),
    [
        ({"tenant": "acme", "dept": "eng"}, True),
        ({"tenant": "acme", "dept": "ops"}, True),
        ({"tenant": "acme", "dept": ["hr", "ops"]}, True),
        ({"tenant": ["other", "acme"], "dept": "eng"}, True),
        ({"tenant": "acme", "dept": "hr"}, False),
        ({"tenant": "acme", "dept": ["hr", "sales"]}, False),
        ({"tenant": "acme"}, False),
        ({"dept": "eng"}, False),
        ({"tenant": "ACME", "dept": "eng"}, False),
        ({"tenant": "acme", "dept": {"eng": True}}, False),
        ({"tenant": None, "dept": "eng"}, False),
    ],
)
def test_claims_matching(policy: CompiledPolicy, attributes: dict[str, Any], granted: bool) -> None:
    assert decide(policy, who(**attributes), ["tickets:write"]).granted is granted


def test_claim_values_match_by_type() -> None:
    doc = parse_policy(
        "rules:\n"
        "  - {id: r, claims: {level: 1, verified: true, code: '1'}, clients: [c], tool: t, scopes: [s]}\n"
    )
    p = CompiledPolicy(1, doc)
    ok = who(level=1, verified=True, code="1")
    assert p.decide(ok, "c", "t", frozenset({"s"}), ["s"]).granted
    for bad in (
        who(level=True, verified=True, code="1"),
        who(level=1, verified=1, code="1"),
        who(level=1, verified=True, code=1),
        who(level="1", verified=True, code="1"),
    ):
        assert not p.decide(bad, "c", "t", frozenset({"s"}), ["s"]).granted


# --------------------------------------------------------------------------- everyone / parse-time guard


def test_everyone_rule_matches_any_user_of_any_trusted_idp(policy: CompiledPolicy) -> None:
    d = decide(
        policy,
        who("x", idp="idp-z"),
        ["search:query"],
        client="mcp-search",
        tool="search",
        tool_scopes=frozenset({"search:query"}),
    )
    assert d.granted and d.rule_id == "search-all"


def test_rule_without_matcher_is_rejected_at_parse_time() -> None:
    with pytest.raises(PolicyError, match="names no subjects, groups or claims"):
        parse_policy("rules:\n  - {id: r, clients: [c], tool: t, scopes: [s]}\n")


# --------------------------------------------------------------------------- decision details


def test_denial_of_unreachable_tool_raises_invalid_target(policy: CompiledPolicy) -> None:
    d = decide(policy, who("bob"), ["tickets:read"])
    with pytest.raises(InvalidTarget) as info:
        d.raise_for_denial()
    assert info.value.description == d.description


def test_granted_decision_does_not_raise(policy: CompiledPolicy) -> None:
    decide(policy, who("alice"), ["tickets:read"]).raise_for_denial()


def test_description_is_ascii_and_echoes_at_most_100_chars_of_input(policy: CompiledPolicy) -> None:
    long_tool = "\u00fc" + "t" * 5000
    long_client = "c" * 5000 + "\n"
    d = policy.decide(who(), long_client, long_tool, frozenset(), ["s" * 5000])
    assert d.description.isascii()
    assert "t" * 101 not in d.description
    assert "c" * 101 not in d.description
    assert "\n" not in d.description
    undefined = decide(policy, who("alice"), ["x" * 500, "y" * 500])
    assert undefined.reason == "scope_undefined"
    assert undefined.description.isascii()
    assert len(undefined.description) < 200


def test_decisions_are_deterministic_and_sorted(policy: CompiledPolicy) -> None:
    user = who("alice", groups=("support",))
    a = decide(policy, user, ["tickets:write", "tickets:read", "tickets:write"])
    b = decide(policy, user, ["tickets:read", "tickets:write"])
    assert a == b
    assert a.scopes == ("tickets:read", "tickets:write")


def test_principal_from_verified_subject() -> None:
    v = VerifiedSubject(
        idp="idp-a",
        namespace="a",
        sub="alice",
        groups=frozenset({"support"}),
        attributes={"tenant": "acme"},
        claims={"sub": "alice"},
        exp=0,
    )
    p = Principal.from_subject(v)
    assert (p.idp, p.sub, p.groups, dict(p.attributes)) == (
        "idp-a",
        "alice",
        frozenset({"support"}),
        {"tenant": "acme"},
    )


def test_index_only_holds_rules_for_their_tool_and_client(policy: CompiledPolicy) -> None:
    # The search rule matches everyone; it must not leak into the tickets tool.
    d = decide(policy, who("x", idp="idp-z"), ["search:query"], tool_scopes=TICKETS | {"search:query"})
    assert d.reason == "no_matching_rule"


def test_version_must_be_a_non_negative_integer() -> None:
    doc = parse_policy("rules: []\n")
    for bad in (-1, True):
        with pytest.raises(ValueError, match="non-negative"):
            CompiledPolicy(bad, doc)
