"""The narrowing property: whatever capability is presented and whatever the request asks, what a chained
exchange grants is inside the presented grant in every dimension (``issuer/grant.py`` says what "inside"
means for another tool). Over HTTP, the same rules are shown by ``tests/test_narrowing.py``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from issuer.constraints import evaluate, merge, validate_constraints
from issuer.errors import IssuerError
from issuer.grant import ChainUnbound, ChainWidened, Grant, RescopedCallBound
from issuer.grant_details import RequestedDetail, apply_request
from issuer.minting import build_claims
from issuer.tool_invocation import bind_arguments

TOOLS = ("https://a.example", "https://b.example")
PATHS = ("/home/", "/home/alice/", "/home/alice/docs/", "/srv/")

actions = st.frozensets(st.sampled_from(("list", "read", "update", "delete")), min_size=1)
arguments = st.fixed_dictionaries({
    "path": st.sampled_from(PATHS).flatmap(lambda p: st.sampled_from((p, p + "x.txt", p + "docs/y"))),
    "n": st.integers(-5, 20),
    "mode": st.sampled_from(("r", "w", "x")),
})


@st.composite
def constraint_sets(draw: st.DrawFn) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    if draw(st.booleans()):
        out["path"] = {"prefix": draw(st.sampled_from(PATHS))}
    if draw(st.booleans()):
        low, high = sorted(draw(st.lists(st.integers(-5, 20), min_size=2, max_size=2)))
        out["n"] = draw(st.sampled_from(({"min": low}, {"max": high}, {"min": low, "max": high})))
    if draw(st.booleans()):
        out["mode"] = draw(st.one_of(
            st.builds(lambda v: {"eq": v}, st.sampled_from(("r", "w", "x"))),
            st.builds(lambda vs: {"in": vs}, st.lists(st.sampled_from(("r", "w", "x")), min_size=1, unique=True))))
    return validate_constraints(out)


@st.composite
def grants(draw: st.DrawFn, *, bindable: bool = True) -> Grant:
    binding = draw(st.one_of(st.none(), arguments.map(bind_arguments))) if bindable else None
    return Grant(
        location=draw(st.sampled_from(TOOLS)),
        scopes=draw(st.frozensets(st.sampled_from(("s1", "s2", "s3")))),
        expires_at=draw(st.integers(1_000, 2_000)),
        txn=draw(st.sampled_from((None, "txn-1", "txn-2"))),
        jkt=draw(st.sampled_from((None, "key-1", "key-2"))),
        actions=draw(st.one_of(st.none(), actions)),
        constraints=draw(constraint_sets()),
        binding=binding,
    )


@st.composite
def requests(draw: st.DrawFn) -> RequestedDetail | None:
    if draw(st.booleans()):
        return None
    shape = draw(st.sampled_from(("constraints", "arguments", "neither")))
    return RequestedDetail(
        locations=draw(st.one_of(st.none(), st.sampled_from(TOOLS).map(lambda t: (t,)))),
        actions=draw(st.one_of(st.none(), actions.map(lambda a: tuple(sorted(a))))),
        constraints=draw(constraint_sets()) if shape == "constraints" else None,
        arguments=draw(arguments) if shape == "arguments" else None,
    )


def _admits(constraints: Any, args: dict[str, Any]) -> bool:
    return not evaluate(constraints, args)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=grants(bindable=False), presented=grants(), request=requests(), probe=arguments)
def test_a_chained_grant_is_inside_the_presented_one(policy: Grant, presented: Grant,
                                                     request: RequestedDetail | None, probe: dict[str, Any]) -> None:
    try:
        result = apply_request(policy.narrow(presented), request, "tool")
    except IssuerError:
        return  # refused: nothing issued, nothing widened
    # every tool: lifetime, txn, cnf
    assert result.expires_at <= presented.expires_at
    if presented.txn is not None:
        assert result.txn == presented.txn
    if presented.jkt is not None:
        assert result.jkt is not None
    if result.location != presented.location:
        assert result.location == policy.location  # another tool: its own namespace, decided by policy
        return
    # the same tool: scopes, actions, constraints, call binding
    assert not presented.call_bound
    assert result.scopes <= presented.scopes
    if presented.actions is not None:
        assert result.actions is not None and result.actions <= presented.actions
    assert merge(result.constraints, presented.constraints) == validate_constraints(result.constraints)
    if _admits(result.constraints, probe):
        assert _admits(presented.constraints, probe)
    if result.binding is not None:
        assert _admits(presented.constraints, result.binding["arguments"])


@settings(max_examples=200, deadline=None)
@given(presented=grants(bindable=False))
def test_presenting_a_grant_for_itself_gives_it_back(presented: Grant) -> None:
    """Narrowing is not a loss either: a re-scope that asks for what it holds gets exactly that."""
    assert presented.narrow(presented) == presented


@settings(max_examples=200, deadline=None)
@given(grant=grants())
def test_a_grant_survives_the_round_trip_through_its_claims(grant: Grant) -> None:
    claims = build_claims(issuer="https://issuer.example", principal="idp-a:alice", audience=grant.location,
                          client_id="mcp", subject_act=None, scopes=sorted(grant.scopes), groups=[], now=1_000,
                          lifetime=grant.expires_at - 1_000, policy_version=1, txn=grant.txn,
                          authorization_details=grant.details())
    if grant.jkt is not None:
        claims["cnf"] = {"jkt": grant.jkt}
    back = Grant.of_capability(claims)
    expected = grant if grant.txn is not None else Grant(**{**grant.__dict__, "txn": claims["txn"]})
    if grant.binding is not None:  # a call-bound capability carries its arguments, not the constraints they met
        expected = Grant(**{**expected.__dict__, "constraints": {}})
    assert back == expected


def _grant(**kw: Any) -> Grant:
    values: dict[str, Any] = {"location": TOOLS[0], "scopes": frozenset({"s1", "s2"}), "expires_at": 2_000}
    return Grant(**{**values, **kw})


@pytest.mark.parametrize(("policy", "presented", "error"), [
    (_grant(), _grant(scopes=frozenset({"s1"})), ChainWidened),
    (_grant(actions=frozenset({"delete"})), _grant(actions=frozenset({"list"})), ChainWidened),
    (_grant(constraints={"path": {"prefix": "/srv/"}}), _grant(constraints={"path": {"prefix": "/home/"}}),
     ChainWidened),
    (_grant(), _grant(binding={"arguments": {}}), RescopedCallBound),
    (_grant(location=TOOLS[1]), _grant(jkt="key-1"), ChainUnbound),
])
def test_what_narrowing_refuses(policy: Grant, presented: Grant, error: type[IssuerError]) -> None:
    with pytest.raises(error):
        policy.narrow(presented)
