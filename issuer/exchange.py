"""The token-exchange decision: who is asking, for whom, for what; then mint.

This module is the issuer's policy point and knows nothing of HTTP or Authlib:
the RFC 8693 grant (:mod:`issuer.oauth.rfc8693`) parses and authenticates,
then hands an :class:`ExchangeRequest` and the authenticated client here.

Order of checks (each failure is a typed error, audited, and changes nothing):
subject token (and actor token) -> target tool -> client's tool allowlist ->
policy (default deny) -> the grant (policy's, narrowed by a presented
capability, then by the request; a refusal here spends the refusal budget,
not the user's) -> the user's budget -> sign -> audit commit -> response.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from limits import RateLimitItem

from . import clock
from .audit import AuditRecord, AuditWriter
from .errors import (
    InvalidGrant,
    InvalidRequest,
    InvalidTarget,
    IssuerError,
    RateLimited,
    TemporarilyUnavailable,
)
from .explain import Explanation, decide, explain
from .grant import Grant, NarrowingRefused
from .grant_details import RequestedDetail, apply_request, policy_constraints, policy_grant
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
from .replay import ReplayCache
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


class Exchanger:
    def __init__(
        self, settings: Settings, snapshots: SnapshotCache, keys: KeyStore, jwks: JwksCache, audit: AuditWriter,
        revocations: RevocationList, limiter: RateLimiter, replay: ReplayCache,
    ) -> None:
        #: where a call-bound capability presented for chaining is remembered, shared by every replica
        self.replay = replay
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
        record.txn = txn or new_txn()
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
        try:
            grant = self._grant(snapshot, client, req, subject, tool, decision, now, ceiling, record)
        except TemporarilyUnavailable:
            raise
        except IssuerError as e:
            # Refused after the policy granted: spends the refusal budget, never the grant budget, so a
            # model probing with arguments the constraints refuse cannot lock its own user out of the tool.
            if isinstance(e, NarrowingRefused):
                record.reason = e.audit_reason
            self._spend(record, limits, "refusal", subject.principal, client.client_id, tool.name)
            raise
        self._spend(record, limits, "user", subject.principal, tool.name)
        lifetime = grant.expires_at - now
        details = grant.details(requested=req.details is not None)
        claims = build_claims(
            issuer=self.settings.url,
            principal=subject.principal,
            audience=tool.resource_uri,
            client_id=client.client_id,
            subject_act=subject.act,
            scopes=[s for s in decision.scopes if s in grant.scopes],
            groups=sorted(subject.groups),
            now=now,
            lifetime=lifetime,
            policy_version=decision.policy_version,
            txn=grant.txn,
            authorization_details=details,
        )
        if grant.jkt is not None:
            claims["cnf"] = {"jkt": grant.jkt}
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

    def _grant(self, snapshot: Snapshot, client: ClientView, req: ExchangeRequest, subject: VerifiedSubject,
               tool: ToolView, decision: Decision, now: int, ceiling: int, record: AuditRecord) -> Grant:
        """What the capability will carry: the policy's grant, narrowed by a presented capability, then by the
        request. Everything here that refuses is a refusal after the policy decision."""
        idp = snapshot.idps_by_name.get(subject.idp)
        constraints = policy_constraints(
            decision, sub=subject.sub, attributes=subject.attributes,
            allowed_claims=idp.attribute_claims if idp else (),
        )
        lifetime = min(
            self.settings.token_lifetime,
            client.max_lifetime or self.settings.token_lifetime,
            decision.max_lifetime or self.settings.token_lifetime,
            ceiling - now,
        )
        grant = policy_grant(tool=tool, decision=decision, constraints=constraints, expires_at=now + lifetime,
                             txn=record.txn, jkt=req.dpop_jkt)
        presented = Grant.of_capability(subject.claims) if subject.claims.get("iss") == self.settings.url else None
        if presented is not None:
            grant = grant.narrow(presented)
        grant = apply_request(grant, req.details, tool.name)
        if grant.expires_at - now < 1:
            record.reason = "subject_expiring"
            raise InvalidGrant("subject_token: expires too soon to delegate")
        if presented is not None and presented.call_bound:
            self._present_once(subject.claims, presented, tool.name, now, record)
        return grant

    def _present_once(self, claims: Mapping[str, Any], presented: Grant, target: str, now: int,
                      record: AuditRecord) -> None:
        """A call-bound capability stands for one call: it may be chained once into each tool that call
        needs, on any worker or replica. Once per target rather than once in all, so a handler whose one
        call reads from one upstream and writes to another still works, while a copy of the capability
        buys nothing more than the call already had. Spent last, once everything else passed, so a
        refused attempt does not use it up."""
        jti = _str_or_none(claims.get("jti"))
        if jti is None:
            raise InvalidGrant("subject_token: a call-bound capability without jti")
        ttl = presented.expires_at - now + self.settings.leeway + 1
        if not self.replay.first_use(f"chained-call:{jti}:{target}", ttl):
            record.reason = "call_bound_reused"
            raise InvalidGrant("subject_token: a call-bound capability can be chained once into each tool")

    def _spend(self, record: AuditRecord, limits: tuple[RateLimitItem, ...], *key: str) -> None:
        """One unit of the budget ``key`` names: ``client``, ``user`` (granted exchanges) or ``refusal``
        (exchanges refused after the policy decision, per user, client and tool)."""
        limited = self.limiter.hit(limits, *key)
        if limited is not None:
            if key[0] == "refusal":  # no word on why this one was refused: the budget for that is spent
                record.reason = "refusals_rate_limited"
                raise RateLimited(f"rate limit {limited.limit} reached for refused requests of this user",
                                  retry_after=limited.retry_after)
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

