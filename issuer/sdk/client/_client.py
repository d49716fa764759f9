"""The exchange client: RFC 8693 token exchange against the capability issuer.

https://www.rfc-editor.org/rfc/rfc8693 (token exchange),
https://www.rfc-editor.org/rfc/rfc8414 (discovery),
https://www.rfc-editor.org/rfc/rfc9396 (``authorization_details``).
"""

from __future__ import annotations

import copy
import json
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from issuer.tool_invocation import TOOL_INVOCATION, canonical_arguments

from ...kernel import strictjson
from ._cache import CacheKey, CapabilityCache, token_digest
from ._capability import ACCESS_TOKEN_TYPE, IssuedCapability
from ._credentials import ClientSecret, PrivateKeyJwt
from ._dpop import DPoPKey
from ._errors import (
    ERRORS_BY_CODE,
    DiscoveryError,
    ExchangeError,
    IssuerUnavailable,
    ProtocolError,
    RateLimited,
)
from ._transport import Response, Transport, insecure_reason

__all__ = ["TOKEN_EXCHANGE_GRANT_TYPE", "WELL_KNOWN_PATH", "ExchangeClient"]

TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
WELL_KNOWN_PATH = "/.well-known/oauth-authorization-server"
_MAX_DESCRIPTION = 300
_REDACTED = "[redacted]"


