"""The registry: identity providers, tools, clients and policy versions.

Two faces:

* admin operations (``add_*``, ``list_*``, ``apply_policy``...), the
  validation and storage under :class:`issuer.admin.service.AdminService`,
  the one service layer the CLI and the admin API both call; every write bumps
  ``config_state.generation`` and records the admin change (``changes``) in
  the same transaction;
* :class:`Snapshot`, an immutable in-memory copy of everything the exchange
  needs, and :class:`SnapshotCache`, which polls the generation at most once
  per refresh interval and reloads on change. The exchange itself never reads
  registry rows, and a change reaches every replica within seconds.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from . import clock
from .client_secrets import MIN_IMPORTED_SECRET_LENGTH, generate_secret, hash_secret, verify_secret
from .db import Database
from .errors import AlreadyExists, ConfigurationError, TemporarilyUnavailable, UnknownObject
from .identity.discovery import discover_jwks_uri
from .identity.jwks import check_fetch_url
from .identity.types import ASYMMETRIC_ALGORITHMS, TrustedIdp
from .models import Client, ClientTool, ConfigState, IdentityProvider, PolicyVersion, Tool, ToolScope
from .policy import CompiledPolicy, canonical_json, parse_policy, validate_references
from .ratelimit import parse_limits
from .validation import check_issuer_url, check_name, check_public_jwks, check_resource_uri

__all__ = [
    "AUTH_METHODS",
    "ChangeRecorder",
    "ClientView",
    "ScopeSpec",
    "Snapshot",
    "SnapshotCache",
    "ToolView",
    "add_client",
    "add_idp",
    "add_tool",
    "apply_policy",
    "diff_policy",
    "get_client",
    "get_idp",
    "get_tool",
    "idp_dict",
    "list_clients",
    "list_idps",
    "list_policy_versions",
    "list_tools",
    "load_snapshot",
    "rotate_client_secret",
    "set_client_enabled",
    "set_idp_enabled",
    "set_tool_enabled",
    "show_policy",
    "update_idp",
    "update_tool",
]

#: Records one admin change inside the change's own transaction: (session, action, target, before, after).
ChangeRecorder = Callable[[Session, str, str, Mapping[str, Any] | None, Mapping[str, Any] | None], None]

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def _now() -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


# --------------------------------------------------------------------------- views


@dataclass(frozen=True)
class ScopeSpec:
    name: str
    description: str = ""
    actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolView:
    name: str
    resource_uri: str
    scopes: Mapping[str, ScopeSpec]
    status: str = "active"
    description: str = ""
    rate_limit: str | None = None
    #: argument names whose values the audit trail drops, or keeps only as a keyed hash
    redact_arguments: tuple[str, ...] = ()
    hash_arguments: tuple[str, ...] = ()

    @property
    def scope_names(self) -> frozenset[str]:
        return frozenset(self.scopes)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "resource_uri": self.resource_uri, "description": self.description,
                "status": self.status,
                "scopes": [{"name": s.name, "description": s.description, "actions": list(s.actions)}
                           for s in sorted(self.scopes.values(), key=lambda s: s.name)],
                "rate_limit": self.rate_limit, "redact_arguments": list(self.redact_arguments),
                "hash_arguments": list(self.hash_arguments)}


@dataclass(frozen=True)
class ClientView:
    """A registered MCP server, shaped for Authlib's client protocol."""

    client_id: str
    resource_uri: str
    auth_methods: tuple[str, ...]
    tools: frozenset[str]
    secret_hash: str | None = field(default=None, repr=False)
    pepper: bytes = field(default=b"", repr=False)
    jwks: Mapping[str, Any] | None = None
    max_lifetime: int | None = None
    may_chain: bool = False
    enabled: bool = True
    rate_limit: str | None = None
    dpop_required: bool = False

    # Authlib ClientMixin protocol --------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return verify_secret(self.pepper, client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return self.enabled and method in self.auth_methods

    def check_grant_type(self, grant_type: str) -> bool:
        return self.enabled and grant_type == TOKEN_EXCHANGE

    def to_dict(self) -> dict[str, Any]:
        """Never the secret hash; the public keys of a private_key_jwt client are public."""
        return {"client_id": self.client_id, "resource_uri": self.resource_uri, "tools": sorted(self.tools),
                "auth_methods": list(self.auth_methods), "jwks": dict(self.jwks) if self.jwks else None,
                "max_lifetime": self.max_lifetime, "may_chain": self.may_chain, "rate_limit": self.rate_limit,
                "dpop_required": self.dpop_required, "enabled": self.enabled}


