"""MCP-server clients: register (the secret shown once), rotate the secret, DPoP, enable and disable."""

from __future__ import annotations

from flask import Blueprint, redirect, url_for
from werkzeug.wrappers import Response

from ...errors import ConfigurationError, UnknownObject, describe
from .. import forms
from ..context import render, service

__all__ = ["register"]

_NOTICES = {"status": "Status changed.", "dpop": "DPoP requirement changed."}
_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")


def _list(error: str | None = None, status: int = 200) -> tuple[str, int]:
    svc = service()
    return render("clients.html", status, clients=svc.list_clients(), tools=svc.list_tools(), methods=_METHODS,
                  error=error, form=forms.echo() if error else {}, chosen_tools=forms.many("tools") if error else [],
                  chosen_methods=forms.many("auth_methods") if error else list(_METHODS[:2]))


def register(bp: Blueprint) -> None:
    @bp.get("/clients")
    def clients() -> tuple[str, int]:
        return _list()

    @bp.post("/clients")
    def client_add() -> tuple[str, int]:
        try:
            lifetime = forms.text("max_lifetime", 10)
            if lifetime and not lifetime.isdigit():
                raise ConfigurationError("max-lifetime: a whole number of seconds")
            client, secret = service().add_client(
                client_id=forms.text("client_id", 100), resource_uri=forms.text("resource_uri", 1000),
                tools=forms.many("tools"), auth_methods=forms.many("auth_methods") or list(_METHODS[:2]),
                jwks=forms.json_object("jwks"), max_lifetime=int(lifetime) if lifetime else None,
                may_chain=forms.checkbox("may_chain"), rate_limit=forms.optional("rate_limit", 100),
                dpop_required=forms.checkbox("dpop_required"),
            )
        except ConfigurationError as e:
            return _list(describe(e), 400)
        # Rendered in this answer only (no redirect): the secret is never stored, so it cannot be shown again.
        return render("secret.html", client=client, secret=secret, created=True)

    @bp.get("/clients/<client_id>")
    def client(client_id: str) -> tuple[str, int]:
        try:
            found = service().get_client(client_id)
        except UnknownObject as e:
            return render("missing.html", 404, message=describe(e))
        return render("client.html", client=found, notice=_NOTICES.get(forms.arg("done") or ""))

    @bp.post("/clients/<client_id>/secret")
    def client_rotate(client_id: str) -> tuple[str, int]:
        svc = service()
        try:
            secret = svc.rotate_client_secret(client_id)
            found = svc.get_client(client_id)
        except UnknownObject as e:
            return render("missing.html", 404, message=describe(e))
        except ConfigurationError as e:
            return render("client.html", 400, client=svc.get_client(client_id), error=describe(e))
        return render("secret.html", client=found, secret=secret, created=False)

    @bp.post("/clients/<client_id>/enabled")
    def client_enabled(client_id: str) -> Response | tuple[str, int]:
        try:
            service().set_client_enabled(client_id, forms.text("enabled") == "true")
        except UnknownObject as e:
            return render("missing.html", 404, message=describe(e))
        return redirect(url_for("console.client", client_id=client_id, done="status"), 303)

    @bp.post("/clients/<client_id>/dpop")
    def client_dpop(client_id: str) -> Response | tuple[str, int]:
        try:
            service().set_client_dpop_required(client_id, forms.text("dpop_required") == "true")
        except UnknownObject as e:
            return render("missing.html", 404, message=describe(e))
        return redirect(url_for("console.client", client_id=client_id, done="dpop"), 303)
