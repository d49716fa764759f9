"""Every decision is a token exchange at the issuer: policy, constraints, rate limits and audit happen there, once.

Two kinds of exchange, both for the MCP server's tool at the issuer:

* the *session* exchange, one per user token (cached): no scope requested,
  so the policy's default scopes for this user apply. It proves the token
  (the issuer verifies signature, issuer, ``aud`` = the gateway, expiry),
  names the user (the capability's ``sub``), and its ``actions`` are the
  MCP tools (and prompts, resource reads) the user may use - the list
  filter. Its capability is what initialize, the lists and the streams are
  forwarded with.
* the *call* exchange, one per ``tools/call`` / ``resources/read`` /
  ``prompts/get``, never cached: scope ``tool:NAME`` (``prompt:NAME``,
  ``resource:read``), action and the call's arguments in
  ``authorization_details``. The issuer checks the arguments against the
  policy's constraints, audits the decision with them, and mints a
  capability bound to exactly that call.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt

from .. import clock
from ..sdk.client import (
    ExchangeError,
    InvalidGrant,
    InvalidScope,
    InvalidTarget,
    RateLimited,
)
from .config import GatewayConfig
from .exchange import AsyncExchange

__all__ = [
    "CallRefused",
    "Decider",
    "GrantCache",
    "NoGrant",
    "Unauthenticated",
    "Unavailable",
    "UserGrant",
    "call_target",
]

#: A forwarded capability keeps at least this long to live, so the MCP server never receives one about to expire.
_MARGIN: Final = 10.0
#: How long "this user may use nothing here" is remembered: short, so a new grant shows quickly.
_NO_GRANT_SECONDS: Final = 30.0
_MAX_TOKEN: Final = 16 * 1024
_LEEWAY: Final = 30
_ARGUMENT: Final = re.compile(r"^argument (\S{1,60}) is outside the granted constraints")
RESOURCE_ACTION: Final = "resource:read"


@dataclass(frozen=True, slots=True)
class UserGrant:
    """What the session exchange returned for one user token."""

    principal: str  #: the capability's ``sub``: the user, namespaced by the issuer
    capability: str
    actions: frozenset[str]
    constraints: Mapping[str, Any]
    policy_version: int | None
    reuse_until: float


@dataclass(frozen=True, slots=True)
class NoGrant:
    """The token is valid but policy grants its user nothing on this MCP server."""

    principal: str
    description: str
    reuse_until: float


class Unauthenticated(Exception):
    """No valid user token: the answer is HTTP 401 with the resource metadata."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class Unavailable(Exception):
    """The issuer could not decide: fail closed (HTTP 503, or a JSON-RPC error on a call)."""

    def __init__(self, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.retry_after = retry_after


class CallRefused(Exception):
    """The issuer refused one call; ``reason`` is ``not_permitted``, ``argument_refused`` or ``rate_limited``."""

    def __init__(self, reason: str, message: str, *, argument: str | None = None,
                 retry_after: float | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.argument = argument
        self.retry_after = retry_after
        self.detail = detail

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason}
        if self.argument is not None:
            out["argument"] = self.argument
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.detail:
            out["issuer"] = self.detail
        return out


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class GrantCache:
    """Session-exchange results by token digest, each until its own ``reuse_until`` (bounded, oldest first out).

    Only argument-free answers live here; a call decision never does.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, UserGrant | NoGrant] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, digest: str) -> UserGrant | NoGrant | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry.reuse_until <= clock.now():
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry

    def put(self, digest: str, entry: UserGrant | NoGrant) -> None:
        with self._lock:
            self._entries[digest] = entry
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def call_target(method: str, params: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(scope, action, arguments) of one decided call; ValueError when its params are malformed."""
    if method == "tools/call":
        name = params.get("name")
        arguments = params.get("arguments", {})
        if not isinstance(name, str) or not 0 < len(name) <= 128:
            raise ValueError("params.name must be a tool name")
        if not isinstance(arguments, dict):
            raise ValueError("params.arguments must be an object")
        return f"tool:{name}", name, arguments
    if method == "prompts/get":
        name = params.get("name")
        arguments = params.get("arguments", {})
        if not isinstance(name, str) or not 0 < len(name) <= 128:
            raise ValueError("params.name must be a prompt name")
        if not isinstance(arguments, dict):
            raise ValueError("params.arguments must be an object")
        return f"prompt:{name}", f"prompt:{name}", arguments
    uri = params.get("uri")
    if not isinstance(uri, str) or not 0 < len(uri) <= 2000:
        raise ValueError("params.uri must be a URI")
    return RESOURCE_ACTION, RESOURCE_ACTION, {"uri": uri}


def _peek(token: str, resource: str) -> dict[str, Any]:
    """Cheap checks before asking the issuer, so garbage costs it nothing; the issuer verifies the signature."""
    if not token or len(token) > _MAX_TOKEN or token.count(".") != 2:
        raise Unauthenticated("the token is not a JWT")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, audience=resource, leeway=_LEEWAY,
            options={"verify_signature": False, "require": ["exp", "aud"], "verify_exp": True, "verify_aud": True},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("the token has expired") from None
    except jwt.InvalidAudienceError:
        raise Unauthenticated("the token is not issued for this resource") from None
    except jwt.PyJWTError:
        raise Unauthenticated("the token is malformed") from None
    return claims


def _payload(token: str) -> dict[str, Any]:
    """The claims of a capability the issuer just returned to us over an authenticated channel."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


class Decider:
    """The gateway's one client of the issuer."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        # No cache in the client: the gateway caches session grants itself, bounded by the list TTL.
        self._client = AsyncExchange(issuer=config.issuer, client_id=config.client_id,
                                     secret=config.client_secret, timeout=config.issuer_timeout)
        self.grants = GrantCache()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def session(self, token: str) -> UserGrant | NoGrant:
        """The user's grant on the MCP server, from the cache or one exchange; raises Unauthenticated/Unavailable."""
        digest = token_digest(token)
        hit = self.grants.get(digest)
        if hit is not None:
            return hit
        claims = _peek(token, self._config.resource)
        now = clock.now()
        token_exp = float(claims["exp"])
        try:
            issued = await self._client.exchange(token, tool=self._config.upstream_resource)
        except InvalidGrant as e:
            raise Unauthenticated(e.description) from None
        except (InvalidTarget, InvalidScope) as e:
            # Steps before the policy verified the token, so its unverified sub is the one the issuer checked.
            entry: UserGrant | NoGrant = NoGrant(str(claims.get("sub", "")), e.description,
                                                 min(token_exp, now + _NO_GRANT_SECONDS))
            self.grants.put(digest, entry)
            return entry
        except RateLimited as e:
            raise Unavailable("rate limited at the issuer", e.retry_after) from None
        except ExchangeError as e:
            raise Unavailable(f"the issuer could not decide ({type(e).__name__})") from None
        cap = _payload(issued.access_token)
        actions: set[str] = set()
        constraints: dict[str, Any] = {}
        for detail in issued.authorization_details:
            actions.update(a for a in detail.get("actions", ()) if isinstance(a, str))
            if isinstance(detail.get("constraints"), dict):
                constraints.update(detail["constraints"])
        reuse_until = min(issued.expires_at - _MARGIN, token_exp, now + self._config.list_cache_seconds)
        pol = cap.get("pol")
        entry = UserGrant(str(cap["sub"]), issued.access_token, frozenset(actions), constraints,
                          pol if isinstance(pol, int) else None, reuse_until)
        self.grants.put(digest, entry)
        return entry

    async def call(self, token: str, method: str, params: Mapping[str, Any]) -> str:
        """A capability bound to this one call, or CallRefused / Unauthenticated / Unavailable."""
        scope, action, arguments = call_target(method, params)
        try:
            issued = await self._client.exchange(token, tool=self._config.upstream_resource, scope=scope,
                                                 actions=[action], arguments=arguments)
        except InvalidGrant as e:
            raise Unauthenticated(e.description) from None
        except RateLimited as e:
            wait = f"; retry after {e.retry_after:g} s" if e.retry_after is not None else ""
            raise CallRefused("rate_limited", f"rate limited{wait}", retry_after=e.retry_after,
                              detail=e.description) from None
        except InvalidScope as e:
            m = _ARGUMENT.match(e.description)
            if m:
                raise CallRefused("argument_refused", f"argument {m[1]} is outside its constraint",
                                  argument=m[1], detail=e.description) from None
            raise CallRefused("not_permitted", f"{action} is not permitted for this user",
                              detail=e.description) from None
        except InvalidTarget as e:
            raise CallRefused("not_permitted", f"{action} is not permitted for this user",
                              detail=e.description) from None
        except ValueError as e:  # arguments the SDK cannot put in a request (not JSON-serialisable)
            raise CallRefused("not_permitted", f"the call cannot be authorized: {e}") from None
        except ExchangeError as e:
            raise Unavailable(f"the issuer could not decide ({type(e).__name__})",
                              getattr(e, "retry_after", None)) from None
        return issued.access_token