@dataclass(frozen=True)
class Snapshot:
    generation: int
    idps_by_name: Mapping[str, TrustedIdp]
    idps_by_issuer: Mapping[str, TrustedIdp]
    idps_by_namespace: Mapping[str, TrustedIdp]
    tools_by_name: Mapping[str, ToolView]
    tools_by_resource: Mapping[str, ToolView]
    clients: Mapping[str, ClientView]
    policy: CompiledPolicy


def _idp_view(row: IdentityProvider) -> TrustedIdp:
    return TrustedIdp(
        name=row.name,
        issuer=row.issuer,
        namespace=row.namespace,
        algorithms=tuple(row.algorithms),
        jwks_uri=row.jwks_uri,
        jwks=row.jwks,
        subject_claim=row.subject_claim,
        groups_claim=row.groups_claim,
        attribute_claims=tuple(row.attribute_claims or ()),
        enabled=row.enabled,
    )


def idp_dict(idp: TrustedIdp) -> dict[str, Any]:
    return {"name": idp.name, "issuer": idp.issuer, "namespace": idp.namespace, "jwks_uri": idp.jwks_uri,
            "jwks": dict(idp.jwks) if idp.jwks else None, "algorithms": list(idp.algorithms),
            "subject_claim": idp.subject_claim, "groups_claim": idp.groups_claim,
            "attribute_claims": list(idp.attribute_claims), "enabled": idp.enabled}


def _tool_view(row: Tool) -> ToolView:
    scopes = {s.name: ScopeSpec(s.name, s.description, tuple(s.actions or ())) for s in row.scopes}
    return ToolView(row.name, row.resource_uri, scopes, row.status, row.description, row.rate_limit,
                    tuple(row.redact_arguments or ()), tuple(row.hash_arguments or ()))


def _client_view(row: Client, pepper: bytes) -> ClientView:
    return ClientView(
        client_id=row.client_id,
        resource_uri=row.resource_uri,
        auth_methods=tuple(row.auth_methods),
        tools=frozenset(ct.tool.name for ct in row.tools),
        secret_hash=row.secret_hash,
        pepper=pepper,
        jwks=row.jwks,
        max_lifetime=row.max_lifetime,
        may_chain=row.may_chain,
        enabled=row.enabled,
        rate_limit=row.rate_limit,
        dpop_required=bool(row.dpop_required),
    )


def _generation(s: Session) -> int:
    return int(s.execute(select(ConfigState.generation).where(ConfigState.id == 1)).scalar_one())


def _bump(s: Session) -> None:
    s.execute(update(ConfigState).where(ConfigState.id == 1).values(generation=ConfigState.generation + 1))


def _set(s: Session, row: Any, attr: str, value: object, action: str, target: str,
         changes: ChangeRecorder | None) -> None:
    """Change one column of a registry row: replicas reload, and the change log says before and after.
    Setting what is already there changes nothing and records nothing."""
    before = getattr(row, attr)
    if before == value:
        return
    setattr(row, attr, value)
    _bump(s)
    if changes:
        changes(s, action, target, {attr: before}, {attr: value})

