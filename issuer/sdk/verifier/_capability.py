"""A verified capability, read-only, and the claim checks that build it (DESIGN section 3)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...constraints import Prepared, prepare
from ...tool_invocation import TOOL_INVOCATION, arguments_digest
from .errors import ExpiredToken, InvalidToken, WrongAudience

__all__ = ["Capability", "FrozenDict", "FrozenList", "capability_from_claims", "freeze", "thaw"]

_DETAIL_MEMBERS = frozenset({"type", "locations", "actions", "constraints", "arguments", "arguments_sha256"})
_MAX_ACT_DEPTH = 16
_MAX_ID = 255


def _read_only(self: object, *args: Any, **kwargs: Any) -> Any:
    raise TypeError(f"{type(self).__name__} is read-only; copy it (dict(...), list(...)) to change it")


class FrozenDict(dict[str, Any]):
    """A read-only JSON object: a ``dict`` (so ``==`` and :func:`json.dumps` work) whose mutators raise."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


class FrozenList(list[Any]):
    """A read-only JSON array: a ``list`` whose mutators raise."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = remove = pop = clear = sort = reverse = _read_only

    def __repr__(self) -> str:
        return f"FrozenList({list.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))


def freeze(value: Any) -> Any:
    """A read-only deep copy of a JSON value (:class:`FrozenDict`, :class:`FrozenList`)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or kind is float or value is None:  # most of a token
        return value
    if kind is dict:
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if kind is list:
        return FrozenList([freeze(v) for v in value])
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a JSON value (exact ``dict`` and ``list`` types)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, eq=False)
class Capability:
    """What a verified capability grants, and to whom.  Built by :meth:`CapabilityVerifier.verify`.

    ``sub`` is the real user and the principal to authorize; ``client_id`` the
    MCP server that asked; ``actor_chain`` every actor from ``act``, outermost
    (the direct caller) first.  JSON values (``claims``, ``act``, each detail,
    ``arguments``) are read-only ``dict``/``list`` subclasses: they compare
    equal to plain JSON and serialise with :func:`json.dumps`, but raise
    TypeError on mutation.
    """

    issuer: str
    audience: str
    sub: str
    client_id: str
    actor_chain: tuple[str, ...]
    act: Mapping[str, Any] | None
    scopes: frozenset[str]
    authorization_details: tuple[Mapping[str, Any], ...]
    policy_version: int | None
    jti: str
    txn: str | None
    #: RFC 7638 thumbprint of the key this capability is bound to (``cnf.jkt``); None for a bearer capability
    dpop_jkt: str | None
    issued_at: int
    expires_at: int
    groups: tuple[str, ...]
    call_bound: bool
    arguments: Mapping[str, Any] | None
    arguments_sha256: str | None
    _payload: Mapping[str, Any] = field(repr=False)

    @functools.cached_property
    def claims(self) -> Mapping[str, Any]:
        """Every claim, read-only. Frozen on first use: most callers never read the raw claims."""
        return freeze(self._payload)  # type: ignore[no-any-return]

    @functools.cached_property
    def tool_invocations(self) -> tuple[Mapping[str, Any], ...]:
        """The ``tool_invocation`` details: each one's actions, constraints and binding must hold."""
        return tuple(d for d in self.authorization_details if d.get("type") == TOOL_INVOCATION)

    @functools.cached_property
    def prepared_constraints(self) -> tuple[Prepared, ...]:
        """Each detail's constraint set, validated once however often the capability is authorized."""
        return tuple(_prepared(d["constraints"]) for d in self.tool_invocations if "constraints" in d)


#: Validated constraint sets by their canonical JSON: the capabilities of one user and tool share a set.
_PREPARED: dict[str, Prepared] = {}
_PREPARED_MAX = 4096


