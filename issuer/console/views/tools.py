"""Tools and their scopes: list, register, edit, disable."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, url_for
from werkzeug.wrappers import Response

from ...errors import ConfigurationError, UnknownObject, describe
from .. import forms
from ..context import render, service

__all__ = ["register"]


_NOTICES = {"added": "Tool registered. Nobody can reach it until a policy grants it.", "saved": "Changes saved.",
            "status": "Status changed."}


def _scopes(raw: str) -> list[dict[str, Any]]:
    """One scope per line, ``name`` or ``name = action, action`` (the CLI's --scope and --action)."""
    out = []
    for line in raw.splitlines():
        name, _, actions = line.partition("=")
        if name.strip():
            out.append({"name": name.strip(), "actions": [a for a in forms.lines_of(actions) if a]})
    return out


def register(bp: Blueprint) -> None:
    @bp.get("/tools")
    def tools() -> tuple[str, int]:
        return render("tools.html", tools=service().list_tools(), form={})

    @bp.post("/tools")
    def tool_add() -> Response | tuple[str, int]:
        try:
            tool = service().add_tool(
                name=forms.text("name", 100), resource_uri=forms.text("resource_uri", 1000),
                description=forms.text("description", 1000), rate_limit=forms.optional("rate_limit", 100),
                redact_arguments=forms.lines("redact_arguments"), hash_arguments=forms.lines("hash_arguments"),
                scopes=_scopes(forms.text("scopes", 20_000)),
            )
        except ConfigurationError as e:
            return render("tools.html", 400, tools=service().list_tools(), error=describe(e), form=forms.echo())
        return redirect(url_for("console.tool_edit", name=tool["name"], done="added"), 303)

    @bp.route("/tools/<name>", methods=["GET", "POST"])
    def tool_edit(name: str) -> Response | tuple[str, int]:
        try:
            tool = service().get_tool(name)
        except UnknownObject as e:
            return render("missing.html", 404, message=describe(e))
        if forms.is_get():
            return render("tool.html", tool=tool, notice=_NOTICES.get(forms.arg("done") or ""))
        try:
            service().update_tool(
                name, description=forms.text("description", 1000), rate_limit=forms.text("rate_limit", 100),
                redact_arguments=forms.lines("redact_arguments"), hash_arguments=forms.lines("hash_arguments"),
                add_scopes=_scopes(forms.text("add_scopes", 20_000)),
            )
        except ConfigurationError as e:
            return render("tool.html", 400, tool=tool, error=describe(e), form=forms.echo())
        return redirect(url_for("console.tool_edit", name=name, done="saved"), 303)

    @bp.post("/tools/<name>/enabled")
    def tool_enabled(name: str) -> Response | tuple[str, int]:
        try:
            service().set_tool_enabled(name, forms.text("enabled") == "true")
        except UnknownObject as e:
            return render("missing.html", 404, message=describe(e))
        return redirect(url_for("console.tool_edit", name=name, done="status"), 303)