def load_snapshot(db: Database, pepper: bytes) -> Snapshot:
    with db.session() as s:
        gen = _generation(s)
        idps = [_idp_view(r) for r in s.scalars(select(IdentityProvider))]
        tools = [_tool_view(r) for r in s.scalars(select(Tool).options(selectinload(Tool.scopes)))]
        clients = [
            _client_view(r, pepper)
            for r in s.scalars(select(Client).options(selectinload(Client.tools).selectinload(ClientTool.tool)))
        ]
        latest = s.scalars(select(PolicyVersion).order_by(PolicyVersion.version.desc()).limit(1)).first()
    policy = CompiledPolicy(latest.version, parse_policy(latest.document)) if latest else CompiledPolicy.empty()
    return Snapshot(
        generation=gen,
        idps_by_name={i.name: i for i in idps},
        idps_by_issuer={i.issuer: i for i in idps if i.enabled},
        idps_by_namespace={i.namespace: i for i in idps},
        tools_by_name={t.name: t for t in tools},
        tools_by_resource={t.resource_uri: t for t in tools},
        clients={c.client_id: c for c in clients},
        policy=policy,
    )


class SnapshotCache:
    """Holds the current snapshot; checks the generation at most every ``interval`` seconds.

    One thread at a time refreshes, and no lock is held while it talks to the database: the others
    keep serving the last snapshot meanwhile, so a slow or silent database costs one request its
    deadline instead of stalling every thread of the worker behind a lock. Only before the first
    snapshot is loaded do other threads wait for it, at most ``wait_timeout`` seconds, then 503.
    A refresh that fails leaves the last snapshot in place and the next request tries again.
    """

    def __init__(self, db: Database, pepper: bytes, interval: float, *, wait_timeout: float = 5.0) -> None:
        self._db = db
        self._pepper = pepper
        self._interval = interval
        self._wait_timeout = wait_timeout
        self._cv = threading.Condition()
        self._refreshing = False  #: a thread is talking to the database; guarded by _cv
        self._snapshot: Snapshot | None = None
        self._checked_at = -1e18

    def _fresh(self) -> Snapshot | None:
        snap = self._snapshot
        if snap is not None and clock.monotonic() - self._checked_at < self._interval:
            return snap
        return None

    def get(self) -> Snapshot:
        snap = self._fresh()
        if snap is not None:
            return snap
        with self._cv:
            if self._refreshing:
                if self._snapshot is not None:
                    return self._snapshot  # another thread refreshes: the last snapshot meanwhile
                if not self._cv.wait_for(lambda: self._snapshot is not None or not self._refreshing,
                                         timeout=self._wait_timeout) or self._snapshot is None:
                    raise TemporarilyUnavailable("The issuer's database is unavailable.")
                return self._snapshot
            snap = self._fresh()
            if snap is not None:
                return snap
            self._refreshing = True
        try:
            return self._refresh()
        finally:
            with self._cv:
                self._refreshing = False
                self._cv.notify_all()

    def _refresh(self) -> Snapshot:
        """Outside any lock: only the flag above keeps a second thread from refreshing at the same time."""
        snap = self._snapshot
        try:
            with self._db.session() as s:
                gen = _generation(s)
            if snap is None or gen != snap.generation:
                snap = load_snapshot(self._db, self._pepper)
                self._snapshot = snap
        except SQLAlchemyError as e:
            raise TemporarilyUnavailable("The issuer's database is unavailable.") from e
        self._checked_at = clock.monotonic()
        return snap

    def invalidate(self) -> None:
        self._checked_at = -1e18


# --------------------------------------------------------------------------- identity providers


