"""Sign-in with an admin key, and sign-out."""

from __future__ import annotations

from flask import Blueprint, redirect, request, url_for
from werkzeug.wrappers import Response

from ...errors import RateLimited
from .. import session
from ..context import render

__all__ = ["register"]


def register(bp: Blueprint) -> None:
    @bp.route("/sign-in", methods=["GET", "POST"])
    def sign_in() -> Response | tuple[str, int]:
        """Sign-in failures are logged, counted and throttled (:class:`~issuer.admin.credentials.SignInGuard`)."""
        if request.method == "GET":
            ended = "Your session has ended. Sign in again." if request.args.get("ended") else None
            return render("sign_in.html", notice=ended)
        try:
            who = session.sign_in(request.form.get("admin_key", "")[:300])
        except RateLimited as e:
            page, status = render("sign_in.html", 429,
                                  error=f"Too many failed sign-ins. Try again in {e.retry_after} seconds.")
            return Response(page, status, {"Retry-After": str(e.retry_after)}, mimetype="text/html")
        if who is None:
            # One message for every failure: which part of a key was wrong is nobody's business.
            return render("sign_in.html", 401, error="That admin key is not valid.")
        return redirect(url_for("console.overview"), 303)

    @bp.post("/sign-out")
    def sign_out() -> Response:
        session.sign_out()
        return redirect(url_for("console.sign_in"), 303)
