"""Revocation of one capability, of every capability of a user, or of a client, after a confirmation
that says how many live capabilities it voids."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ...errors import ConfigurationError, describe
from .. import forms
from ..context import render, service

__all__ = ["register"]

#: form kind -> the count_live keyword and what the page calls it
KINDS = {"jti": ("jti", "capability"), "sub": ("sub", "user"), "client": ("client_id", "client")}


def register(bp: Blueprint) -> None:
    @bp.get("/revocation")
    def revocation() -> tuple[str, int]:
        return render("revocation.html", clients=service().list_clients())

    @bp.post("/revocation")
    def revoke() -> tuple[str, int]:
        kind, value = forms.text("kind", 10), forms.text("value", 400)
        svc = service()
        page: dict[str, Any] = {"clients": svc.list_clients(), "kind": kind, "value": value}
        try:
            if kind not in KINDS or not value:
                raise ConfigurationError("choose what to revoke and name it")
            keyword, label = KINDS[kind]
            if not forms.checkbox("confirm"):
                live = svc.count_live(**{keyword: value})
                return render("revocation.html", confirm={"live": live, "label": label}, **page)
            if kind == "jti":
                result = svc.revoke_jti(value)
            elif kind == "sub":
                result = svc.revoke_subject(value)
            else:
                result = svc.revoke_client(value)
        except ConfigurationError as e:
            return render("revocation.html", 400, error=describe(e), **page)
        return render("revocation.html", done={"label": label, "value": value, "result": result}, **page)