def add_idp(
    db: Database,
    *,
    name: str,
    issuer: str,
    jwks_uri: str | None = None,
    jwks: Mapping[str, Any] | None = None,
    algorithms: Sequence[str] = ("RS256", "ES256"),
    subject_claim: str = "sub",
    groups_claim: str = "groups",
    attribute_claims: Sequence[str] = (),
    namespace: str | None = None,
    allow_insecure_loopback: bool = False,
    discover: bool = True,
    http_timeout: float = 3.0,
    changes: ChangeRecorder | None = None,
) -> TrustedIdp:
    check_name("name", name)
    check_issuer_url("issuer", issuer)
    namespace = check_name("namespace", namespace or name)
    if ":" in namespace:
        raise ConfigurationError("namespace: must not contain ':' (it separates namespace and subject)")
    algs = _check_algorithms(algorithms)
    if jwks_uri and jwks:
        raise ConfigurationError("give either --jwks-uri or --jwks-file, not both")
    inline = check_public_jwks("jwks", jwks) if jwks is not None else None
    if inline is None:
        if jwks_uri:
            check_fetch_url(jwks_uri, allow_insecure_loopback)
        elif discover:
            jwks_uri = discover_jwks_uri(issuer, allow_insecure_loopback=allow_insecure_loopback, timeout=http_timeout)
        else:
            raise ConfigurationError("a JWKS is required: --jwks-uri, --jwks-file, or discovery")
    _check_claim_names(subject_claim, groups_claim)
    row = IdentityProvider(
        name=name,
        issuer=issuer,
        namespace=namespace,
        jwks_uri=jwks_uri if inline is None else None,
        jwks=inline,
        algorithms=list(algs),
        subject_claim=subject_claim,
        groups_claim=groups_claim,
        attribute_claims=list(dict.fromkeys(attribute_claims)),
        enabled=True,
        created_at=_now(),
    )
    view = _idp_view(row)
    _insert(db, row, f"identity provider {name!r}: name, issuer or namespace already registered",
            _recorder(changes, "idp.add", name, None, idp_dict(view)))
    return view


def list_idps(db: Database) -> list[TrustedIdp]:
    with db.session() as s:
        return [_idp_view(r) for r in s.scalars(select(IdentityProvider).order_by(IdentityProvider.name))]


def get_idp(db: Database, name: str) -> TrustedIdp:
    with db.session() as s:
        row = s.scalars(select(IdentityProvider).where(IdentityProvider.name == name)).first()
        if row is None:
            raise UnknownObject(f"no identity provider named {name!r}")
        return _idp_view(row)


def _check_algorithms(algorithms: Sequence[str]) -> tuple[str, ...]:
    algs = tuple(dict.fromkeys(algorithms))
    if not algs:
        raise ConfigurationError("algorithms: at least one is required")
    bad = [a for a in algs if a not in ASYMMETRIC_ALGORITHMS]
    if bad:
        raise ConfigurationError(
            f"algorithms: {bad} not allowed; asymmetric only: {sorted(ASYMMETRIC_ALGORITHMS)}"
        )
    return algs


def _check_claim_names(subject_claim: str, groups_claim: str) -> None:
    for f, v in (("subject-claim", subject_claim), ("groups-claim", groups_claim)):
        if not v or not isinstance(v, str) or len(v) > 100:
            raise ConfigurationError(f"{f}: must be a claim name")


def _idp_row(s: Session, name: str) -> IdentityProvider:
    row = s.scalars(select(IdentityProvider).where(IdentityProvider.name == name).with_for_update()).first()
    if row is None:
        raise UnknownObject(f"no identity provider named {name!r}")
    return row


def update_idp(
    db: Database, name: str, *, jwks_uri: str | None = None, jwks: Mapping[str, Any] | None = None,
    algorithms: Sequence[str] | None = None, subject_claim: str | None = None, groups_claim: str | None = None,
    attribute_claims: Sequence[str] | None = None, allow_insecure_loopback: bool = False,
    changes: ChangeRecorder | None = None,
) -> TrustedIdp:
    """Change how a provider's tokens are checked; None leaves a field as it is.

    The name, issuer and namespace stay: subjects already in capabilities and
    in the audit trail carry the namespace, and a new issuer is a new provider.
    The checks are :func:`add_idp`'s, so the same input gets the same message.
    """
    if jwks_uri and jwks:
        raise ConfigurationError("give either --jwks-uri or --jwks-file, not both")
    algs = _check_algorithms(algorithms) if algorithms is not None else None
    inline = check_public_jwks("jwks", jwks) if jwks is not None else None
    if jwks_uri:
        check_fetch_url(jwks_uri, allow_insecure_loopback)
    with db.session() as s:
        row = _idp_row(s, name)
        before = idp_dict(_idp_view(row))
        _check_claim_names(row.subject_claim if subject_claim is None else subject_claim,
                           row.groups_claim if groups_claim is None else groups_claim)
        if inline is not None:
            row.jwks, row.jwks_uri = inline, None
        elif jwks_uri:
            row.jwks, row.jwks_uri = None, jwks_uri
        if algs is not None:
            row.algorithms = list(algs)
        if subject_claim is not None:
            row.subject_claim = subject_claim
        if groups_claim is not None:
            row.groups_claim = groups_claim
        if attribute_claims is not None:
            row.attribute_claims = list(dict.fromkeys(attribute_claims))
        view = _idp_view(row)
        if idp_dict(view) != before:
            _bump(s)
            if changes:
                changes(s, "idp.update", name, before, idp_dict(view))
        return view


