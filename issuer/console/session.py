"""Who is signed in to the console, for how long, and the CSRF token of the session.

The session is Flask's signed cookie (key derived from the server pepper, so
every replica accepts it and nothing lives in one process's memory). It holds
the admin key's id, never the key: each request looks the key up again, so a
revoked key or a changed role takes effect on the next click. The cookie is
``HttpOnly``, ``SameSite=Strict``, scoped to ``/console`` and ``Secure`` when
the issuer's URL is https; a session idle longer than the configured timeout,
or older than :data:`MAX_AGE`, is over.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import Flask, Request, current_app, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import BadSignature

from .. import clock
from ..admin.credentials import AdminIdentity, SignInGuard, identity
from ..settings import Settings

__all__ = ["COOKIE", "MAX_AGE", "Signed", "configure", "csrf_token", "current", "sign_in", "sign_out", "valid_csrf"]

COOKIE = "issuer_console"
#: A session ends this long after sign-in, however active (seconds).
MAX_AGE = 12 * 3600
_KEY, _CSRF, _SEEN, _SINCE = "k", "c", "t", "s"
_SKEW = 60


@dataclass(frozen=True)
class Signed:
    """The signed-in admin, or why there is none (shown on the sign-in page)."""

    who: AdminIdentity | None
    ended: str | None = None


class _Sessions(SecureCookieSessionInterface):
    """Flask's signed cookie, without Flask's own age check.

    That check refuses a cookie signed "in the future", which is what a
    replica whose clock is a second behind the one that signed it would see,
    signing people out at random behind a load balancer. The console enforces
    its own idle and age limits from the session's content (:func:`current`).
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # The cookie is scoped to the console; every other route (the token endpoint above all) would
        # only pay for building a signer it never uses.
        if not request.path.startswith(self.get_cookie_path(app)):
            return self.make_null_session(app)
        signer = self.get_signing_serializer(app)
        if signer is None:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        try:
            return self.session_class(signer.loads(value))
        except BadSignature:
            return self.session_class()


def configure(app: Flask, settings: Settings, pepper: bytes) -> None:
    """Cookie flags and the signing key; the key is the pepper's, for this purpose only."""
    app.session_interface = _Sessions()
    app.secret_key = hmac.new(pepper, b"issuer-console-session", hashlib.sha256).hexdigest()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.url.startswith("https://"),
    )


def csrf_token() -> str:
    """The session's CSRF token, made on first use (the sign-in form needs one before anyone signs in)."""
    token = session.get(_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[_CSRF] = token
    return token


def valid_csrf(presented: str | None) -> bool:
    expected = session.get(_CSRF)
    if not isinstance(expected, str) or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def sign_in(presented: str) -> AdminIdentity | None:
    """Check an admin key (as the admin API does, with the same failure log, metric and throttle, whose
    :class:`~issuer.errors.RateLimited` the caller shows) and start a fresh session for it."""
    ctx = current_app.extensions["issuer"]
    guard = SignInGuard(ctx.exchanger.limiter, ctx.metrics, "console")
    who = guard.authenticate(ctx.db, ctx.keys.pepper(), presented.strip(), request.remote_addr or "")
    if who is None:
        return None
    now = int(clock.now())
    session.clear()  # nothing from before sign-in survives it, the CSRF token included
    session.update({_KEY: who.key_id, _CSRF: secrets.token_urlsafe(32), _SEEN: now, _SINCE: now})
    return who


def sign_out() -> None:
    session.clear()


def current() -> Signed:
    """The signed-in admin, after the idle and age limits and a fresh look at the key."""
    key_id = session.get(_KEY)
    if not isinstance(key_id, str):
        return Signed(None)
    ctx = current_app.extensions["issuer"]
    now = int(clock.now())
    seen, since = session.get(_SEEN), session.get(_SINCE)
    if not isinstance(seen, int) or not isinstance(since, int):
        session.clear()
        return Signed(None)
    # Replicas' clocks differ a little: a session that seems to start in the future is fine within the skew.
    if now - seen > ctx.settings.console_idle_timeout or now - since > MAX_AGE or since - now > _SKEW:
        session.clear()
        return Signed(None, "Your session ended after a period of inactivity. Sign in again.")
    who = identity(ctx.db, key_id)
    if who is None:
        session.clear()
        return Signed(None, "That admin key is no longer valid. Sign in with another.")
    session[_SEEN] = now
    return Signed(who)
