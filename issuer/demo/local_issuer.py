"""A throwaway issuer for the bare demo: its own SQLite database and keys in a temporary directory.

The demo must never touch the state of ``make run`` (``issuer.db``, ``keys/``)
nor anything the environment points at (``ISSUER_DATABASE_URL``,
``ISSUER_REDIS_URL``...): every setting is given explicitly, from its
documented default, so no ``ISSUER_*`` variable reaches it. It is set up the
way an admin would, through :mod:`issuer.registry` (what ``issuer init``,
``issuer idp|tool|client add`` and ``issuer policy apply`` call), and served
by the real app on a real socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ..app import create_app
from ..audit import query_audit
from ..audit_chain import VerifyResult, verify_audit
from ..db import Database
from ..keys import KeyStore
from ..migrate import upgrade
from ..models import AuditEvent
from ..registry import ScopeSpec, add_client, add_idp, add_tool, apply_policy
from ..settings import Settings
from .dev_idp import DevIdentityProvider
from .servers import BackgroundWsgi
from .world import (
    CLIENT_ID,
    FILES_RESOURCE,
    GATED_RESOURCE,
    GATED_TOOL,
    GATEWAY_CLIENT_ID,
    GATEWAY_RESOURCE,
    GATEWAY_RULES,
    IDP_NAME,
    MCP_RESOURCE,
    TICKETS_RESOURCE,
)

__all__ = ["LocalIssuer", "Registered", "register_world"]


class LocalIssuer:
    """The real issuer app, migrated and keyed in ``workdir``, served on 127.0.0.1 in a thread."""

    def __init__(self, workdir: Path) -> None:
        self._server = BackgroundWsgi()  # bound first: the issuer's URL names its port
        self.url = self._server.url
        values: dict[str, Any] = {name: field.default for name, field in Settings.model_fields.items()}
        values.update(url=self.url, port=self._server.port, database_url=f"sqlite:///{workdir / 'issuer.db'}",
                      keys_dir=workdir / "keys", allow_insecure_loopback=True, refresh_interval=0.0)
        self.settings = Settings(**values)
        self._app: Any = None
        self.db: Database | None = None
        try:
            upgrade(self.settings.database_url)
            self.keys = KeyStore(self.settings.keys_dir, retention=self.settings.key_retention, refresh_interval=0)
            self.keys.ensure(self.settings.signing_alg)
            self.db = Database(self.settings.database_url, pool_size=2)
            self._app = create_app(self.settings)
            self._server.start(self._app)
        except BaseException:
            self.close()
            raise

    @property
    def pepper(self) -> bytes:
        return self.keys.pepper()

    def audit_rows(self, after_id: int = 0) -> list[AuditEvent]:
        assert self.db is not None
        return query_audit(self.db, after_id=after_id, limit=10_000)

    def verify_audit(self) -> VerifyResult:
        assert self.db is not None
        return verify_audit(self.db, self.pepper)

    def close(self) -> None:
        self._server.close()
        if self._app is not None:
            self._app.extensions["issuer"].db.dispose()
        if self.db is not None:
            self.db.dispose()


class Registered(NamedTuple):
    secret: str  #: the helpdesk MCP server's client secret
    gateway_secret: str  #: the gateway's client secret
    policy_version: int


def register_world(issuer: LocalIssuer, idp: DevIdentityProvider, policy: str) -> Registered:
    """Trust the dev IdP, register both tools, the MCP server, the gateway and what it guards; apply ``policy``.

    The gateway's rules (``GATEWAY_RULES``) are appended to ``policy``: one
    policy document decides both paths.
    """
    assert issuer.db is not None
    db = issuer.db
    add_idp(db, name=IDP_NAME, issuer=idp.issuer, algorithms=("ES256",), attribute_claims=("projects",),
            allow_insecure_loopback=True, http_timeout=issuer.settings.http_timeout)
    add_tool(db, name="tickets", resource_uri=TICKETS_RESOURCE, description="the helpdesk's tickets API",
             scopes=[ScopeSpec("tickets:read", actions=("list",))])
    add_tool(db, name="files", resource_uri=FILES_RESOURCE, description="the file share",
             scopes=[ScopeSpec("files:read", actions=("read",))])
    _, secret = add_client(db, client_id=CLIENT_ID, resource_uri=MCP_RESOURCE, tools=("tickets", "files"),
                           pepper=issuer.pepper, name="helpdesk MCP server")
    add_tool(db, name=GATED_TOOL, resource_uri=GATED_RESOURCE, description="the helpdesk MCP server behind the gateway",
             scopes=[ScopeSpec("mcp:connect")] + [ScopeSpec(f"tool:{t}", actions=(t,))
                                                  for t in ("list_tickets", "read_file", "delete_ticket")])
    _, gateway_secret = add_client(db, client_id=GATEWAY_CLIENT_ID, resource_uri=GATEWAY_RESOURCE, tools=(GATED_TOOL,),
                                   pepper=issuer.pepper, name="MCP gateway")
    assert secret is not None and gateway_secret is not None
    version = apply_policy(db, policy + GATEWAY_RULES, source="issuer/demo/world.py", created_by="issuer demo")
    return Registered(secret, gateway_secret, version)