def set_idp_enabled(db: Database, name: str, enabled: bool, *, changes: ChangeRecorder | None = None) -> TrustedIdp:
    """A disabled provider's tokens are refused on every replica within one refresh interval; it stays
    registered so its namespace keeps naming the same users when it comes back."""
    with db.session() as s:
        row = _idp_row(s, name)
        _set(s, row, "enabled", enabled, "idp.enable" if enabled else "idp.disable", name, changes)
        return _idp_view(row)


# --------------------------------------------------------------------------- tools


def add_tool(
    db: Database, *, name: str, resource_uri: str, scopes: Sequence[ScopeSpec], description: str = "",
    rate_limit: str | None = None,
    redact_arguments: Sequence[str] = (),
    hash_arguments: Sequence[str] = (),
    changes: ChangeRecorder | None = None,
) -> ToolView:
    check_name("name", name)
    check_resource_uri("resource", resource_uri)
    if rate_limit is not None:
        parse_limits("rate-limit", rate_limit)
    _check_audit_arguments(redact_arguments, hash_arguments)
    if not scopes:
        raise ConfigurationError("scopes: a tool needs at least one scope")
    _check_scopes(scopes)
    row = Tool(name=name, resource_uri=resource_uri, description=description, status="active",
               rate_limit=rate_limit, redact_arguments=list(dict.fromkeys(redact_arguments)) or None,
               hash_arguments=list(dict.fromkeys(hash_arguments)) or None, created_at=_now())
    row.scopes = [ToolScope(name=s.name, description=s.description, actions=list(s.actions)) for s in scopes]
    view = _tool_view(row)
    _insert(db, row, f"tool {name!r}: name or resource URI already registered",
            _recorder(changes, "tool.add", name, None, view.to_dict()))
    return view


def list_tools(db: Database) -> list[ToolView]:
    with db.session() as s:
        rows = s.scalars(select(Tool).options(selectinload(Tool.scopes)).order_by(Tool.name))
        return [_tool_view(r) for r in rows]


def get_tool(db: Database, name: str) -> ToolView:
    with db.session() as s:
        row = s.scalars(select(Tool).options(selectinload(Tool.scopes)).where(Tool.name == name)).first()
        if row is None:
            raise UnknownObject(f"no tool named {name!r}")
        return _tool_view(row)


def _check_scopes(scopes: Sequence[ScopeSpec], existing: frozenset[str] = frozenset()) -> None:
    seen = set(existing)
    for sc in scopes:
        if not sc.name or len(sc.name) > 200 or any(c.isspace() or c in '"\\' for c in sc.name):
            raise ConfigurationError(f"scope: {sc.name!r} is not a valid scope token (RFC 6749 section 3.3)")
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in sc.name):
            raise ConfigurationError(f"scope: {sc.name!r} must be printable ASCII")
        if sc.name in existing:
            raise ConfigurationError(f"scope: {sc.name!r} is already defined")
        if sc.name in seen:
            raise ConfigurationError(f"scope: {sc.name!r} given twice")
        seen.add(sc.name)


