"""What one capability grants, as one value, and the one way a chained exchange narrows it.

A capability this issuer minted can come back to the token endpoint as the
``subject_token``, presented by the tool it was addressed to, in two ways:

* **re-scoped**: the tool asks for a capability for itself again (for a
  sub-component, or to drop rights before handing it on);
* **chained**: the tool asks for a capability for another tool, to call
  onward on the user's behalf.

Either way the new capability must never carry more than the presented one.
Every dimension of a capability is a field of :class:`Grant`, and
:meth:`Grant.narrow` is the only place that combines what policy would grant
now with what was presented. What "more" means, per dimension:

==============  ===============================  ====================================
dimension       re-scoped (same tool)            chained (another tool)
==============  ===============================  ====================================
scopes          a subset, or refused             the other tool's, decided by policy
actions         policy's AND presented           the other tool's, decided by policy
constraints     policy's AND presented           the other tool's, decided by policy
call binding    refused (one call stays one)     once per target tool (see below)
lifetime        never later                      never later
``txn``         the presented one's              the presented one's
``cnf``         bound stays bound                bound stays bound
==============  ===============================  ====================================

Another tool's scopes, actions and argument constraints are another
namespace: ``files:read`` on the files tool is not comparable with
``tickets:read`` on the tickets tool, so policy alone decides them, as for a
user's token. What is comparable across tools still only shrinks.

``cnf``: a capability bound to a key (RFC 9449) stays bound. The tool holds
no copy of its caller's key, so the new capability is bound to the key of
the proof the tool sends with the request; without a proof it would be a
bearer token, usable by whoever copies it, so that is refused.

A call-bound capability (``arguments``) stands for one call. Re-scoping it
would either drop the binding or change nothing, so it is refused. Chaining
it is what the call may need (the tool calling onward to do the call), once
into each tool: the :class:`~issuer.exchange.Exchanger` lets each one be
presented at most once per target tool, through the replay cache every
worker and replica shares. That is state, not a value, so it is not a field
here.

Requested narrowing (``authorization_details`` of the request) is applied to
the result of :meth:`Grant.narrow` by :func:`issuer.grant_details.apply_request`,
which can only narrow further.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from .constraints import ConstraintError, merge, validate_constraints
from .errors import InvalidDPoPProof, InvalidGrant, InvalidScope, IssuerError
from .tool_invocation import TOOL_INVOCATION

__all__ = ["ChainUnbound", "ChainWidened", "Grant", "NarrowingRefused", "RescopedCallBound"]

_BINDING = ("arguments", "arguments_sha256")


class NarrowingRefused(IssuerError):
    """A chained exchange would have carried more than the presented capability; ``audit_reason`` says so."""

    audit_reason: ClassVar[str] = "chain_widened"


class ChainWidened(NarrowingRefused, InvalidScope):
    """More scopes or actions than presented, or constraints that cannot hold together with the presented ones."""


class RescopedCallBound(NarrowingRefused, InvalidGrant):
    """A call-bound capability presented for its own tool."""


class ChainUnbound(NarrowingRefused, InvalidDPoPProof):
    """A capability bound to a key presented without a DPoP proof: its child would be a bearer token."""

    audit_reason: ClassVar[str] = "chain_unbound"


@dataclass(frozen=True)
class Grant:
    """Everything a capability lets its holder do, and for how long.

    ``actions`` None means the capability lists no actions (its scopes decide);
    an empty set is never a grant (it would read as "no restriction" upstream).
    ``binding`` is the ``arguments`` (or ``arguments_sha256``) member of a
    call-bound capability, None for a session capability. ``jkt`` is the
    ``cnf`` key thumbprint, None for a bearer capability.
    """

    location: str
    scopes: frozenset[str]
    expires_at: int
    txn: str | None = None
    jkt: str | None = None
    actions: frozenset[str] | None = None
    constraints: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    binding: Mapping[str, Any] | None = None

    @property
    def call_bound(self) -> bool:
        return self.binding is not None

    @classmethod
    def of_capability(cls, claims: Mapping[str, Any]) -> Grant:
        """The grant a verified capability of this issuer carries. Our own tokens are well formed; a
        capability that is not (minted by an older or broken issuer) is refused rather than guessed at."""
        aud, exp, cnf = claims.get("aud"), claims.get("exp"), claims.get("cnf")
        if isinstance(aud, list) and len(aud) == 1:
            aud = aud[0]
        scope = claims.get("scope", "")
        if not isinstance(aud, str) or not isinstance(exp, int) or not isinstance(scope, str):
            raise InvalidGrant("subject_token: not a capability of this issuer")
        jkt = cnf.get("jkt") if isinstance(cnf, Mapping) else None
        if cnf is not None and not isinstance(jkt, str):
            raise InvalidGrant("subject_token: unsupported cnf")
        txn = claims.get("txn")
        actions: frozenset[str] | None = None
        constraints: dict[str, dict[str, object]] = {}
        binding: dict[str, Any] | None = None
        details = claims.get("authorization_details", [])
        if not isinstance(details, list):
            raise InvalidGrant("subject_token: malformed authorization_details")
        for detail in details:
            if not isinstance(detail, Mapping) or detail.get("type") != TOOL_INVOCATION:
                raise InvalidGrant("subject_token: unknown authorization_details type")
            listed = detail.get("actions")
            if listed is not None:
                if not isinstance(listed, list) or not all(isinstance(a, str) for a in listed):
                    raise InvalidGrant("subject_token: malformed authorization_details actions")
                actions = frozenset(listed) if actions is None else actions & frozenset(listed)
            try:
                constraints = merge(constraints, validate_constraints(detail.get("constraints") or {}))
            except ConstraintError:
                raise InvalidGrant("subject_token: malformed authorization_details constraints") from None
            for member in _BINDING:
                if member in detail:
                    binding = {member: detail[member]}
        return cls(location=aud, scopes=frozenset(scope.split()), expires_at=exp,
                   txn=txn if isinstance(txn, str) else None, jkt=jkt, actions=actions,
                   constraints=constraints, binding=binding)

    def narrow(self, presented: Grant) -> Grant:
        """``self`` (what policy grants this request) limited by ``presented`` in every dimension.

        The result is the most a capability made from ``presented`` may carry;
        the request's own ``authorization_details`` may narrow it further.
        Raises a :class:`NarrowingRefused` where limiting would mean silently
        dropping something the request asked for or something that protects
        the presented capability.
        """
        if presented.jkt is not None and self.jkt is None:
            raise ChainUnbound("a capability bound to a key can only be presented with a DPoP proof")
        common = replace(self, expires_at=min(self.expires_at, presented.expires_at),
                         txn=presented.txn if presented.txn is not None else self.txn)
        if self.location != presented.location:
            return common  # another tool: its scopes, actions and constraints are its own namespace
        if presented.call_bound:
            raise RescopedCallBound("subject_token: a call-bound capability cannot be re-scoped")
        if not self.scopes <= presented.scopes:
            raise ChainWidened("a chained capability may only narrow the presented capability's scopes")
        actions = self.actions
        if presented.actions is not None:
            actions = presented.actions if actions is None else actions & presented.actions
            if not actions:
                raise ChainWidened("the presented capability allows none of the actions policy grants now")
        try:
            constraints = merge(self.constraints, presented.constraints)
        except ConstraintError as e:
            raise ChainWidened(f"the presented capability's constraints conflict with policy: {e}") from None
        return replace(common, actions=actions, constraints=constraints)

    def details(self, *, requested: bool = False) -> list[dict[str, Any]] | None:
        """The capability's ``authorization_details`` claim (RFC 9396): None when nothing restricts it,
        unless the request sent ``authorization_details`` (then the answer names what was granted)."""
        if not requested and self.binding is None and not self.constraints and not self.actions:
            return None
        out: dict[str, Any] = {"type": TOOL_INVOCATION, "locations": [self.location]}
        if self.actions:
            out["actions"] = sorted(self.actions)
        if self.binding is not None:
            out.update(self.binding)
        elif self.constraints:
            out["constraints"] = {k: dict(v) for k, v in self.constraints.items()}
        return [out]
