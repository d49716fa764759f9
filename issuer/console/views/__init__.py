"""The console's pages, one module per area; each ``register`` adds its routes to the blueprint."""

from __future__ import annotations

from flask import Blueprint

from .admin_keys import register as register_admin_keys
from .audit import register as register_audit
from .auth import register as register_auth
from .clients import register as register_clients
from .idps import register as register_idps
from .overview import register as register_overview
from .policy import register as register_policy
from .revocation import register as register_revocation
from .tools import register as register_tools

__all__ = ["register_views"]


def register_views(bp: Blueprint) -> None:
    for register in (register_auth, register_overview, register_tools, register_clients, register_idps,
                     register_policy, register_audit, register_revocation, register_admin_keys):
        register(bp)
