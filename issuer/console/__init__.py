"""The admin console at ``/console``: server-rendered pages over the admin service layer.

Every request passes four gates before a view runs, in this order:

1. no part of it (path, query, form field) may hold NUL, a lone surrogate or
   bytes that are not UTF-8 (:func:`issuer.request_rules.bad_characters`, as
   in the admin API), so none reaches the database, not even the session's;
2. a POST must carry the session's CSRF token (the sign-in form included);
3. every page but sign-in needs a live session (:mod:`.session`);
4. a POST that changes something needs the ``admin`` role; the few POSTs
   that only read (sign-in, sign-out, testing a decision) are listed in
   :data:`READ_ONLY_POSTS`, so a new form is a write unless said otherwise.

Refusals are HTML pages with the right status (400, 403, or a redirect to sign
in), never the JSON errors of the API.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, g, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from ..request_rules import bad_characters
from ..settings import Settings
from . import session as console_session
from .context import render
from .headers import secure_headers

__all__ = ["PREFIX", "READ_ONLY_POSTS", "register_console"]

PREFIX = "/console"
#: POST endpoints an auditor may use: they change nothing.
READ_ONLY_POSTS = frozenset({"console.sign_in", "console.sign_out", "console.policy_test"})
_PUBLIC = frozenset({"console.sign_in", "console.static"})
#: Policy documents are larger than the issuer's default body limit.
_MAX_BODY = 1024 * 1024


class Refused(Exception):
    """A console request that a gate stops: rendered as an HTML page with ``status``."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def register_console(app: Flask, settings: Settings, pepper: bytes) -> None:
    console_session.configure(app, settings, pepper)
    app.register_blueprint(_blueprint())


def _blueprint() -> Blueprint:
    from .views import register_views

    bp = Blueprint("console", __name__, url_prefix=PREFIX, template_folder="templates", static_folder="static",
                   static_url_path="/static")

    @bp.before_request
    def _gates() -> BaseResponse | None:
        request.max_content_length = _MAX_BODY
        # Before anything else reads the request (the session lookup included): a NUL or a lone surrogate in
        # the path, the query or a form field must never reach the database, where it was a 503.
        problem = bad_characters()
        if problem is not None:
            raise Refused(400, "Not accepted", f"{problem}. Remove it and send the form again.")
        endpoint = request.endpoint or ""
        if request.method == "POST" and not console_session.valid_csrf(request.form.get("csrf_token")):
            raise Refused(403, "Form expired", "This form was sent without its security token, or with one from "
                          "another session. Go back, reload the page and send it again.")
        if endpoint in _PUBLIC:
            return None
        signed = console_session.current()
        if signed.who is None:
            return redirect(url_for("console.sign_in", ended="1" if signed.ended else None))
        g.console_admin = signed.who
        if request.method == "POST" and endpoint not in READ_ONLY_POSTS and not signed.who.may_write:
            raise Refused(403, "Not allowed", f"The {signed.who.role} role may look but not change anything. "
                          "Sign in with an admin key to make changes.")
        return None

    @bp.after_request
    def _headers(resp: Response) -> Response:
        return secure_headers(resp)

    @bp.errorhandler(Refused)
    def _refused(e: Refused) -> tuple[str, int]:
        return render("refused.html", e.status, title=e.title, message=e.message)

    register_views(bp)
    return bp