class ExchangeClient:
    """Exchanges users' tokens for capabilities, one tool at a time, and caches them.

    One client per process (or per issuer and client registration): it keeps
    the token endpoint found by discovery and the capability cache, and is
    safe to share between threads.

    :param issuer: the issuer identifier, exactly as the issuer's metadata
        states it (``https://issuer.example``); its metadata is fetched from
        ``/.well-known/oauth-authorization-server`` (RFC 8414) on first use.
    :param client_id: this MCP server's registered client id.
    :param credentials: :class:`ClientSecret` or :class:`PrivateKeyJwt`.
    :param timeout: seconds allowed for connecting to the issuer and for each read.
    :param refresh_margin: a cached capability is replaced once it has fewer
        than this many seconds left, so a tool never receives one about to expire.
    :param allow_insecure_loopback: allow plain ``http`` to a loopback address
        (local development, tests, a sidecar issuer); ``https`` is required otherwise.
    :param max_cache_entries: bound on cached capabilities; the oldest go first;
        ``0`` disables the cache.
    :param ssl_context: TLS settings for the issuer (a private CA, say);
        the system's defaults otherwise.
    :param dpop: sender-constrain every capability (RFC 9449): ``True`` makes
        a fresh ES256 key for this client (one per process), or pass a
        :class:`DPoPKey`. Each exchange then carries a proof, server nonces are
        followed, and capabilities come back as ``token_type`` ``DPoP``, bound
        to the key: a copy stolen from a log is useless without it.
        :class:`~issuer.sdk.client.httpx_auth.CapabilityAuth` sends them with a
        fresh proof per request.
    """

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        credentials: ClientSecret | PrivateKeyJwt,
        timeout: float = 3.0,
        refresh_margin: float = 30,
        allow_insecure_loopback: bool = False,
        max_cache_entries: int = 10_000,
        ssl_context: ssl.SSLContext | None = None,
        dpop: DPoPKey | bool = False,
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("issuer must be the issuer's URL, e.g. https://issuer.example")
        reason = insecure_reason(issuer, allow_insecure_loopback=allow_insecure_loopback)
        if reason is not None:
            raise ValueError(f"issuer {issuer!r} {reason}")
        parts = urlsplit(issuer)
        if parts.query or parts.fragment:
            raise ValueError("issuer must not have a query or fragment (RFC 8414 section 2)")
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
        if not isinstance(credentials, ClientSecret | PrivateKeyJwt):
            raise TypeError("credentials must be a ClientSecret or a PrivateKeyJwt")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if isinstance(refresh_margin, bool) or not isinstance(refresh_margin, int | float) or refresh_margin < 0:
            raise ValueError("refresh_margin must be a number of seconds >= 0")
        if isinstance(max_cache_entries, bool) or not isinstance(max_cache_entries, int) or max_cache_entries < 0:
            raise ValueError("max_cache_entries must be an integer >= 0")
        self._issuer = issuer
        self._client_id = client_id
        self._credentials = credentials
        self._refresh_margin = float(refresh_margin)
        self._allow_insecure_loopback = allow_insecure_loopback
        self._metadata_url = _metadata_url(issuer)
        self._transport = Transport(timeout=float(timeout), ssl_context=ssl_context)
        self._cache = CapabilityCache(max_cache_entries)
        self._token_endpoint: str | None = None
        self._discovery_lock = threading.Lock()
        if not isinstance(dpop, DPoPKey | bool):
            raise TypeError("dpop must be True, False or a DPoPKey")
        self._dpop = DPoPKey() if dpop is True else (dpop or None)

    def __repr__(self) -> str:
        return (f"ExchangeClient(issuer={self._issuer!r}, client_id={self._client_id!r}, "
                f"credentials={self._credentials!r})")

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def dpop(self) -> DPoPKey | None:
        """The key capabilities are bound to, or None for bearer capabilities."""
        return self._dpop

    def exchange(
        self,
        subject_token: str,
        *,
        tool: str | None = None,
        audience: str | None = None,
        scope: str | Sequence[str] | None = None,
        actions: Sequence[str] | None = None,
        constraints: Mapping[str, Any] | None = None,
        arguments: Mapping[str, Any] | None = None,
        actor_token: str | None = None,
        actor_token_type: str | None = None,
        subject_token_type: str = ACCESS_TOKEN_TYPE,
        force_refresh: bool = False,
        txn: str | None = None,
    ) -> IssuedCapability:
        """Exchange ``subject_token`` (the user's token, as received) for a capability for one tool.

        Name the tool by its resource URI (``tool="https://tickets.example"``)
        or by its registered name (``audience="tickets"``), not both.
        ``scope`` is a space-separated string or a list; omitted, the policy's
        defaults apply. ``actions`` and ``constraints`` narrow a session
        capability; ``arguments`` bind it to exactly one call (and then it is
        never cached); ``constraints`` and ``arguments`` exclude each other.
        ``actor_token`` and ``actor_token_type`` go together (RFC 8693 section 2.1).
        ``txn`` names the agent action this call belongs to (the MCP request
        id, say): the capability carries it, the issuer's audit record stores
        it, and a capability chained from this one keeps it; such a capability
        belongs to one action and is not cached.

        A cached capability for the same user, tool, scopes, actions and
        constraints is returned while it has more than ``refresh_margin``
        seconds left; ``force_refresh=True`` skips (and replaces) it, e.g.
        after the tool answered 401.

        :raises ExchangeError: a subclass saying why; the tree is drawn in ``issuer/sdk/client/_errors.py``.
        :raises ValueError: the arguments do not make a valid request; nothing was sent.
        """
        prepared = _prepare(subject_token, tool=tool, audience=audience, scope=scope, actions=actions,
                            constraints=constraints, arguments=arguments, actor_token=actor_token,
                            actor_token_type=actor_token_type, subject_token_type=subject_token_type, txn=txn)
        key = prepared.cache_key
        if key is None:
            return self._exchange(prepared)
        if force_refresh:
            self._cache.discard(key)
        else:
            hit = self._cache.get(key)
            if hit is not None:
                return hit._copy()
        flight, leader = self._cache.join(key)
        if not leader:
            flight.done.wait()
            if flight.capability is not None:
                return flight.capability._copy()
            if flight.error is not None:
                raise copy.copy(flight.error)  # the leader's answer, in this thread's own exception
            return self._exchange(prepared)  # the leader failed unexpectedly: ask on our own
        try:
            hit = None if force_refresh else self._cache.get(key)  # a flight may have landed since the miss
            if hit is not None:
                flight.capability = hit
                return hit._copy()
            capability = self._exchange(prepared)
            self._cache.put(key, capability, capability.expires_at - self._refresh_margin)
            flight.capability = capability
            return capability._copy()
        except ExchangeError as e:
            flight.error = e
            raise
        finally:
            self._cache.land(key, flight)

    def clear_cache(self) -> None:
        """Forget every cached capability (at sign-out, say)."""
        self._cache.clear()

    # -- the request ----------------------------------------------------------------
    def _exchange(self, prepared: _Prepared) -> IssuedCapability:
        endpoint = self._discover()
        for attempt in range(2):
            auth_form, auth_headers = self._credentials._authenticate(self._client_id, endpoint)
            body = urlencode(prepared.form + auth_form).encode("ascii")
            headers = {"Content-Type": "application/x-www-form-urlencoded", **auth_headers}
            if self._dpop is not None:
                headers["DPoP"] = self._dpop.proof("POST", endpoint)
            sent_at = time.time()
            resp = self._transport.request("POST", endpoint, headers=headers, body=body)
            if resp.status == 200:
                return _parse_success(resp, sent_at, prepared, bound=self._dpop is not None)
            error = _error_from(resp, prepared.sensitive + self._credentials._sensitive())
            # RFC 9449 section 8: the issuer wants a nonce; the answer carries it; one retry.
            fresh = self._dpop is not None and self._dpop.remember_nonce(endpoint, resp.headers.get("DPoP-Nonce"))
            if not (attempt == 0 and fresh and error.error == "use_dpop_nonce"):
                raise error
        raise AssertionError("unreachable")

    def _discover(self) -> str:
        with self._discovery_lock:
            if self._token_endpoint is None:
                self._token_endpoint = self._fetch_token_endpoint()
            return self._token_endpoint

    def _fetch_token_endpoint(self) -> str:
        url = self._metadata_url
        resp = self._transport.request("GET", url, headers={})
        if resp.status == 429 or resp.status >= 500:
            raise IssuerUnavailable(f"the issuer's metadata is unavailable (HTTP {resp.status})",
                                    status_code=resp.status, retry_after=_retry_after(resp))
        if resp.status != 200:
            raise DiscoveryError(f"GET {url} answered HTTP {resp.status}", status_code=resp.status)
        doc = _json_object(resp.body)
        if doc is None:
            raise DiscoveryError(f"GET {url} did not return a JSON object", status_code=resp.status)
        named = doc.get("issuer")
        if named != self._issuer:
            shown = repr(named)[:200] if isinstance(named, str) else "no issuer"
            raise DiscoveryError(f"the metadata names {shown}, not the configured issuer {self._issuer!r} "
                                 "(RFC 8414 section 3.3: they must be identical)", status_code=resp.status)
        grants = doc.get("grant_types_supported")
        if isinstance(grants, list) and TOKEN_EXCHANGE_GRANT_TYPE not in grants:
            raise DiscoveryError("the issuer does not list token exchange in grant_types_supported",
                                 status_code=resp.status)
        endpoint = doc.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise DiscoveryError("the metadata has no token_endpoint", status_code=resp.status)
        reason = insecure_reason(endpoint, allow_insecure_loopback=self._allow_insecure_loopback)
        if reason is not None or urlsplit(endpoint).fragment:
            raise DiscoveryError(f"token_endpoint {endpoint[:200]!r} {reason or 'has a fragment'}",
                                 status_code=resp.status)
        return endpoint


