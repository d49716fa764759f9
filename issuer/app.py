"""The Flask app factory: builds every long-lived object once and wires the routes.

Everything a request needs hangs off ``app.extensions["issuer"]`` (an
:class:`IssuerContext`); there is no module-level state, so tests build as
many independent apps as they like.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass

from flask import Flask, Response, g, request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import clock
from .admin.api import admin_blueprint
from .audit import AuditRecord, AuditWriter
from .console import register_console
from .db import Database
from .dpop import NonceSource
from .errors import (
    ConfigurationError,
    InvalidRequest,
    IssuerError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TemporarilyUnavailable,
)
from .exchange import Exchanger
from .identity.jwks import JwksCache
from .keys import JWKS_MAX_AGE, KeyStore
from .logs import bind_request, clear_request
from .metrics import Metrics
from .minting import sign
from .oauth.capabilities import CapabilityIntrospection, CapabilityRevocation, CapabilityStore
from .oauth.client_auth import (
    ClientAuthGuard,
    PrivateKeyJwt,
    authenticate_basic,
    authenticate_post,
    claimed_client_id,
)
from .oauth.rfc8414 import (
    INTROSPECT_PATH,
    JWKS_PATH,
    REVOCATION_FEED_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    WELL_KNOWN_PATH,
    build_metadata,
)
from .oauth.rfc8693 import TokenExchangeGrant
from .oauth.server import IssuerServer
from .openapi import OPENAPI_PATH, build_openapi
from .ratelimit import RateLimiter
from .registry import SnapshotCache
from .replay import DatabaseReplayCache, RedisReplayCache, ReplayCache
from .request_rules import bad_characters
from .responses import error_response, json_response
from .revocation import FEED_TYP, RevocationList
from .settings import Settings, load_settings

__all__ = ["JWKS_MAX_AGE", "IssuerContext", "create_app"]

log = logging.getLogger("issuer")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FORM = "application/x-www-form-urlencoded"
_FORM_ENDPOINTS = frozenset({TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH})


@dataclass
class IssuerContext:
    settings: Settings
    db: Database
    keys: KeyStore
    snapshots: SnapshotCache
    jwks: JwksCache
    exchanger: Exchanger
    server: IssuerServer
    capabilities: CapabilityStore
    replay: ReplayCache
    revocations: RevocationList
    metrics: Metrics
    metadata_body: bytes
    nonces: NonceSource | None = None


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask("issuer")
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    db = Database(settings.database_url, pool_size=settings.threads + 2, timeout=settings.db_timeout)
    keys = KeyStore(settings.keys_dir, retention=settings.key_retention, refresh_interval=settings.refresh_interval)
    pepper = keys.pepper()
    keys.signing_key()  # fail at start-up, not on the first request, when `issuer init` was not run
    snapshots = SnapshotCache(db, pepper, settings.refresh_interval, wait_timeout=settings.db_timeout)
    metrics = Metrics()
    jwks = JwksCache(
        on_failure=lambda idp: metrics.jwks_failures.labels(idp).inc(),
        max_age=settings.jwks_max_age,
        refetch_cooldown=settings.jwks_refetch_cooldown,
        http_timeout=settings.http_timeout,
        allow_insecure_loopback=settings.allow_insecure_loopback,
    )
    replay: ReplayCache = (RedisReplayCache(settings.redis_url, timeout=settings.redis_timeout) if settings.redis_url
                           else DatabaseReplayCache(db))
    revocations = RevocationList(db)
    limiter = RateLimiter(settings.redis_url, timeout=settings.redis_timeout,
                          on_state_change=lambda to: metrics.rate_limit_switches.labels(to).inc())
    audit = AuditWriter(db, pepper, metrics=metrics)
    exchanger = Exchanger(settings, snapshots, keys, jwks, audit, revocations, limiter, replay)

    server = IssuerServer(lambda client_id: snapshots.get().clients.get(client_id), settings.url,
                          ClientAuthGuard(limiter, metrics))
    server.init_app(app)
    server.register_client_auth_method("client_secret_basic", authenticate_basic)
    server.register_client_auth_method("client_secret_post", authenticate_post)
    server.register_client_auth_method(
        "private_key_jwt", PrivateKeyJwt([settings.url, settings.url + TOKEN_PATH], replay, settings.leeway)
    )
    nonces = NonceSource(pepper) if settings.dpop_nonce else None
    grant = type("BoundTokenExchangeGrant", (TokenExchangeGrant,),
                 {"exchanger": exchanger, "replay": replay, "token_url": settings.url + TOKEN_PATH, "nonces": nonces})
    server.register_grant(grant)
    capabilities = CapabilityStore(settings.url, keys, revocations)
    server.register_endpoint(CapabilityIntrospection(server, capabilities))
    server.register_endpoint(CapabilityRevocation(server, capabilities))


    ctx = IssuerContext(
        settings=settings, db=db, keys=keys, snapshots=snapshots, jwks=jwks, exchanger=exchanger,
        server=server, capabilities=capabilities, replay=replay, revocations=revocations, metrics=metrics,
        metadata_body=json.dumps(build_metadata(settings), separators=(",", ":")).encode(), nonces=nonces,
    )
    app.extensions["issuer"] = ctx
    _routes(app, ctx)
    app.register_blueprint(admin_blueprint())
    register_console(app, settings, pepper)
    _error_handlers(app, ctx)
    return app


def _routes(app: Flask, ctx: IssuerContext) -> None:
    openapi_body = json.dumps(build_openapi()).encode()

    @app.before_request
    def _request_id() -> None:
        rid = request.headers.get("X-Request-Id", "")
        g.request_id = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        bind_request(g.request_id)

    @app.before_request
    def _form_characters() -> Response | None:
        """The request character rules (:mod:`issuer.request_rules`) at the token endpoints: a NUL cannot be
        stored in PostgreSQL and a lone surrogate cannot be encoded at all, so either one would break the
        refusal's own audit row. Refused, and audited, before anything else runs."""
        if request.method != "POST" or request.path not in _FORM_ENDPOINTS:
            return None
        problem = bad_characters()
        if problem is None:
            return None
        resp = error_response(InvalidRequest(problem))
        _audit_refusal(ctx, resp)  # raises TemporarilyUnavailable (a 503) when the row cannot be written
        return resp

    @app.teardown_request
    def _unbind(_exc: BaseException | None) -> None:
        clear_request()

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers["X-Request-Id"] = g.get("request_id", "")
        return resp

    @app.get(WELL_KNOWN_PATH)
    def metadata() -> Response:
        return Response(ctx.metadata_body, mimetype="application/json",
                        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"})

    @app.get(JWKS_PATH)
    def jwks() -> Response:
        return Response(ctx.keys.jwks_bytes(), mimetype="application/json",
                        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(ctx.metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.post(TOKEN_PATH)
    def token() -> Response:
        started = time.perf_counter()
        try:
            return _token()
        finally:
            ctx.metrics.latency.observe(time.perf_counter() - started)

    def _token() -> Response:
        g.audited = False  # the exchange sets it once it owns the record
        try:
            _form_only()
            resp: Response = ctx.server.create_token_response()
        except IssuerError as e:
            resp = error_response(e)
        if resp.status_code >= 400 and not g.audited and resp.status_code != 503:
            _audit_refusal(ctx, resp)
        if ctx.nonces is not None:  # RFC 9449 section 8: a fresh nonce on every answer, so clients keep up
            resp.headers["DPoP-Nonce"] = ctx.nonces.current(clock.now())
        return resp

    @app.post(INTROSPECT_PATH)
    def introspect() -> Response:
        return _endpoint("introspection")

    @app.post(REVOKE_PATH)
    def revoke() -> Response:
        return _endpoint("revocation")

    def _endpoint(name: str) -> Response:
        """Introspection and revocation refusals (a failed client authentication above all) are audited
        as the token endpoint's are, so guessing a client secret here leaves the same trail."""
        try:
            _form_only()
            resp: Response = ctx.server.create_endpoint_response(name)
        except IssuerError as e:
            resp = error_response(e)
        if resp.status_code >= 400 and resp.status_code != 503:
            _audit_refusal(ctx, resp)
        return resp

    @app.get(REVOCATION_FEED_PATH)
    def revocation_feed() -> Response:
        raw = request.args.get("since")
        since: float | None = None
        if raw is not None:
            try:
                since = float(raw)
            except ValueError:
                raise InvalidRequest("since must be a number of seconds since the epoch") from None
            if not math.isfinite(since) or not 0 <= since <= clock.now() + 86400:
                raise InvalidRequest("since must be a time between the epoch and tomorrow")
        # Signed, so a verifier can tell the issuer's list from a forged or replayed one; no-store, so no
        # cache between them serves an old version.
        doc = ctx.revocations.feed(since)
        doc.update(iss=ctx.settings.url, iat=int(doc["issued_at"]))
        return Response(sign(doc, ctx.keys.signing_key(), FEED_TYP), mimetype="application/jwt",
                        headers={"Cache-Control": "no-store"})

    @app.get(OPENAPI_PATH)
    def openapi() -> Response:
        return Response(openapi_body, mimetype="application/json", headers={"Cache-Control": "public, max-age=300"})

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        checks: dict[str, str] = {}
        try:
            with ctx.db.session() as s:
                s.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except SQLAlchemyError:
            checks["database"] = "unavailable"
        try:
            ctx.keys.signing_key()
            checks["keys"] = "ok"
        except ConfigurationError:
            checks["keys"] = "unavailable"
        ok = all(v == "ok" for v in checks.values())
        # Redis is reported but does not make the replica unready: rate limits fall back to
        # per-process windows, and only private_key_jwt needs the shared replay cache. Every check
        # has a deadline (ISSUER_DB_TIMEOUT, ISSUER_REDIS_TIMEOUT), so this answers while a peer is silent.
        if isinstance(ctx.replay, RedisReplayCache):
            checks["redis"] = "ok" if ctx.replay.ping() else "unavailable"
        checks["rate_limits"] = ctx.exchanger.limiter.probe()
        shared = checks.get("redis", "ok") == "ok" and checks["rate_limits"] != "degraded"
        status = "unavailable" if not ok else "ok" if shared else "degraded"
        return json_response({"status": status, "checks": checks}, 200 if ok else 503)


def _audit_refusal(ctx: IssuerContext, resp: Response) -> None:
    """Refusals before the exchange (bad client credentials, malformed requests) are decisions too.

    ``client_id`` is only ever a client that authenticated: a failed authentication must not read as
    that client acting. What the request claimed goes to ``actor``, which for these rows is not an
    ``act`` claim but ``{"endpoint": <path>, "claimed_client_id": <printable, at most 100>}`` (the
    claim only when it differs from the authenticated id), so guessing at one client id still shows.
    """
    try:
        error = str(json.loads(resp.get_data()).get("error", "invalid_request"))
    except ValueError:
        error = "invalid_request"
    authenticated: str | None = g.get("authenticated_client")
    claimed = claimed_client_id(request, authenticated)
    actor: dict[str, str] = {"endpoint": request.path}
    if claimed is not None:
        actor["claimed_client_id"] = claimed
    ctx.exchanger.audit.record_denial(AuditRecord(
        time=clock.now(), request_id=g.get("request_id", ""), decision="denied", reason=error[:64],
        client_id=authenticated, actor=actor, client_addr=request.remote_addr,
    ))


def _form_only() -> None:
    """Token-endpoint parameters travel in a form body, never in the URL."""
    if request.query_string:
        raise InvalidRequest("parameters must be sent in the form body, not the query string")
    if request.mimetype != _FORM:
        raise InvalidRequest(f"Content-Type must be {_FORM}")


def _error_handlers(app: Flask, ctx: IssuerContext) -> None:
    @app.errorhandler(IssuerError)
    def _issuer_error(e: IssuerError) -> Response:
        return error_response(e)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        if isinstance(e, RequestEntityTooLarge):
            return error_response(PayloadTooLarge())
        if e.code == 404:
            return error_response(NotFound())
        if e.code == 405:
            resp = error_response(MethodNotAllowed())
            if e.valid_methods:  # type: ignore[attr-defined]
                resp.headers["Allow"] = ", ".join(e.valid_methods)  # type: ignore[attr-defined]
            return resp
        return error_response(InvalidRequest(e.description or "bad request"))

    @app.errorhandler(SQLAlchemyError)
    def _db_error(e: SQLAlchemyError) -> Response:
        log.error("database error: %s", type(e).__name__)
        return error_response(TemporarilyUnavailable("The issuer's database is unavailable."))

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        # Never a stack trace or an HTML page to the client.
        log.error("unhandled %s on %s %s", type(e).__name__, request.method, request.path, exc_info=True)
        if isinstance(e, ConfigurationError):  # e.g. the key folder became unreadable
            return error_response(TemporarilyUnavailable("The issuer is misconfigured or its keys are unavailable."))
        resp = error_response(IssuerError("internal error"))
        resp.status_code = 500
        return resp