def _check_audit_arguments(redact_arguments: Sequence[str], hash_arguments: Sequence[str]) -> None:
    for flag, names in (("redact-argument", redact_arguments), ("hash-argument", hash_arguments)):
        for arg in names:
            if not arg or len(arg) > 200 or any(not part for part in arg.split(".")):
                raise ConfigurationError(f"{flag}: {arg!r} is not an argument name (dotted for nested ones)")
    if set(redact_arguments) & set(hash_arguments):
        raise ConfigurationError("an argument is either redacted or hashed, not both")


def _tool_row(s: Session, name: str) -> Tool:
    row = s.scalars(select(Tool).options(selectinload(Tool.scopes)).where(Tool.name == name)
                    .with_for_update()).first()
    if row is None:
        raise UnknownObject(f"no tool named {name!r}")
    return row


def update_tool(
    db: Database, name: str, *, description: str | None = None, rate_limit: str | None = None,
    redact_arguments: Sequence[str] | None = None, hash_arguments: Sequence[str] | None = None,
    add_scopes: Sequence[ScopeSpec] = (), changes: ChangeRecorder | None = None,
) -> ToolView:
    """Change a tool's description, rate limit or audit redaction, or give it more scopes; None leaves a
    field as it is.

    An empty ``rate_limit`` removes the tool's own limit (the default applies
    again). The name, resource URI and existing scopes stay: policy versions
    and capabilities already out name them. A new scope is reachable by
    nobody until policy grants it, like a new tool.
    """
    if description is not None and len(description) > 1000:
        raise ConfigurationError("description: at most 1000 characters")
    if rate_limit:
        parse_limits("rate-limit", rate_limit)
    with db.session() as s:
        row = _tool_row(s, name)
        before = _tool_view(row).to_dict()
        redact = list(redact_arguments) if redact_arguments is not None else list(row.redact_arguments or ())
        hashed = list(hash_arguments) if hash_arguments is not None else list(row.hash_arguments or ())
        _check_audit_arguments(redact, hashed)
        _check_scopes(add_scopes, frozenset(s.name for s in row.scopes))
        row.scopes.extend(ToolScope(name=s.name, description=s.description, actions=list(s.actions))
                          for s in add_scopes)
        if description is not None:
            row.description = description
        if rate_limit is not None:
            row.rate_limit = rate_limit or None
        row.redact_arguments = list(dict.fromkeys(redact)) or None
        row.hash_arguments = list(dict.fromkeys(hashed)) or None
        view = _tool_view(row)
        if view.to_dict() != before:
            _bump(s)
            if changes:
                changes(s, "tool.update", name, before, view.to_dict())
        return view


def set_tool_enabled(db: Database, name: str, enabled: bool, *, changes: ChangeRecorder | None = None) -> ToolView:
    """A disabled tool is reachable by nobody, whatever policy says (capabilities already out expire on their
    own); it stays registered so policy versions that name it stay valid."""
    status = "active" if enabled else "disabled"
    with db.session() as s:
        row = _tool_row(s, name)
        _set(s, row, "status", status, "tool.enable" if enabled else "tool.disable", name, changes)
        return _tool_view(row)


# --------------------------------------------------------------------------- clients


