"""The token-exchange decision: who is asking, for whom, for what; then mint.

This module is the issuer's policy point and knows nothing of HTTP or Authlib:
the RFC 8693 grant (:mod:`issuer.oauth.rfc8693`) parses and authenticates,
then hands an :class:`ExchangeRequest` and the authenticated client here.

Order of checks (each failure is a typed error, audited, and changes nothing):
subject token (and actor token) -> target tool -> client's tool allowlist ->
policy (default deny) -> lifetime -> sign -> audit commit -> response.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from limits import RateLimitItem

from . import clock
from .audit import AuditRecord, AuditWriter
from .errors import (
    ConfigurationError,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    IssuerError,
    RateLimited,
    TemporarilyUnavailable,
)
from .grant_details import (
    RequestedDetail,
    allowed_actions,
    grant_details,
    narrow_to_presented,
    policy_constraints,
)
from .identity.jwks import JwksCache
from .identity.types import ASYMMETRIC_ALGORITHMS, TrustedIdp, VerifiedSubject
from .identity.verify import VerifiedTokenCache, peek_issuer, verify_token
from .keys import KeyStore
from .minting import (
    ACCESS_TOKEN_TYPE,
    CAPABILITY_TYP,
    Capability,
    actor_claim,
    build_claims,
    chain_depth,
    new_txn,
    sign,
)
from .policy import Decision, Principal, Reason
from .ratelimit import RateLimiter, parse_limits
from .registry import ClientView, Snapshot, SnapshotCache, ToolView
from .revocation import RevocationList
from .settings import Settings

__all__ = ["SUBJECT_TOKEN_TYPES", "ExchangeRequest", "Exchanger", "Explanation", "decide", "explain"]

log = logging.getLogger(__name__)

JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
SUBJECT_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE})
_SELF = "__self__"
#: One answer for an unknown tool and one this user or client may not reach: no probing for tool names.
UNREACHABLE = "the requested target is unknown or not reachable for this user through this client"


@dataclass(frozen=True)
class ExchangeRequest:
    subject_token: str
    subject_token_type: str
    resource: str | None = None
    audience: str | None = None
    scopes: tuple[str, ...] | None = None
    actor_token: str | None = None
    actor_token_type: str | None = None
    details: RequestedDetail | None = None
    request_id: str = ""
    client_addr: str | None = None
    #: thumbprint of the key of a valid DPoP proof sent with the request: the capability is bound to it
    dpop_jkt: str | None = None
    #: the caller's id for the agent action (e.g. the MCP request id); one is made when absent
    txn: str | None = None


class _Keys:
    """Resolves verification keys: our own KeyStore for chained capabilities, the JWKS cache otherwise."""

    def __init__(self, own: KeyStore, remote: JwksCache) -> None:
        self._own = own
        self._remote = remote

    def key_for(self, idp: TrustedIdp, kid: str | None, alg: str) -> jwt.PyJWK:
        if idp.name != _SELF:
            return self._remote.key_for(idp, kid, alg)
        if not kid:
            raise InvalidGrant("subject_token: capability without kid")
        jwks = self._own.jwks()
        for k in jwks["keys"]:
            if k["kid"] == kid:
                if k.get("alg") != alg:
                    raise InvalidGrant("subject_token: algorithm does not match the key")
                return jwt.PyJWK(k, algorithm=alg)
        raise InvalidGrant("subject_token: unknown key id")


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


class Exchanger:
    def __init__(
        self, settings: Settings, snapshots: SnapshotCache, keys: KeyStore, jwks: JwksCache, audit: AuditWriter,
        revocations: RevocationList, limiter: RateLimiter,
    ) -> None:
        self.revocations = revocations
        self.limiter = limiter
        self._default_limits = parse_limits("ISSUER_RATE_LIMIT", settings.rate_limit)
        self.settings = settings
        self.snapshots = snapshots
        self.keys = keys
        self.audit = audit
        self._resolver = _Keys(keys, jwks)
        #: subject tokens of trusted providers already verified (capabilities we minted are never cached)
        self.verified = VerifiedTokenCache()
        self._self_idp = TrustedIdp(
            name=_SELF, issuer=settings.url, namespace=_SELF, algorithms=("ES256", "EdDSA"), groups_claim="groups"
        )

    def exchange(self, client: ClientView, req: ExchangeRequest) -> Capability:
        """Decide, mint and record: each outcome's row is written before the caller sees it; when it cannot be,
        ``commit_grant`` or ``record_denial`` raises TemporarilyUnavailable, which replaces the answer (503)."""
        started = clock.now()
        now = int(started)
        record = AuditRecord(
            time=started, request_id=req.request_id, decision="denied", reason="invalid_request",
            client_id=client.client_id, actor={"sub": client.client_id}, client_addr=req.client_addr,
            requested_scopes=" ".join(req.scopes) if req.scopes is not None else None,
        )
        try:
            return self._exchange(client, req, now, record)
        except TemporarilyUnavailable:
            raise
        except IssuerError as e:
            record.reason = record.reason if record.reason != "invalid_request" else str(e.error)
            self.audit.record_denial(record)
            raise

    def _exchange(self, client: ClientView, req: ExchangeRequest, now: int, record: AuditRecord) -> Capability:
        snapshot = self.snapshots.get()
        if client.rate_limit:
            self._spend(record, _limits(client.rate_limit), "client", client.client_id)
        subject, ceiling = self._verify_subject(snapshot, client, req)
        record.idp, record.sub = subject.idp, subject.principal
        bound = subject.claims.get("cnf")
        if bound is not None and subject.claims.get("iss") != self.settings.url:
            # A sender-constrained user token is usable only by the holder of its key: the request's DPoP
            # proof must be made with that key (RFC 9449 section 6.1), or the binding would be lost. A
            # capability we minted is presented by the tool it was for, which received it with a proof
            # and holds no key of the caller's: for a chain, the audience check is the binding.
            jkt = bound.get("jkt") if isinstance(bound, Mapping) else None
            if not isinstance(jkt, str) or req.dpop_jkt is None or not hmac.compare_digest(jkt, req.dpop_jkt):
                record.reason = "dpop_key_mismatch"
                raise InvalidGrant("subject_token is bound to a key: the DPoP proof must be made with it")
        chained = subject.claims.get("iss") == self.settings.url
        txn = req.txn
        if chained:
            record.parent_jti = _str_or_none(subject.claims.get("jti"))
            parent_txn = _str_or_none(subject.claims.get("txn"))
            if txn is not None and parent_txn is not None and txn != parent_txn:
                raise InvalidRequest("txn: a chained capability keeps the txn of the capability it was made from")
            txn = parent_txn or txn
        record.txn = txn = txn or new_txn()
        record.actor = actor_claim(client.client_id, subject.act)
        record.tool = (req.resource or req.audience or "")[:100] or None  # the tool's name once resolved
        if req.actor_token is not None:
            self._verify_actor(snapshot, client, req)
        tool = self._target(snapshot, req)
        record.tool = tool.name
        if req.details is not None:  # what was asked, kept even when refused
            record.authorization_details = self.audit.scrub(
                [_requested_detail(req.details)], tool.redact_arguments, tool.hash_arguments)
        principal = Principal(idp=subject.idp, sub=subject.sub, groups=subject.groups, attributes=subject.attributes)
        decision = decide(snapshot, principal, client, tool, req.scopes)
        record.policy_version, record.rule_id = decision.policy_version, decision.rule_id
        if not decision.granted:
            record.reason = decision.reason
            if decision.reason in (Reason.NO_MATCHING_RULE, Reason.CLIENT_NOT_ALLOWED_TOOL):
                raise InvalidTarget(UNREACHABLE)  # the audit row keeps which of the two it was
            decision.raise_for_denial()
        limits = _limits(decision.rate_limit or tool.rate_limit) or self._default_limits
        self._spend(record, limits, "user", subject.principal, tool.name)
        # A tool re-scoping its own capability (e.g. for a sub-component) may only narrow it.
        chained_to_self = chained and tool.resource_uri == client.resource_uri
        if chained_to_self and not set(decision.scopes) <= subject.scope:
            record.reason = "chain_scope_widened"
            raise InvalidScope("a chained capability may only narrow the presented capability's scopes")
        idp = snapshot.idps_by_name.get(subject.idp)
        constraints = policy_constraints(
            decision, sub=subject.sub, attributes=subject.attributes,
            allowed_claims=idp.attribute_claims if idp else (),
        )
        if chained_to_self:
            constraints = narrow_to_presented(constraints, subject.claims.get("authorization_details"))
        details = grant_details(tool=tool, decision=decision, requested=req.details, constraints=constraints)
        lifetime = min(
            self.settings.token_lifetime,
            client.max_lifetime or self.settings.token_lifetime,
            decision.max_lifetime or self.settings.token_lifetime,
            ceiling - now,
        )
        if lifetime < 1:
            record.reason = "subject_expiring"
            raise InvalidGrant("subject_token: expires too soon to delegate")
        claims = build_claims(
            issuer=self.settings.url,
            principal=subject.principal,
            audience=tool.resource_uri,
            client_id=client.client_id,
            subject_act=subject.act,
            scopes=decision.scopes,
            groups=sorted(subject.groups),
            now=now,
            lifetime=lifetime,
            policy_version=decision.policy_version,
            txn=txn,
            authorization_details=details,
        )
        if req.dpop_jkt is not None:
            claims["cnf"] = {"jkt": req.dpop_jkt}
        token = sign(claims, self.keys.signing_key())
        record.decision, record.reason = "granted", decision.reason
        record.granted_scopes = claims["scope"]
        record.jti, record.expires_at = claims["jti"], claims["exp"]
        record.authorization_details = self.audit.scrub(details, tool.redact_arguments, tool.hash_arguments)
        self.audit.commit_grant(record)
        if chained and self.revocations.is_revoked(subject.claims):
            # The parent was revoked while this exchange ran. Checked after the commit: a revocation
            # either committed before this check (seen here) or walks the chain after it (and finds this
            # row), so no child of a revoked capability is ever released.
            self.revocations.revoke(claims, "cascade")
            record.decision, record.reason, record.jti, record.expires_at = "denied", "parent_revoked", None, None
            raise InvalidGrant("subject_token: the presented capability was revoked")
        return Capability(token=token, claims=claims, expires_in=lifetime)

    def _spend(self, record: AuditRecord, limits: tuple[RateLimitItem, ...], *key: str) -> None:
        limited = self.limiter.hit(limits, *key)
        if limited is not None:
            record.reason = "rate_limited"
            raise RateLimited(f"rate limit {limited.limit} reached for this {key[0]}", retry_after=limited.retry_after)

    # -- subject ------------------------------------------------------------------
    def _verify_subject(
        self, snapshot: Snapshot, client: ClientView, req: ExchangeRequest
    ) -> tuple[VerifiedSubject, int]:
        """Returns the subject and the latest expiry a capability for it may have."""
        chained = peek_issuer(req.subject_token) == self.settings.url
        verified = verify_token(
            req.subject_token,
            idps_by_issuer={self.settings.url: self._self_idp} if chained else snapshot.idps_by_issuer,
            keys=self._resolver,
            audience=client.resource_uri,
            leeway=self.settings.leeway,
            what="subject_token",
            required_typ=CAPABILITY_TYP if chained else None,
            cache=None if chained else self.verified,
        )
        if verified.may_act is not None and verified.may_act.get("sub") != client.client_id:
            raise InvalidGrant("subject_token: may_act does not allow this client")
        if verified.idp != _SELF:
            return verified, verified.exp
        return self._chained(snapshot, client, verified), verified.exp

    def _chained(self, snapshot: Snapshot, client: ClientView, cap: VerifiedSubject) -> VerifiedSubject:
        """A capability we minted, presented by the tool it was for, to call onwards."""
        if not client.may_chain:
            raise InvalidGrant("subject_token: this client may not present capabilities (chaining)")
        if self.revocations.is_revoked(cap.claims):
            raise InvalidGrant("subject_token: the presented capability was revoked")
        claims = cap.claims
        if chain_depth(claims.get("act")) >= self.settings.max_chain_depth:
            raise InvalidGrant("subject_token: delegation chain too deep")
        namespace, sep, raw_sub = cap.sub.partition(":")
        idp = snapshot.idps_by_namespace.get(namespace)
        if not sep or idp is None or not idp.enabled:
            raise InvalidGrant("subject_token: subject from an unknown identity provider")
        return VerifiedSubject(
            idp=idp.name, namespace=idp.namespace, sub=raw_sub, groups=cap.groups, attributes={},
            claims=claims, exp=cap.exp, act=claims.get("act"), may_act=None, scope=cap.scope,
        )

    def _verify_actor(self, snapshot: Snapshot, client: ClientView, req: ExchangeRequest) -> None:
        """The actor token proves the client's identity: from a trusted provider, or self-signed
        (``iss`` = ``sub`` = client_id) with the keys the client registered for private_key_jwt."""
        if req.actor_token_type not in SUBJECT_TOKEN_TYPES:
            raise InvalidGrant("actor_token: unsupported actor_token_type")
        issuers: Mapping[str, TrustedIdp] = snapshot.idps_by_issuer
        if client.jwks and peek_issuer(req.actor_token or "") == client.client_id:
            issuers = {client.client_id: TrustedIdp(
                name=f"client:{client.client_id}", issuer=client.client_id, namespace=_SELF,
                algorithms=tuple(sorted(ASYMMETRIC_ALGORITHMS)), jwks=client.jwks,
            )}
        actor = verify_token(
            req.actor_token or "",
            idps_by_issuer=issuers,
            keys=self._resolver,
            audience=self.settings.url,
            leeway=self.settings.leeway,
            what="actor_token",
        )
        if actor.sub != client.client_id:
            raise InvalidGrant("actor_token: its subject is not the authenticated client")

    # -- target -------------------------------------------------------------------
    @staticmethod
    def _target(snapshot: Snapshot, req: ExchangeRequest) -> ToolView:
        tool: ToolView | None
        if req.resource is not None:
            tool = snapshot.tools_by_resource.get(req.resource)
        elif req.audience is not None:
            tool = snapshot.tools_by_name.get(req.audience) or snapshot.tools_by_resource.get(req.audience)
        else:
            raise InvalidTarget("one target is required: resource or audience")
        if tool is None:
            raise InvalidTarget(UNREACHABLE)
        return tool


@functools.lru_cache(maxsize=256)
def _limits(text: str | None) -> tuple[RateLimitItem, ...]:
    """Parsed once per distinct string: registry and policy values were validated when stored."""
    return parse_limits("rate limit", text) if text else ()


def _requested_detail(d: RequestedDetail) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "tool_invocation"}
    for name in ("locations", "actions", "constraints", "arguments"):
        value = getattr(d, name)
        if value is not None:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) and 0 < len(v) <= 100 else None

