"""What a capability may touch: RFC 9396 ``authorization_details`` at the token endpoint.

The policy decides the scopes; this module turns the deciding rules'
constraint templates into concrete constraints for one user, and combines
them with what the client asked for:

* no ``authorization_details`` in the request: the capability carries the
  policy's constraints and actions (if there are any);
* ``constraints`` (a session capability): the request's constraints are
  merged with the policy's (both must hold), so a request can only narrow;
* ``arguments`` (one call): the arguments are checked against the policy's
  constraints here, at the exchange, and the capability is bound to them.

The policy's grant is one :class:`~issuer.grant.Grant`; for a presented
capability it is first narrowed by it (:meth:`~issuer.grant.Grant.narrow`),
and the request is applied to the result.

Every refusal is an IssuerError: malformed input is ``invalid_request``, a
wrong location ``invalid_target``, anything outside the grant ``invalid_scope``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .constraints import (
    ConstraintError,
    TemplateError,
    evaluate,
    fill_templates,
    merge,
    validate_constraints,
)
from .errors import InvalidGrant, InvalidRequest, InvalidScope, InvalidTarget
from .grant import Grant
from .kernel import strictjson
from .policy import Decision
from .registry import ToolView
from .tool_invocation import TOOL_INVOCATION, bind_arguments

__all__ = [
    "RequestedDetail",
    "allowed_actions",
    "apply_request",
    "parse_authorization_details",
    "policy_constraints",
    "policy_grant",
]

_MAX_DETAILS_BYTES = 16 * 1024
_MEMBERS = frozenset({"type", "locations", "actions", "constraints", "arguments"})


@dataclass(frozen=True)
class RequestedDetail:
    locations: tuple[str, ...] | None = None
    actions: tuple[str, ...] | None = None
    constraints: Mapping[str, Any] | None = None
    arguments: Mapping[str, Any] | None = None


def parse_authorization_details(raw: str) -> RequestedDetail:
    """Parse the form parameter: a JSON array with exactly one ``tool_invocation`` object."""
    if len(raw.encode("utf-8", "surrogatepass")) > _MAX_DETAILS_BYTES:
        raise InvalidRequest("authorization_details is too large")
    try:
        value = strictjson.loads(raw)
    except strictjson.StrictJSONError as e:  # the message names the rule broken, never the input
        raise InvalidRequest(f"authorization_details must be a JSON array (RFC 9396): {e}") from None
    if not isinstance(value, list) or not value:
        raise InvalidRequest("authorization_details must be a non-empty JSON array (RFC 9396)")
    if len(value) > 1:
        raise InvalidTarget("one authorization_details object per capability: one tool per capability")
    detail = value[0]
    if not isinstance(detail, dict):
        raise InvalidRequest("authorization_details entries must be JSON objects")
    if detail.get("type") != TOOL_INVOCATION:
        raise InvalidRequest(f"authorization_details type must be {TOOL_INVOCATION}")
    unknown = sorted(set(detail) - _MEMBERS)
    if unknown:
        raise InvalidRequest(f"authorization_details: unknown member {unknown[0][:40]}")
    if "constraints" in detail and "arguments" in detail:
        raise InvalidRequest("authorization_details: give constraints or arguments, not both")
    locations = _strings(detail, "locations")
    actions = _strings(detail, "actions")
    constraints = detail.get("constraints")
    if constraints is not None:
        if not isinstance(constraints, dict):
            raise InvalidRequest("authorization_details: constraints must be an object")
        if "${" in json.dumps(constraints):
            raise InvalidRequest("authorization_details: templates are for policy, not requests")
        try:
            constraints = validate_constraints(constraints)
        except ConstraintError as e:
            raise InvalidRequest(f"authorization_details: {e}") from None
    arguments = detail.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise InvalidRequest("authorization_details: arguments must be an object")
    return RequestedDetail(locations, actions, constraints, arguments)


def _strings(detail: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = detail.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest(f"authorization_details: {name} must be a non-empty array of strings")
    if len(value) > 100:
        raise InvalidRequest(f"authorization_details: too many {name}")
    return tuple(dict.fromkeys(value))


def policy_constraints(
    decision: Decision, *, sub: str, attributes: Mapping[str, Any], allowed_claims: Collection[str]
) -> dict[str, dict[str, object]]:
    """The deciding rules' constraints, filled for this user, all of them holding at once.

    Several contributing rules are combined with AND: a capability never
    admits more than any rule that granted it says. A value from the token
    that cannot be placed safely (``*``, ``../bob``) refuses the exchange.
    """
    combined: dict[str, dict[str, object]] = {}
    for template in decision.constraints:
        if not template:
            continue
        try:
            filled = fill_templates(template, sub=sub, claims=attributes, allowed_claims=list(allowed_claims))
        except TemplateError as e:
            raise InvalidGrant(f"subject_token: a claim cannot be used in this policy's constraints ({e})") from None
        try:
            combined = merge(combined, filled)
        except ConstraintError as e:
            raise InvalidScope(f"the granting rules' constraints contradict each other: {e}") from None
    return combined


def allowed_actions(tool: ToolView, decision: Decision) -> frozenset[str]:
    """Actions the granted scopes cover, limited to the rules' ``actions`` when they list any."""
    covered = frozenset(a for s in decision.scopes if s in tool.scopes for a in tool.scopes[s].actions)
    if not decision.actions:
        return covered
    allowed = covered & decision.actions if covered else frozenset(decision.actions)
    if not allowed:
        # An empty list would read as "no restriction" upstream: refuse instead of failing open.
        raise InvalidScope(f"the granting rules allow none of the actions the granted scopes of {tool.name} cover")
    return allowed