def add_client(
    db: Database,
    *,
    client_id: str,
    resource_uri: str,
    tools: Sequence[str],
    pepper: bytes,
    auth_methods: Sequence[str] = ("client_secret_basic", "client_secret_post"),
    jwks: Mapping[str, Any] | None = None,
    max_lifetime: int | None = None,
    may_chain: bool = False,
    secret: str | None = None,
    name: str = "",
    rate_limit: str | None = None,
    dpop_required: bool = False,
    changes: ChangeRecorder | None = None,
) -> tuple[ClientView, str | None]:
    """Register a client. Returns the view and the secret, which is shown once and never stored."""
    check_name("client_id", client_id)
    check_resource_uri("resource", resource_uri)
    methods = tuple(dict.fromkeys(auth_methods))
    if not methods or any(m not in AUTH_METHODS for m in methods):
        raise ConfigurationError(f"auth-method: choose from {list(AUTH_METHODS)}")
    uses_secret = any(m.startswith("client_secret_") for m in methods)
    if "private_key_jwt" in methods:
        if jwks is None:
            raise ConfigurationError("private_key_jwt needs the client's public keys: --jwks-file")
        jwks = check_public_jwks("jwks", jwks)
    elif jwks is not None:
        raise ConfigurationError("--jwks-file is only for private_key_jwt clients")
    if secret is not None:
        if not uses_secret:
            raise ConfigurationError("a secret is only for client_secret_basic/post clients")
        if len(secret) < MIN_IMPORTED_SECRET_LENGTH:
            raise ConfigurationError(
                f"secret: an imported secret needs at least {MIN_IMPORTED_SECRET_LENGTH} characters"
            )
    elif uses_secret:
        secret = generate_secret()
    if rate_limit is not None:
        parse_limits("rate-limit", rate_limit)
    if max_lifetime is not None and not 10 <= max_lifetime <= 900:
        raise ConfigurationError("max-lifetime: between 10 and 900 seconds")
    with db.session() as s:
        tool_rows = {t.name: t for t in s.scalars(select(Tool).where(Tool.name.in_(list(tools))))}
        missing = [t for t in tools if t not in tool_rows]
        if missing:
            raise ConfigurationError(f"tools: unknown tool(s) {missing}; register them with `issuer tool add`")
    row = Client(
        client_id=client_id,
        name=name,
        secret_hash=hash_secret(pepper, secret) if secret else None,
        auth_methods=list(methods),
        jwks=dict(jwks) if jwks else None,
        resource_uri=resource_uri,
        max_lifetime=max_lifetime,
        may_chain=may_chain,
        enabled=True,
        rate_limit=rate_limit,
        dpop_required=dpop_required,
        created_at=_now(),
    )
    row.tools = [ClientTool(tool_id=tool_rows[t].id, tool=tool_rows[t]) for t in dict.fromkeys(tools)]
    view = _client_view(row, pepper)
    _insert(db, row, f"client {client_id!r}: client_id or resource URI already registered",
            _recorder(changes, "client.add", client_id, None, view.to_dict()))
    return view, secret


def list_clients(db: Database) -> list[ClientView]:
    with db.session() as s:
        rows = s.scalars(
            select(Client).options(selectinload(Client.tools).selectinload(ClientTool.tool)).order_by(Client.client_id)
        )
        return [_client_view(r, b"") for r in rows]


def _client_row(s: Session, client_id: str) -> Client:
    row = s.scalars(
        select(Client).options(selectinload(Client.tools).selectinload(ClientTool.tool))
        .where(Client.client_id == client_id).with_for_update()
    ).first()
    if row is None:
        raise UnknownObject(f"no client {client_id!r}")
    return row


def get_client(db: Database, client_id: str) -> ClientView:
    with db.session() as s:
        return _client_view(_client_row(s, client_id), b"")


def rotate_client_secret(db: Database, client_id: str, *, pepper: bytes,
                         changes: ChangeRecorder | None = None) -> str:
    """A fresh secret replaces the old one at once (every replica within one refresh interval).

    Returned once and never stored; the old secret stops working, so a leaked
    secret is cut off by one call.
    """
    secret = generate_secret()
    with db.session() as s:
        row = _client_row(s, client_id)
        if not any(m.startswith("client_secret_") for m in row.auth_methods):
            raise ConfigurationError(f"client {client_id!r} authenticates with private_key_jwt; it has no secret")
        row.secret_hash = hash_secret(pepper, secret)
        _bump(s)
        if changes:
            changes(s, "client.rotate_secret", client_id, {"secret": "previous"}, {"secret": "rotated"})
    return secret


def set_client_enabled(db: Database, client_id: str, enabled: bool, *,
                       changes: ChangeRecorder | None = None) -> ClientView:
    """A disabled client fails authentication everywhere (its capabilities already out expire on their own)."""
    with db.session() as s:
        row = _client_row(s, client_id)
        _set(s, row, "enabled", enabled, "client.enable" if enabled else "client.disable", client_id, changes)
        return _client_view(row, b"")


