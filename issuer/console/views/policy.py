"""Policy: the active version, its history, diffs, applying a new version, testing a decision."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, request, url_for
from werkzeug.wrappers import Response

from ...admin.api import MAX_VERSION
from ...admin.inputs import json_text
from ...errors import ConfigurationError, UnknownObject, describe
from ...kernel.strictjson import StrictJSONError
from ...policy.document import PolicyError
from .. import forms
from ..context import render, service

__all__ = ["register"]


def _page(status: int = 200, **values: Any) -> tuple[str, int]:
    svc = service()
    try:
        active: dict[str, Any] | None = svc.show_policy()
    except UnknownObject:
        active = None
    return render("policy.html", status, active=active, versions=svc.list_policy_versions(), clients=svc.list_clients(),
                  tools=svc.list_tools(), idps=svc.list_idps(), notice=_applied(), **values)


def _applied() -> str | None:
    version = forms.arg("applied")
    return f"Policy version {version} is active." if version and version.isdigit() else None


def _numbered(document: str, errors: list[tuple[int, str]]) -> list[dict[str, Any]]:
    """The document line by line, each with the problems found on it, so an error is shown where it is."""
    by_line: dict[int, list[str]] = {}
    for line, message in errors:
        by_line.setdefault(line, []).append(message)
    return [{"n": i, "text": text, "errors": by_line.get(i, [])}
            for i, text in enumerate(document.splitlines() or [""], start=1)]


def _version(name: str) -> int | None:
    raw = request.args.get(name, "")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= MAX_VERSION else None


def _claims(raw: str) -> dict[str, Any]:
    """``name=value`` per line, or a JSON object: the CLI's --claim, or the API's claims."""
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            value = json_text(raw, "claims")
        except StrictJSONError as e:
            raise ConfigurationError(str(e)) from None
        if not isinstance(value, dict):
            raise ConfigurationError("claims: must be a JSON object")
        return value
    out: dict[str, Any] = {}
    for line in raw.splitlines():
        if not line.strip():
            continue
        k, sep, v = line.partition("=")
        if not sep or not k.strip():
            raise ConfigurationError(f"claims: {line[:60]!r}: expected NAME=VALUE")
        out[k.strip()] = v.strip()
    return out


def register(bp: Blueprint) -> None:
    @bp.get("/policy")
    def policy() -> tuple[str, int]:
        return _page()

    @bp.post("/policy")
    def policy_apply() -> Response | tuple[str, int]:
        document = request.form.get("document", "")
        try:
            version = service().apply_policy(document, source="console")
        except PolicyError as e:
            return _page(400, apply_error=describe(e), draft=document, lines=_numbered(document, e.errors))
        except ConfigurationError as e:
            return _page(400, apply_error=describe(e), draft=document)
        return redirect(url_for("console.policy", applied=str(version)), 303)

    @bp.get("/policy/versions/<int:version>")
    def policy_version(version: int) -> tuple[str, int]:
        try:
            shown = service().show_policy(version) if 1 <= version <= MAX_VERSION else None
        except UnknownObject:
            shown = None
        if shown is None:
            return render("missing.html", 404, message=f"no policy version {version}")
        return render("policy_version.html", version=shown)

    @bp.get("/policy/diff")
    def policy_diff() -> tuple[str, int]:
        old, new = _version("from"), _version("to")
        if old is None or new is None:
            return _page(400, error="Choose two policy versions to compare.")
        try:
            diff = service().diff_policy(old, new)
        except ConfigurationError as e:
            return _page(404, error=describe(e))
        return render("policy_diff.html", diff=diff, lines=diff["diff"].splitlines())

    @bp.post("/policy/test")
    def policy_test() -> tuple[str, int]:
        try:
            claims = _claims(forms.text("claims", 20_000))
            result = service().test_policy(
                sub=forms.text("sub", 400), idp=forms.optional("idp", 100), groups=forms.lines("groups"),
                claims=claims, client_id=forms.text("client_id", 100), tool=forms.text("tool", 100),
                scopes=forms.lines("scopes"), arguments=forms.json_object("arguments"),
            )
        except ConfigurationError as e:
            return _page(400, test_error=describe(e), test_form=forms.echo())
        return _page(result=result, test_form=forms.echo())
