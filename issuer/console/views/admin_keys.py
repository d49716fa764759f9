"""Admin keys: who may sign in here and call the admin API. A new key is shown once, on the page that creates it."""

from __future__ import annotations

from flask import Blueprint, redirect, url_for
from werkzeug.wrappers import Response

from ...errors import ConfigurationError, UnknownObject, describe
from .. import forms
from ..context import render, service, signed_in

__all__ = ["register"]


def _list(status: int = 200, **values: object) -> tuple[str, int]:
    return render("admin_keys.html", status, keys=service().list_admin_keys(), me=signed_in().key_id,
                  notice="Admin key revoked." if forms.arg("done") == "revoked" else None, **values)


def register(bp: Blueprint) -> None:
    @bp.get("/admin-keys")
    def admin_keys() -> tuple[str, int]:
        return _list()

    @bp.post("/admin-keys")
    def admin_key_create() -> tuple[str, int]:
        try:
            info, key = service().create_admin_key(name=forms.text("name", 100), role=forms.text("role", 20))
        except ConfigurationError as e:
            return _list(400, error=describe(e), form=forms.echo())
        # In this answer only (no redirect): the key is stored as a hash and cannot be shown again.
        return render("admin_key_created.html", info=info, key=key)

    @bp.post("/admin-keys/<key_id>/revoke")
    def admin_key_revoke(key_id: str) -> Response | tuple[str, int]:
        try:
            service().revoke_admin_key(key_id[:40])
        except UnknownObject as e:
            return render("missing.html", 404, message=describe(e))
        return redirect(url_for("console.admin_keys", done="revoked"), 303)
