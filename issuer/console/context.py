"""What every console view needs: the service acting as the signed-in admin, and page rendering.

The console's views hold no logic of their own: they read a form, call
:class:`~issuer.admin.service.AdminService` exactly as the CLI and the admin
API do, and render the answer. The service is built per request with the
signed-in admin key as the actor, so the change log says who did what.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, render_template

from ..admin.credentials import AdminIdentity
from ..admin.service import AdminService
from .session import csrf_token

__all__ = ["render", "service", "signed_in"]


def signed_in() -> AdminIdentity:
    who: AdminIdentity = g.console_admin
    return who


def service() -> AdminService:
    ctx = current_app.extensions["issuer"]
    who = signed_in()
    return AdminService(ctx.db, ctx.keys, ctx.settings, actor=f"{who.actor} via console",
                        request_id=g.get("request_id"))


def render(template: str, status: int = 200, **values: Any) -> tuple[str, int]:
    """A page, with who is signed in (for the header and for hiding what the role may not do)."""
    who: AdminIdentity | None = g.get("console_admin")
    page = render_template(f"console/{template}", who=who, may_write=bool(who and who.may_write),
                           csrf=csrf_token(), **values)
    return page, status