def policy_grant(
    *, tool: ToolView, decision: Decision, constraints: Mapping[str, Mapping[str, object]], expires_at: int,
    txn: str | None, jkt: str | None,
) -> Grant:
    """The most policy grants this request: for a user's token the ceiling itself, for a presented
    capability the value :meth:`Grant.narrow` limits by what was presented."""
    return Grant(location=tool.resource_uri, scopes=frozenset(decision.scopes), expires_at=expires_at, txn=txn,
                 jkt=jkt, actions=allowed_actions(tool, decision) or None, constraints=dict(constraints))


def apply_request(ceiling: Grant, requested: RequestedDetail | None, tool_name: str) -> Grant:
    """The request's ``authorization_details`` applied to ``ceiling``: it can only narrow it.

    ``actions`` must all be in the ceiling; ``constraints`` are merged with the
    ceiling's (both hold); ``arguments`` are checked against the ceiling's
    constraints and bind the capability to that one call.
    """
    if requested is None:
        return ceiling
    if requested.locations is not None and requested.locations != (ceiling.location,):
        raise InvalidTarget("authorization_details locations must be exactly the requested tool")
    actions = ceiling.actions
    if requested.actions is not None:
        missing = [a for a in requested.actions if a not in (ceiling.actions or ())]
        if missing:
            raise InvalidScope(f"action {missing[0][:60]} is not granted on tool {tool_name}")
        actions = frozenset(requested.actions)
    if requested.arguments is not None:
        violations = evaluate(ceiling.constraints, requested.arguments)
        if violations:
            v = violations[0]
            raise InvalidScope(
                f"argument {v.argument[:60]} is outside the granted constraints ({v.operator}: {v.reason})"
            )
        try:
            bound = bind_arguments(requested.arguments)
        except ValueError:
            raise InvalidRequest("authorization_details: arguments are not serialisable JSON") from None
        return replace(ceiling, actions=actions, binding=bound)
    constraints: Mapping[str, Mapping[str, object]] = ceiling.constraints
    if requested.constraints:
        try:
            constraints = merge(ceiling.constraints, requested.constraints)
        except ConstraintError as e:
            raise InvalidScope(f"requested constraints cannot narrow the granted ones: {e}") from None
    return replace(ceiling, actions=actions, constraints=constraints)