def set_client_dpop_required(db: Database, client_id: str, required: bool, *,
                             changes: ChangeRecorder | None = None) -> ClientView:
    """From the next refresh on, this client's exchanges without a DPoP proof are refused; capabilities
    already issued as bearer tokens stay valid until they expire (revoke the client to end them now)."""
    with db.session() as s:
        row = _client_row(s, client_id)
        _set(s, row, "dpop_required", required, "client.dpop_required", client_id, changes)
        return _client_view(row, b"")


# --------------------------------------------------------------------------- policy


def apply_policy(db: Database, text: str, *, source: str, created_by: str,
                 changes: ChangeRecorder | None = None) -> int:
    """Validate a policy document against the registry and store it as the next version."""
    doc = parse_policy(text, source)
    with db.session() as s:
        tool_rows = list(s.scalars(select(Tool).options(selectinload(Tool.scopes))))
        tools = {t.name: frozenset(sc.name for sc in t.scopes) for t in tool_rows}
        actions = {t.name: {sc.name: frozenset(sc.actions or ()) for sc in t.scopes} for t in tool_rows}
        clients = frozenset(s.scalars(select(Client.client_id)))
        idp_rows = list(s.scalars(select(IdentityProvider)))
        validate_references(
            doc, tools=tools, clients=clients, idps=frozenset(i.name for i in idp_rows), tool_actions=actions,
            idp_claims={i.name: frozenset(i.attribute_claims or ()) for i in idp_rows},
        )
        # Serialise concurrent applies on the config row, so versions stay monotonic without gaps.
        s.execute(select(ConfigState).where(ConfigState.id == 1).with_for_update())
        previous = int(s.execute(select(func.coalesce(func.max(PolicyVersion.version), 0))).scalar_one())
        version = previous + 1
        s.add(
            PolicyVersion(
                version=version,
                document=text,
                canonical=canonical_json(doc),
                created_by=created_by,
                created_at=_now(),
            )
        )
        _bump(s)
        if changes:
            changes(s, "policy.apply", f"policy version {version}", {"version": previous or None},
                    {"version": version, "source": source[:200]})
    return version


def show_policy(db: Database, version: int | None = None) -> PolicyVersion | None:
    with db.session() as s:
        q = select(PolicyVersion)
        if version is not None:
            q = q.where(PolicyVersion.version == version)
        else:
            q = q.order_by(PolicyVersion.version.desc())
        return s.scalars(q.limit(1)).first()


def list_policy_versions(db: Database) -> list[tuple[int, str, datetime]]:
    """(version, applied by, applied at), newest first."""
    with db.session() as s:
        rows = s.execute(select(PolicyVersion.version, PolicyVersion.created_by, PolicyVersion.created_at)
                         .order_by(PolicyVersion.version.desc()))
        return [(int(v), str(by), at) for v, by, at in rows]


def diff_policy(db: Database, old: int, new: int) -> str:
    """A unified diff of two versions as applied (the text an admin wrote, comments included)."""
    docs = {}
    for version in (old, new):
        row = show_policy(db, version)
        if row is None:
            raise UnknownObject(f"no policy version {version}")
        docs[version] = row.document
    return "".join(difflib.unified_diff(
        docs[old].splitlines(keepends=True), docs[new].splitlines(keepends=True),
        fromfile=f"policy version {old}", tofile=f"policy version {new}",
    ))


# --------------------------------------------------------------------------- helpers


def _recorder(changes: ChangeRecorder | None, action: str, target: str, before: Mapping[str, Any] | None,
              after: Mapping[str, Any] | None) -> Callable[[Session], None] | None:
    if changes is None:
        return None
    return lambda s: changes(s, action, target, before, after)


def _insert(db: Database, row: Any, conflict: str, record: Callable[[Session], None] | None) -> None:
    try:
        with db.session() as s:
            s.add(row)
            s.flush()  # a duplicate fails here, before the change is recorded
            _bump(s)
            if record:
                record(s)
    except IntegrityError:
        raise AlreadyExists(conflict) from None