# ----------------------------------------------------------------------------- preparing a request


@dataclass(frozen=True, slots=True)
class _Prepared:
    form: list[tuple[str, str]]
    cache_key: CacheKey | None  #: None: never cached (call-bound)
    scopes: tuple[str, ...] | None
    call_bound: bool
    sensitive: tuple[str, ...]

    def __repr__(self) -> str:
        return f"_Prepared(scopes={self.scopes!r}, call_bound={self.call_bound!r})"


def _prepare(
    subject_token: str,
    *,
    tool: str | None,
    audience: str | None,
    scope: str | Sequence[str] | None,
    actions: Sequence[str] | None,
    constraints: Mapping[str, Any] | None,
    arguments: Mapping[str, Any] | None,
    actor_token: str | None,
    actor_token_type: str | None,
    subject_token_type: str,
    txn: str | None = None,
) -> _Prepared:
    if not isinstance(subject_token, str) or not subject_token:
        raise ValueError("subject_token must be the user's token, a non-empty string")
    if not isinstance(subject_token_type, str) or not subject_token_type:
        raise ValueError("subject_token_type must be a token type URI")
    form: list[tuple[str, str]] = [
        ("grant_type", TOKEN_EXCHANGE_GRANT_TYPE),
        ("subject_token", subject_token),
        ("subject_token_type", subject_token_type),
    ]
    sensitive = [subject_token]
    if (actor_token is None) != (actor_token_type is None):
        raise ValueError("actor_token and actor_token_type go together (RFC 8693 section 2.1)")
    if actor_token is not None and actor_token_type is not None:
        if not isinstance(actor_token, str) or not actor_token:
            raise ValueError("actor_token must be a non-empty string")
        if not isinstance(actor_token_type, str) or not actor_token_type:
            raise ValueError("actor_token_type must be a token type URI")
        form += [("actor_token", actor_token), ("actor_token_type", actor_token_type)]
        sensitive.append(actor_token)

    if (tool is None) == (audience is None):
        raise ValueError("name the tool exactly once: tool= (its resource URI) or audience= (its registered name)")
    target: tuple[str, str]
    if tool is not None:
        if not isinstance(tool, str) or not _absolute_uri(tool):
            raise ValueError("tool must be the tool's resource URI: absolute, without a fragment")
        target = ("resource", tool)
    else:
        if not isinstance(audience, str) or not audience.strip() or audience != audience.strip():
            raise ValueError("audience must be the tool's registered name")
        target = ("audience", audience)
    form.append(target)

    scopes = _scopes(scope)
    if scopes is not None:
        form.append(("scope", " ".join(scopes)))

    if constraints is not None and arguments is not None:
        raise ValueError("give constraints (a session capability) or arguments (one call), not both")
    detail: dict[str, Any] = {}
    if actions is not None:
        detail["actions"] = _actions(actions)
    if constraints is not None:
        detail["constraints"] = _json_value(constraints, "constraints")
    if arguments is not None:
        if not isinstance(arguments, Mapping):
            raise TypeError("arguments must be a mapping of argument names to JSON values")
        try:
            canonical_arguments(arguments)
        except (TypeError, ValueError):
            raise ValueError("arguments must be JSON-serialisable (no NaN or Infinity)") from None
        detail["arguments"] = dict(arguments)
    if detail:
        head: dict[str, Any] = {"type": TOOL_INVOCATION}
        if target[0] == "resource":
            head["locations"] = [target[1]]
        form.append(("authorization_details", json.dumps([{**head, **detail}], separators=(",", ":"))))

    if txn is not None:
        if not isinstance(txn, str) or not 1 <= len(txn) <= 100 or not all(0x21 <= ord(c) <= 0x7E for c in txn):
            raise ValueError("txn must be 1 to 100 printable ASCII characters without spaces")
        form.append(("txn", txn))
    key: CacheKey | None = None
    if arguments is None and txn is None:
        narrowing = {"actions": sorted(detail.get("actions", ())) if "actions" in detail else None,
                     "constraints": detail.get("constraints")}
        key = CacheKey(
            subject=token_digest(subject_token),
            subject_token_type=subject_token_type,
            actor=token_digest(actor_token) if actor_token is not None else None,
            actor_token_type=actor_token_type,
            target=target,
            scopes=tuple(sorted(scopes)) if scopes is not None else None,
            details=json.dumps(narrowing, sort_keys=True, separators=(",", ":")),
        )
    return _Prepared(form, key, scopes, arguments is not None, tuple(sensitive))


