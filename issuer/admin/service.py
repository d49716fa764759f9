"""Every admin operation, once: the CLI and the admin API are two faces of this class.

Each method validates its input (through :mod:`issuer.registry` and friends),
does the work, records the change in the admin change log, and returns
JSON-ready data. Input errors are :class:`~issuer.errors.ConfigurationError`
(:class:`~issuer.errors.UnknownObject` and :class:`~issuer.errors.AlreadyExists`
for 404 and 409); the faces only translate them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from .. import clock, registry
from ..audit import audit_row_dict, query_audit
from ..audit_chain import AuditSealer, verify_audit
from ..db import Database
from ..errors import ConfigurationError, UnknownObject
from ..keys import JWKS_MAX_AGE, KeyStore
from ..models import AdminChange
from ..revocation import RevocationList
from ..settings import Settings
from . import credentials
from .changes import ChangeLog, change_dict, verify_changes
from .overview import VERIFY_INLINE_UP_TO, Window, decision_counts, readiness, rotation_state, trail_size

__all__ = ["AUDIT_FILTERS", "AdminService", "parse_time"]

#: Filters of the audit trail, in the CLI and the API alike.
AUDIT_FILTERS = ("sub", "client_id", "tool", "decision", "reason", "txn")


def parse_time(value: str | None, name: str) -> datetime | None:
    """A time filter as people type it (CLI and API alike)."""
    if value is None:
        return None
    try:
        return clock.parse_iso(value)
    except ValueError:
        raise ConfigurationError(
            f"{name}: {value[:40]!r} is not an ISO 8601 time such as 2026-11-25T10:00:00Z") from None


def _scope_specs(scopes: Sequence[Mapping[str, Any]]) -> list[registry.ScopeSpec]:
    return [registry.ScopeSpec(str(sc["name"]), str(sc.get("description", "")), tuple(sc.get("actions", ())))
            for sc in scopes]


class AdminService:
    def __init__(self, db: Database, keys: KeyStore, settings: Settings, *, actor: str,
                 request_id: str | None = None) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self.actor = actor
        self.changes = ChangeLog(keys.pepper, actor, request_id)

    # ------------------------------------------------------------------ identity providers
    def add_idp(self, *, name: str, issuer: str, jwks_uri: str | None = None, jwks: Mapping[str, Any] | None = None,
                algorithms: Sequence[str] = ("RS256", "ES256"), subject_claim: str = "sub",
                groups_claim: str = "groups", attribute_claims: Sequence[str] = (),
                namespace: str | None = None) -> dict[str, Any]:
        view = registry.add_idp(
            self.db, name=name, issuer=issuer, jwks_uri=jwks_uri, jwks=jwks, algorithms=algorithms,
            subject_claim=subject_claim, groups_claim=groups_claim, attribute_claims=attribute_claims,
            namespace=namespace, allow_insecure_loopback=self.settings.allow_insecure_loopback,
            http_timeout=self.settings.http_timeout, changes=self.changes,
        )
        return registry.idp_dict(view)

    def list_idps(self) -> list[dict[str, Any]]:
        return [registry.idp_dict(i) for i in registry.list_idps(self.db)]

    def get_idp(self, name: str) -> dict[str, Any]:
        return registry.idp_dict(registry.get_idp(self.db, name))

    def update_idp(self, name: str, *, jwks_uri: str | None = None, jwks: Mapping[str, Any] | None = None,
                   algorithms: Sequence[str] | None = None, subject_claim: str | None = None,
                   groups_claim: str | None = None, attribute_claims: Sequence[str] | None = None) -> dict[str, Any]:
        view = registry.update_idp(
            self.db, name, jwks_uri=jwks_uri, jwks=jwks, algorithms=algorithms, subject_claim=subject_claim,
            groups_claim=groups_claim, attribute_claims=attribute_claims,
            allow_insecure_loopback=self.settings.allow_insecure_loopback, changes=self.changes,
        )
        return registry.idp_dict(view)

    def set_idp_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        return registry.idp_dict(registry.set_idp_enabled(self.db, name, enabled, changes=self.changes))

    # ------------------------------------------------------------------ tools
    def add_tool(self, *, name: str, resource_uri: str, scopes: Sequence[Mapping[str, Any]], description: str = "",
                 rate_limit: str | None = None, redact_arguments: Sequence[str] = (),
                 hash_arguments: Sequence[str] = ()) -> dict[str, Any]:
        view = registry.add_tool(self.db, name=name, resource_uri=resource_uri, scopes=_scope_specs(scopes),
                                 description=description, rate_limit=rate_limit, redact_arguments=redact_arguments,
                                 hash_arguments=hash_arguments, changes=self.changes)
        return view.to_dict()

    def list_tools(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in registry.list_tools(self.db)]

    def get_tool(self, name: str) -> dict[str, Any]:
        return registry.get_tool(self.db, name).to_dict()

    def update_tool(self, name: str, *, description: str | None = None, rate_limit: str | None = None,
                    redact_arguments: Sequence[str] | None = None, hash_arguments: Sequence[str] | None = None,
                    add_scopes: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """None leaves a field as it is; an empty rate limit removes the tool's own; scopes are only added."""
        return registry.update_tool(self.db, name, description=description, rate_limit=rate_limit,
                                    redact_arguments=redact_arguments, hash_arguments=hash_arguments,
                                    add_scopes=_scope_specs(add_scopes or ()), changes=self.changes).to_dict()

    def set_tool_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        return registry.set_tool_enabled(self.db, name, enabled, changes=self.changes).to_dict()

    # ------------------------------------------------------------------ clients
    def add_client(self, *, client_id: str, resource_uri: str, tools: Sequence[str] = (),
                   auth_methods: Sequence[str] = ("client_secret_basic", "client_secret_post"),
                   jwks: Mapping[str, Any] | None = None, max_lifetime: int | None = None, may_chain: bool = False,
                   secret: str | None = None, rate_limit: str | None = None,
                   dpop_required: bool = False) -> tuple[dict[str, Any], str | None]:
        """The client, and its secret when one was generated (shown once, never stored)."""
        view, shown = registry.add_client(
            self.db, client_id=client_id, resource_uri=resource_uri, tools=tools, pepper=self.keys.pepper(),
            auth_methods=auth_methods, jwks=jwks, max_lifetime=max_lifetime, may_chain=may_chain, secret=secret,
            rate_limit=rate_limit, dpop_required=dpop_required, changes=self.changes,
        )
        return view.to_dict(), (shown if secret is None else None)

    def list_clients(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in registry.list_clients(self.db)]

    def get_client(self, client_id: str) -> dict[str, Any]:
        return registry.get_client(self.db, client_id).to_dict()

    def rotate_client_secret(self, client_id: str) -> str:
        return registry.rotate_client_secret(self.db, client_id, pepper=self.keys.pepper(), changes=self.changes)

    def set_client_enabled(self, client_id: str, enabled: bool) -> dict[str, Any]:
        return registry.set_client_enabled(self.db, client_id, enabled, changes=self.changes).to_dict()

    def set_client_dpop_required(self, client_id: str, required: bool) -> dict[str, Any]:
        return registry.set_client_dpop_required(self.db, client_id, required, changes=self.changes).to_dict()

    # ------------------------------------------------------------------ policy
    def apply_policy(self, text: str, *, source: str) -> int:
        return registry.apply_policy(self.db, text, source=source, created_by=self.actor, changes=self.changes)

    def show_policy(self, version: int | None = None) -> dict[str, Any]:
        import json

        row = registry.show_policy(self.db, version)
        if row is None:
            raise UnknownObject(f"no policy version {version}" if version is not None
                                else "no policy applied yet (all denied)")
        return {"version": row.version, "applied_by": row.created_by, "applied_at": clock.iso(row.created_at),
                "document": row.document, "policy": json.loads(row.canonical)}

    def list_policy_versions(self) -> list[dict[str, Any]]:
        return [{"version": v, "applied_by": by, "applied_at": clock.iso(at)}
                for v, by, at in registry.list_policy_versions(self.db)]

    def diff_policy(self, old: int, new: int) -> dict[str, Any]:
        return {"from": old, "to": new, "diff": registry.diff_policy(self.db, old, new)}

    def test_policy(self, *, sub: str, client_id: str, tool: str, idp: str | None = None,
                    groups: Sequence[str] = (), claims: Mapping[str, Any] | None = None,
                    scopes: Sequence[str] = (), arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the active policy decides for one request, and which rule decided (no token, no audit row).

        With ``arguments``, also whether one tool call with them would pass the
        filled constraints, checked by the evaluator the verifier SDK uses.
        """
        from ..constraints import evaluate
        from ..exchange import explain

        if not sub.strip():
            raise ConfigurationError("sub: the user's subject is required")
        result = explain(registry.load_snapshot(self.db, self.keys.pepper()), sub=sub, idp=idp, groups=list(groups),
                         attributes=dict(claims or {}), client_id=client_id, tool=tool, scopes=list(scopes) or None)
        decision = result.decision
        granted = decision.granted and result.refusal is None
        # A denied request has no constraints to pass: its arguments are refused with it.
        violations: list[str] = []
        if granted and arguments is not None:
            violations = [str(v) for v in evaluate(result.constraints or {}, dict(arguments))]
        return {
            "decision": "granted" if granted else "denied",
            "reason": str(result.refusal.error) if result.refusal is not None else str(decision.reason),
            "rule": decision.rule_id, "scopes": list(decision.scopes) if granted else [],
            "policy_version": decision.policy_version, "max_lifetime": decision.max_lifetime,
            "actions": list(result.actions), "constraints": result.constraints or {},
            "description": result.refusal.description if result.refusal is not None else decision.description,
            "arguments": None if arguments is None else {"admitted": granted and not violations,
                                                         "violations": violations},
        }

    # ------------------------------------------------------------------ signing keys
    def list_keys(self) -> list[dict[str, Any]]:
        return [{"kid": k.kid, "alg": k.alg, "state": k.state, "created_at": clock.iso(k.created_at),
                 "activated_at": clock.iso(k.activated_at), "retired_at": clock.iso(k.retired_at)}
                for k in self.keys.infos()]

    def rotate_keys(self, alg: str | None = None, *, force: bool = False) -> dict[str, Any]:
        """Start signing with the pre-published next key; refused while caches may not have seen it (unless forced)."""
        if alg is not None and alg not in ("ES256", "EdDSA"):
            raise ConfigurationError("alg: choose from ['ES256', 'EdDSA']")
        before = next((k.kid for k in self.keys.infos() if k.state == "active"), None)
        info = self.keys.rotate(alg, min_published=0 if force else JWKS_MAX_AGE)
        self.changes.record(self.db, "keys.rotate", info.kid, {"active": before},
                            {"active": info.kid, "alg": info.alg, "forced": force})
        return {"active": info.kid, "alg": info.alg, "previous": before,
                "previous_published_for": self.settings.key_retention}

    # ------------------------------------------------------------------ overview
    def overview(self) -> dict[str, Any]:
        """Readiness, policy, keys, the last hour's decisions and the audit chain: one look at the deployment."""
        versions = registry.list_policy_versions(self.db)
        size = trail_size(self.db)
        return {"time": clock.iso(clock.now()), "readiness": readiness(self.db, self.keys, self.settings),
                "policy_version": versions[0][0] if versions else None, "keys": self.list_keys(),
                "rotation": rotation_state(self.keys), "exchanges": decision_counts(self.db, Window()),
                "audit_size": size, "audit": self.verify_audit() if size <= VERIFY_INLINE_UP_TO else None}

    # ------------------------------------------------------------------ audit
    def query_audit(self, filters: Mapping[str, str | None] | None = None, *, since: datetime | None = None,
                    until: datetime | None = None, after_id: int = 0, limit: int = 100,
                    newest_first: bool = False) -> list[dict[str, Any]]:
        """``filters`` maps names of :data:`AUDIT_FILTERS` to exact values (None = any)."""
        filters = dict(filters or {})
        unknown = set(filters) - set(AUDIT_FILTERS)
        if unknown:
            raise ConfigurationError(f"unknown audit filter(s) {sorted(unknown)}")
        if not 1 <= limit <= 1000:
            raise ConfigurationError("limit: between 1 and 1000")
        rows = query_audit(self.db, **{f: filters.get(f) for f in AUDIT_FILTERS}, since=since, until=until,
                           after_id=after_id, limit=limit, newest_first=newest_first)
        return [audit_row_dict(r) for r in rows]

    def export_audit(self, filters: Mapping[str, str | None] | None = None, *, since: datetime | None = None,
                     until: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every matching record, oldest first, read in pages so memory stays flat."""
        after = 0
        while page := self.query_audit(filters, since=since, until=until, after_id=after, limit=1000):
            yield from page
            after = page[-1]["id"]

    def verify_audit(self) -> dict[str, Any]:
        result = verify_audit(self.db, self.keys.pepper())
        changes, problem = verify_changes(self.db, self.keys.pepper())
        return {"ok": result.ok and problem is None, "problem": result.problem or problem, "rows": result.rows,
                "sealed": result.sealed, "checkpoints": result.checkpoints, "admin_changes": changes,
                "head": {"id": result.head[0], "chain": result.head[1]} if result.head else None}

    def seal_audit(self) -> int:
        return AuditSealer(self.db, self.keys.pepper()).seal_all()

    def list_changes(self, *, after_id: int = 0, limit: int = 100, newest_first: bool = False) -> list[dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise ConfigurationError("limit: between 1 and 1000")
        q = select(AdminChange).where(AdminChange.id > after_id)
        q = q.order_by(AdminChange.id.desc() if newest_first else AdminChange.id).limit(limit)
        with self.db.session() as s:
            return [change_dict(r) for r in s.scalars(q)]

    # ------------------------------------------------------------------ revocation
    def revoke_jti(self, jti: str) -> dict[str, Any]:
        """The capability and every capability chained from it, however deep."""
        revoked = RevocationList(self.db).revoke_jti(jti, self.actor[:100])
        if revoked is None:
            raise UnknownObject(f"no capability with jti {jti!r} was issued (see the audit trail)")
        chained = [j for j in revoked if j != jti]
        self.changes.record(self.db, "revoke.jti", jti, None, {"revoked": True, "chained": chained})
        return {"jti": jti, "revoked": True, "chained": chained}

    def revoke_client(self, client_id: str) -> dict[str, Any]:
        """Every capability issued until now with this client anywhere in its ``act`` chain (a compromised
        MCP server). The client itself stays enabled: disable it too to stop new exchanges."""
        registry.get_client(self.db, client_id)  # an unknown client is a typo, not a revocation
        RevocationList(self.db).revoke_client(client_id, self.actor[:100])
        self.changes.record(self.db, "revoke.client", client_id, None,
                            {"revoked_before": clock.iso(int(clock.now()))})
        return {"client_id": client_id, "revoked": True}

    def count_live(self, *, jti: str | None = None, sub: str | None = None, client_id: str | None = None) -> int:
        """How many live capabilities a revocation would void (for a confirmation before it)."""
        if sum(v is not None for v in (jti, sub, client_id)) != 1:
            raise ConfigurationError("give exactly one of jti, sub, client_id")
        return RevocationList(self.db).count_live(jti=jti, sub=sub, client_id=client_id)

    def revoke_subject(self, sub: str) -> dict[str, Any]:
        """SUB as capabilities carry it (NAMESPACE:SUB); every capability issued until now is void."""
        namespace, sep, raw = sub.partition(":")
        namespaces = sorted(i.namespace for i in registry.list_idps(self.db))
        if not sep or not raw or namespace not in namespaces or len(sub) > 400:
            raise ConfigurationError(
                f"{sub[:100]!r}: give the subject as capabilities carry it, NAMESPACE:SUB, "
                f"with a namespace of {namespaces}"
            )
        RevocationList(self.db).revoke_subject(sub, self.actor[:100])
        self.changes.record(self.db, "revoke.subject", sub, None, {"revoked_before": clock.iso(int(clock.now()))})
        return {"sub": sub, "revoked": True}

    # ------------------------------------------------------------------ admin keys
    def create_admin_key(self, *, name: str, role: str) -> tuple[dict[str, object], str]:
        return credentials.create_key(self.db, self.keys.pepper(), name=name, role=role, created_by=self.actor,
                                      changes=self.changes)

    def list_admin_keys(self) -> list[dict[str, object]]:
        return credentials.list_keys(self.db)

    def revoke_admin_key(self, key_id: str) -> dict[str, object]:
        return credentials.revoke_key(self.db, key_id, changes=self.changes)
