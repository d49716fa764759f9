"""Deciding one exchange: which scopes of which tool this user gets through this client.

The engine runs once per token exchange, so everything that does not depend
on the request is worked out when a policy is compiled: rules are indexed by
(tool, client) and their lists are frozensets. A decision then only looks at
the few rules written for that tool and that client.

It has no cache: a cache key would have to hash the principal's attribute
claims, which costs about what matching the handful of indexed rules does,
and a cache is one more place where a stale answer could hide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from issuer.errors import InvalidScope, InvalidTarget
from issuer.identity.types import VerifiedSubject
from issuer.policy.document import ClaimValue, PolicyDocument, Rule

__all__ = ["CompiledPolicy", "Decision", "Principal", "Reason"]

_ECHO_LIMIT: Final = 100


class Reason(StrEnum):
    """Stable machine codes of a decision: logged, counted and tested against."""

    GRANTED = "granted"
    GRANTED_NARROWED = "granted_narrowed"
    NO_MATCHING_RULE = "no_matching_rule"
    SCOPE_UNDEFINED = "scope_undefined"
    SCOPE_NOT_ENTITLED = "scope_not_entitled"
    NO_DEFAULT_SCOPES = "no_default_scopes"
    #: the client's registration does not list the tool (checked before policy, by the exchange)
    CLIENT_NOT_ALLOWED_TOOL = "client_not_allowed_tool"


@dataclass(frozen=True)
class Principal:
    """Who asks, reduced to what rules can match on.

    ``sub`` is the provider's own value and is only meaningful together with
    ``idp``: rules that list subjects also name their provider, so 'alice'
    from one provider never matches a rule written for another's 'alice'.
    """

    idp: str
    sub: str
    groups: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_subject(cls, v: VerifiedSubject) -> Principal:
        return cls(
            idp=v.idp,
            sub=v.sub,
            groups=frozenset(v.groups),
            attributes=MappingProxyType(dict(v.attributes)),
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of :meth:`CompiledPolicy.decide`, granted or not.

    ``description`` may reach the client (as ``error_description``), so it is
    ASCII and echoes at most 100 characters of any one request value.
    ``rule_id`` on a denial names the closest rule (one that matched the user
    but not the scopes) for the audit log; it is None when no rule matched.
    """

    granted: bool
    reason: Reason
    description: str
    policy_version: int
    scopes: tuple[str, ...] = ()
    rule_id: str | None = None
    max_lifetime: int | None = None
    #: the first contributing rule's own rate limit, if it sets one
    rate_limit: str | None = None
    contributing_rules: tuple[str, ...] = ()
    constraints: tuple[Mapping[str, Mapping[str, Any]], ...] = ()
    actions: frozenset[str] = frozenset()

    def raise_for_denial(self) -> None:
        """Turn a denial into the RFC error the token endpoint must answer with.

        An unreachable tool is ``invalid_target`` (RFC 8707): the client named
        a resource it cannot have. Everything about scopes is ``invalid_scope``.
        """
        if self.granted:
            return
        if self.reason in (Reason.NO_MATCHING_RULE, Reason.CLIENT_NOT_ALLOWED_TOOL):
            raise InvalidTarget(self.description)
        raise InvalidScope(self.description)


