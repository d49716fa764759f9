"""What an exchange for a user would get, decided without a token: for ``issuer policy test`` and the admin API.

The exchange itself (:mod:`issuer.exchange`) uses the same :func:`decide`, so
an admin testing a policy sees the decision a token request would get.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, IssuerError
from .grant_details import allowed_actions, policy_constraints
from .policy import Decision, Principal, Reason
from .registry import ClientView, Snapshot, ToolView

__all__ = ["Explanation", "decide", "explain"]


def decide(snapshot: Snapshot, principal: Principal, client: ClientView, tool: ToolView,
           scopes: Sequence[str] | None) -> Decision:
    """Client allowlist, then policy. Shared by the exchange and ``issuer policy test``."""
    if tool.status != "active" or tool.name not in client.tools:
        return Decision(
            granted=False,
            reason=Reason.CLIENT_NOT_ALLOWED_TOOL,
            description=f"client {client.client_id} may not reach tool {tool.name}",
            policy_version=snapshot.policy.version,
        )
    return snapshot.policy.decide(principal, client.client_id, tool.name, tool.scope_names, scopes)


@dataclass(frozen=True)
class Explanation:
    """What an exchange for this user would get, for admins testing a policy."""

    decision: Decision
    constraints: Mapping[str, Any] | None = None
    actions: tuple[str, ...] = ()
    refusal: IssuerError | None = None


def explain(
    snapshot: Snapshot, *, sub: str, idp: str | None, groups: Sequence[str], attributes: Mapping[str, Any],
    client_id: str, tool: str, scopes: Sequence[str] | None,
) -> Explanation:
    """The exchange's decision, filled constraints and actions, without a token."""
    if idp is None:
        if len(snapshot.idps_by_name) != 1:
            raise ConfigurationError("--idp is required when more than one identity provider is registered")
        idp = next(iter(snapshot.idps_by_name))
    idp_view = snapshot.idps_by_name.get(idp)
    tool_view = snapshot.tools_by_name.get(tool)
    client = snapshot.clients.get(client_id)
    if idp_view is None:
        raise ConfigurationError(f"--idp: unknown identity provider {idp!r}")
    if tool_view is None:
        raise ConfigurationError(f"--tool: unknown tool {tool!r}")
    if client is None:
        raise ConfigurationError(f"--client: unknown client {client_id!r}")
    principal = Principal(idp=idp, sub=sub, groups=frozenset(groups), attributes=dict(attributes))
    decision = decide(snapshot, principal, client, tool_view, scopes)
    if not decision.granted:
        return Explanation(decision)
    try:
        constraints = policy_constraints(decision, sub=sub, attributes=attributes,
                                         allowed_claims=idp_view.attribute_claims)
        actions = tuple(sorted(allowed_actions(tool_view, decision)))
    except IssuerError as e:
        return Explanation(decision, refusal=e)
    return Explanation(decision, constraints, actions)
