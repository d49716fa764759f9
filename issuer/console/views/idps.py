"""Trusted identity providers: list, add, edit, disable."""

from __future__ import annotations

from flask import Blueprint, redirect, url_for
from werkzeug.wrappers import Response

from ...errors import ConfigurationError, UnknownObject, describe
from .. import forms
from ..context import render, service

__all__ = ["register"]

_NOTICES = {"added": "Identity provider added.", "saved": "Changes saved.", "status": "Status changed."}


def register(bp: Blueprint) -> None:
    @bp.get("/idps")
    def idps() -> tuple[str, int]:
        return render("idps.html", idps=service().list_idps(), form={})

    @bp.post("/idps")
    def idp_add() -> Response | tuple[str, int]:
        try:
            idp = service().add_idp(
                name=forms.text("name", 100), issuer=forms.text("issuer", 500),
                jwks_uri=forms.optional("jwks_uri", 1000), jwks=forms.json_object("jwks"),
                algorithms=forms.lines("algorithms") or ("RS256", "ES256"),
                subject_claim=forms.text("subject_claim", 100) or "sub",
                groups_claim=forms.text("groups_claim", 100) or "groups",
                attribute_claims=forms.lines("attribute_claims"), namespace=forms.optional("namespace", 100),
            )
        except ConfigurationError as e:
            return render("idps.html", 400, idps=service().list_idps(), error=describe(e), form=forms.echo())
        return redirect(url_for("console.idp_edit", name=idp["name"], done="added"), 303)

    @bp.route("/idps/<name>", methods=["GET", "POST"])
    def idp_edit(name: str) -> Response | tuple[str, int]:
        try:
            idp = service().get_idp(name)
        except UnknownObject as e:
            return render("missing.html", 404, message=describe(e))
        if forms.is_get():
            return render("idp.html", idp=idp, notice=_NOTICES.get(forms.arg("done") or ""))
        try:
            service().update_idp(
                name, jwks_uri=forms.optional("jwks_uri", 1000), jwks=forms.json_object("jwks"),
                algorithms=forms.lines("algorithms") or None, subject_claim=forms.optional("subject_claim", 100),
                groups_claim=forms.optional("groups_claim", 100), attribute_claims=forms.lines("attribute_claims"),
            )
        except ConfigurationError as e:
            return render("idp.html", 400, idp=idp, error=describe(e))
        return redirect(url_for("console.idp_edit", name=name, done="saved"), 303)

    @bp.post("/idps/<name>/enabled")
    def idp_enabled(name: str) -> Response | tuple[str, int]:
        try:
            service().set_idp_enabled(name, forms.text("enabled") == "true")
        except UnknownObject as e:
            return render("missing.html", 404, message=describe(e))
        return redirect(url_for("console.idp_edit", name=name, done="status"), 303)