def _absolute_uri(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme and (parts.netloc or parts.path)) and not parts.fragment and "#" not in value


def _scopes(scope: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if scope is None:
        return None
    items: Sequence[str]
    if isinstance(scope, str):
        items = scope.split()
    elif isinstance(scope, Sequence):
        items = scope
        if not all(isinstance(s, str) and s and s == s.strip() and " " not in s for s in items):
            raise ValueError("scope must be a list of scope names without spaces")
    else:
        raise TypeError("scope must be a space-separated string or a list of scope names")
    if not items:
        raise ValueError("scope is empty: omit it for the policy's default scopes")
    return tuple(dict.fromkeys(items))


def _actions(actions: Sequence[str]) -> list[str]:
    if isinstance(actions, str) or not isinstance(actions, Sequence):
        raise TypeError("actions must be a list of action names")
    if not actions or not all(isinstance(a, str) and a for a in actions):
        raise ValueError("actions must be a non-empty list of non-empty action names")
    return list(dict.fromkeys(actions))


def _json_value(value: Mapping[str, Any], name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping")
    try:
        out: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be JSON-serialisable (no NaN or Infinity)") from None
    return out


def _metadata_url(issuer: str) -> str:
    """RFC 8414 section 3.1: the well-known segment goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    path = parts.path if parts.path != "/" else ""
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN_PATH + path, "", ""))


# ----------------------------------------------------------------------------- reading the answer


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The issuer's answer under the issuer's own strict decoder: an answer with a duplicate member (two
    ``access_token`` or ``scope`` values) is read one way here and another by a proxy or a log pipeline, so it
    is no answer; NUL, lone surrogates and NaN are not in any answer the issuer sends."""
    try:
        value = strictjson.loads(body)
    except strictjson.StrictJSONError:
        return None
    return value if isinstance(value, dict) else None


def _parse_success(resp: Response, sent_at: float, prepared: _Prepared, *, bound: bool = False) -> IssuedCapability:
    def bad(what: str) -> ProtocolError:
        return ProtocolError(f"token response: {what}", status_code=resp.status)

    body = _json_object(resp.body)
    if body is None:
        raise bad("not a JSON object")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise bad("access_token is missing")
    issued = body.get("issued_token_type")
    if issued != ACCESS_TOKEN_TYPE:
        raise bad(f"issued_token_type must be {ACCESS_TOKEN_TYPE}")
    token_type = body.get("token_type")
    normalised = {"bearer": "Bearer", "dpop": "DPoP"}.get(token_type.lower() if isinstance(token_type, str) else "")
    if normalised is None:
        raise bad("token_type must be Bearer or DPoP")
    if normalised == "DPoP" and not bound:
        raise bad("token_type is DPoP, but this client sent no DPoP proof")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise bad("expires_in must be a positive integer")
    raw_scope = body.get("scope")
    if raw_scope is None:
        scope = prepared.scopes or ()  # RFC 8693 section 2.2.1: omitted when identical to the request
    elif isinstance(raw_scope, str):
        scope = tuple(raw_scope.split())
    else:
        raise bad("scope must be a string")
    details = body.get("authorization_details", [])
    if not isinstance(details, list) or not all(isinstance(d, dict) for d in details):
        raise bad("authorization_details must be a JSON array of objects")
    call_bound = prepared.call_bound or any("arguments" in d or "arguments_sha256" in d for d in details)
    return IssuedCapability(access_token=token, token_type=normalised, expires_at=sent_at + expires_in,
                            scope=scope, authorization_details=tuple(details), call_bound=call_bound,
                            issued_token_type=issued)


def _error_from(resp: Response, sensitive: tuple[str, ...]) -> ExchangeError:
    status = resp.status
    body = _json_object(resp.body) or {}
    code = body.get("error")
    code = code if isinstance(code, str) and code and len(code) <= 64 and _printable(code) else None
    raw = body.get("error_description")
    description = _clean(raw, sensitive) if isinstance(raw, str) and code else None
    if status == 429:
        return RateLimited(description, error=code, status_code=status, retry_after=_retry_after(resp))
    if status >= 500 or code in ("temporarily_unavailable", "server_error"):
        return IssuerUnavailable(description or f"the issuer answered HTTP {status}", error=code,
                                 status_code=status, retry_after=_retry_after(resp))
    if 300 <= status < 400:
        return ProtocolError(f"the token endpoint answered with a redirect (HTTP {status}); "
                             "token requests are never redirected", status_code=status)
    if code is None:
        return ProtocolError(f"the token endpoint answered HTTP {status} without an OAuth error",
                             status_code=status)
    cls = ERRORS_BY_CODE.get(code, ExchangeError)
    return cls(description, error=code, status_code=status)


def _printable(text: str) -> bool:
    return all(0x20 <= ord(ch) <= 0x7E for ch in text)


def _clean(text: str, sensitive: tuple[str, ...]) -> str:
    """The issuer's description, safe to log: no token or secret, printable, bounded."""
    for secret in sensitive:
        if secret:
            text = text.replace(secret, _REDACTED)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 3] + "..."


def _retry_after(resp: Response) -> float | None:
    """``Retry-After`` (RFC 9110 section 10.2.3) in seconds: delta-seconds or an HTTP-date."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())