def _claim_key(value: Any) -> tuple[str, ClaimValue] | None:
    """Type-tagged, so that ``True`` and ``1`` (equal in Python) never match each other."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int):
        return ("i", value)
    if isinstance(value, str):
        return ("s", value)
    return None


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    idp: frozenset[str] | None
    subjects: frozenset[str] | None
    groups: frozenset[str] | None
    claims: tuple[tuple[str, frozenset[tuple[str, ClaimValue]]], ...]
    scopes: frozenset[str]
    default_scopes: frozenset[str]

    @classmethod
    def of(cls, rule: Rule) -> _CompiledRule:
        claims = tuple(
            (name, frozenset(k for k in map(_claim_key, values) if k is not None))
            for name, values in (rule.claims or {}).items()
        )
        return cls(
            rule=rule,
            idp=rule.idp,
            subjects=rule.subjects,
            groups=rule.groups,
            claims=claims,
            scopes=frozenset(rule.scopes),
            default_scopes=frozenset(rule.default_scopes),
        )

    def matches(self, principal: Principal) -> bool:
        """All matchers the rule has must match (AND); within one, any value will do (OR)."""
        if self.idp is not None and principal.idp not in self.idp:
            return False
        if self.subjects is not None and principal.sub not in self.subjects:
            return False
        if self.groups is not None and self.groups.isdisjoint(principal.groups):
            return False
        return all(_claim_matches(principal.attributes.get(name), allowed) for name, allowed in self.claims)


def _claim_matches(value: Any, allowed: frozenset[tuple[str, ClaimValue]]) -> bool:
    if isinstance(value, list | tuple):
        return any(_claim_key(v) in allowed for v in value)
    return _claim_key(value) in allowed


def _echo(value: str, limit: int = _ECHO_LIMIT) -> str:
    """Quote request input for a description: printable ASCII only, and short."""
    clean = "".join(ch if " " <= ch <= "~" and ch not in "'\"\\" else "?" for ch in value[: limit + 1])
    if len(clean) > limit:
        clean = clean[: limit - 3] + "..."
    return f"'{clean}'"


def _echo_scopes(scopes: Iterable[str]) -> str:
    return _echo(" ".join(sorted(scopes)))


class CompiledPolicy:
    """An immutable, indexed policy version. Build one per activated version and share it."""

    __slots__ = ("_doc", "_index", "_version")

    def __init__(self, version: int, doc: PolicyDocument) -> None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError("policy version must be a non-negative integer")
        self._version = version
        self._doc = doc
        index: dict[tuple[str, str], list[_CompiledRule]] = {}
        for rule in doc.rules:
            compiled = _CompiledRule.of(rule)
            for client in sorted(rule.clients):
                index.setdefault((rule.tool, client), []).append(compiled)
        self._index: dict[tuple[str, str], tuple[_CompiledRule, ...]] = {
            key: tuple(rules) for key, rules in index.items()
        }

    @classmethod
    def empty(cls) -> CompiledPolicy:
        """Version 0: what a fresh deployment runs before any policy is activated. Denies everything."""
        return cls(0, PolicyDocument(rules=(), source_text="", source="empty"))

    @property
    def version(self) -> int:
        return self._version

    @property
    def document(self) -> PolicyDocument:
        return self._doc

    def __repr__(self) -> str:
        return f"CompiledPolicy(version={self._version}, rules={len(self._doc.rules)})"

    def decide(
        self,
        principal: Principal,
        client_id: str,
        tool: str,
        tool_scopes: frozenset[str],
        requested: Sequence[str] | None,
    ) -> Decision:
        """Decide one request. Never raises for a denial: see :meth:`Decision.raise_for_denial`.

        ``tool_scopes`` are the scopes the tool defines now. A scope a rule
        grants but the tool no longer defines is never granted, so a registry
        change cannot be outrun by a stale policy. An empty ``requested``
        (``scope=``) is treated as omitted.
        """
        candidates = self._index.get((tool, client_id), ())
        matching = [c for c in candidates if c.matches(principal)]
        if not matching:
            return self._deny(
                Reason.NO_MATCHING_RULE,
                f"tool {_echo(tool)} is not reachable for this user through client {_echo(client_id)}",
                None,
            )
        closest = matching[0].rule.id

        if not requested:
            granted = frozenset().union(*(c.default_scopes for c in matching)) & tool_scopes
            if not granted:
                return self._deny(
                    Reason.NO_DEFAULT_SCOPES,
                    f"no scope was requested and none is granted by default for tool {_echo(tool)}; "
                    "request a scope explicitly",
                    closest,
                )
            return self._grant(Reason.GRANTED, granted, matching, "granted the default scopes")

        wanted = frozenset(requested)
        undefined = wanted - tool_scopes
        if undefined:
            return self._deny(
                Reason.SCOPE_UNDEFINED,
                f"tool {_echo(tool)} defines no scope {_echo_scopes(undefined)}",
                closest,
            )
        entitled = frozenset().union(*(c.scopes for c in matching)) & tool_scopes
        if wanted <= entitled:
            return self._grant(Reason.GRANTED, wanted, matching, "granted the requested scopes")

        overlap = wanted & entitled
        # Narrowing changes what the client gets from what it asked for, so
        # every rule that would supply the narrowed set must have opted in.
        if overlap and all(c.rule.allow_narrowing for c in matching if not c.scopes.isdisjoint(overlap)):
            return self._grant(
                Reason.GRANTED_NARROWED,
                overlap,
                matching,
                f"granted fewer scopes than requested; not granted: {_echo_scopes(wanted - overlap)}",
            )
        return self._deny(
            Reason.SCOPE_NOT_ENTITLED,
            f"scope {_echo_scopes(wanted - entitled)} of tool {_echo(tool)} is not granted to this user",
            closest,
        )

    def _deny(self, reason: Reason, description: str, rule_id: str | None) -> Decision:
        return Decision(
            granted=False,
            reason=reason,
            description=description,
            policy_version=self._version,
            rule_id=rule_id,
        )

    def _grant(
        self, reason: Reason, scopes: frozenset[str], matching: list[_CompiledRule], description: str
    ) -> Decision:
        contributors = [c.rule for c in matching if not c.scopes.isdisjoint(scopes)]
        lifetimes = [r.max_lifetime for r in contributors if r.max_lifetime is not None]
        return Decision(
            granted=True,
            reason=reason,
            description=description,
            policy_version=self._version,
            scopes=tuple(sorted(scopes)),
            rule_id=contributors[0].id,
            max_lifetime=min(lifetimes) if lifetimes else None,
            rate_limit=next((r.rate_limit for r in contributors if r.rate_limit), None),
            contributing_rules=tuple(r.id for r in contributors),
            constraints=tuple(r.constraints for r in contributors),
            actions=frozenset().union(*(r.actions for r in contributors)),
        )