def _prepared(constraints: Any) -> Prepared:
    # The claims are frozen (read-only list and dict subclasses) and the evaluator takes exact JSON types
    # only: thawed, but only when a constraint set is first seen.
    try:
        key = json.dumps(constraints, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return prepare(thaw(constraints))
    found = _PREPARED.get(key)
    if found is None:
        if len(_PREPARED) >= _PREPARED_MAX:
            _PREPARED.clear()
        found = _PREPARED[key] = prepare(thaw(constraints))
    return found


# --------------------------------------------------------------------------- claim checks


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidToken(f"missing required claim '{name}'")
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise InvalidToken(f"claim '{name}' is not a NumericDate")
    return float(value)


def _string(claims: Mapping[str, Any], name: str, *, required: bool, limit: int | None = None) -> str | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidToken(f"missing required claim '{name}'")
        return None
    if not isinstance(value, str) or not value or (limit is not None and len(value) > limit):
        raise InvalidToken(f"claim '{name}' is not a valid string")
    return value


def _actor_chain(act: Any) -> tuple[str, ...]:
    chain: list[str] = []
    while act is not None:
        if not isinstance(act, Mapping) or not isinstance(act.get("sub"), str) or not act["sub"]:
            raise InvalidToken("claim 'act' is malformed")
        if len(chain) >= _MAX_ACT_DEPTH:
            raise InvalidToken("claim 'act' nests too deeply")
        chain.append(act["sub"])
        act = act.get("act")
    return tuple(chain)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidToken(f"{what} must be an array of strings")
    return tuple(value)


def _check_details(raw: Any, audience: str) -> tuple[bool, Mapping[str, Any] | None, str | None]:
    """Validate ``authorization_details``; return (call_bound, bound arguments, their digest).

    Fail closed: a type or member this verifier does not understand may carry a
    restriction, so the token is refused rather than the restriction ignored.
    """
    if not isinstance(raw, list):
        raise InvalidToken("claim 'authorization_details' must be an array")
    bound: list[tuple[Mapping[str, Any] | None, str]] = []
    for detail in raw:
        if not isinstance(detail, Mapping) or detail.get("type") != TOOL_INVOCATION:
            raise InvalidToken("unsupported authorization_details type")
        unknown = set(detail) - _DETAIL_MEMBERS
        if unknown:
            raise InvalidToken("unsupported authorization_details member")
        if "locations" in detail and audience not in _strings(detail["locations"], "locations"):
            raise WrongAudience("authorization_details locations do not include this tool")
        if "actions" in detail:
            _strings(detail["actions"], "actions")
        if "constraints" in detail and not isinstance(detail["constraints"], Mapping):
            raise InvalidToken("authorization_details constraints must be an object")
        if "arguments" in detail or "arguments_sha256" in detail:
            args = detail.get("arguments")
            digest = detail.get("arguments_sha256")
            if args is not None and not isinstance(args, Mapping):
                raise InvalidToken("authorization_details arguments must be an object")
            if digest is not None and (not isinstance(digest, str) or not digest):
                raise InvalidToken("authorization_details arguments_sha256 must be a string")
            if args is not None:
                try:
                    computed = arguments_digest(args)
                except (TypeError, ValueError):
                    raise InvalidToken("authorization_details arguments are not JSON") from None
                if digest is not None and digest != computed:
                    raise InvalidToken("authorization_details arguments do not match their digest")
                digest = computed
            assert isinstance(digest, str)
            bound.append((args, digest))
    if len(bound) > 1:
        raise InvalidToken("a capability can be bound to one call only")
    if bound:
        return True, bound[0][0], bound[0][1]
    return False, None, None


def capability_from_claims(
    claims: Mapping[str, Any], *, issuer: str, audience: str, now: float, leeway: float
) -> Capability:
    """Check every claim of DESIGN section 3 and build the Capability; raise InvalidToken (or a subclass)."""
    if claims.get("iss") != issuer:
        raise InvalidToken("the capability was issued by another issuer")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and len(aud) == 1 and aud[0] == audience)):
        raise WrongAudience()
    exp = _number(claims, "exp", required=True)
    iat = _number(claims, "iat", required=True)
    nbf = _number(claims, "nbf", required=False)
    assert exp is not None and iat is not None
    if now >= exp + leeway:
        raise ExpiredToken()
    if nbf is not None and now < nbf - leeway:
        raise InvalidToken("the capability is not valid yet")
    if now < iat - leeway:
        raise InvalidToken("the capability was issued in the future")
    jti = _string(claims, "jti", required=True, limit=_MAX_ID)
    sub = _string(claims, "sub", required=True)
    client_id = _string(claims, "client_id", required=True)
    assert jti is not None and sub is not None and client_id is not None
    scope = claims.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise InvalidToken("claim 'scope' must be a string")
    dpop_jkt = None
    if "cnf" in claims:
        cnf = claims["cnf"]
        dpop_jkt = cnf.get("jkt") if isinstance(cnf, dict) and set(cnf) == {"jkt"} else None
        if not isinstance(dpop_jkt, str) or not 1 <= len(dpop_jkt) <= _MAX_ID:
            # A binding this verifier cannot check (another cnf method) must not be silently dropped.
            raise InvalidToken("claim 'cnf' must be {\"jkt\": <thumbprint>}")
    act = claims.get("act")
    chain = _actor_chain(act)
    pol = claims.get("pol")
    if pol is not None and type(pol) is not int:
        raise InvalidToken("claim 'pol' must be an integer")
    txn = _string(claims, "txn", required=False)
    groups = _strings(claims["groups"], "claim 'groups'") if claims.get("groups") is not None else ()
    details = claims.get("authorization_details")
    call_bound, arguments, digest = _check_details(details, audience) if details is not None else (False, None, None)
    return Capability(
        issuer=issuer,
        audience=audience,
        sub=sub,
        client_id=client_id,
        actor_chain=chain,
        act=freeze(act) if act is not None else None,
        scopes=frozenset(s for s in scope.split(" ") if s) if scope else frozenset(),
        authorization_details=tuple(freeze(details)) if details is not None else (),
        policy_version=pol,
        jti=jti,
        txn=txn,
        dpop_jkt=dpop_jkt,
        issued_at=math.floor(iat),
        expires_at=math.floor(exp),
        groups=groups,
        _payload=claims,
        call_bound=call_bound,
        arguments=freeze(arguments) if arguments is not None else None,
        arguments_sha256=digest,
    )
