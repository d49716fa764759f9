"""What one gateway needs to know, checked once at start-up so a bad value never reaches a request."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from ..loopback import is_loopback

__all__ = ["DEFAULT_MAX_BODY", "GatewayConfig"]

DEFAULT_MAX_BODY: Final = 1024 * 1024


def _check_url(name: str, url: str, *, allow_insecure_loopback: bool = True) -> str:
    """The project's one loopback rule: https, or plain http to a loopback host only."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise ValueError(f"{name} {url[:200]!r} is not a URL") from None
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError(f"{name} must not carry user information or a fragment")
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and allow_insecure_loopback and is_loopback(parts.hostname):
        return url
    raise ValueError(f"{name} {url[:200]!r} must use https (plain http only to a loopback address)")


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's settings.

    ``resource`` is the gateway's own resource URI: the audience users'
    tokens must carry and the ``resource`` of its RFC 9728 metadata. It is
    also the resource URI the gateway's client registration at the issuer
    names, which is how the issuer enforces that audience.
    ``upstream_resource`` is the MCP server's resource URI as registered
    at the issuer (a tool whose actions are its MCP tool names): the
    ``aud`` of every capability the gateway forwards.
    """

    upstream: str
    resource: str
    issuer: str
    upstream_resource: str
    client_id: str
    client_secret: str = field(repr=False)
    path: str = "/mcp"
    max_body: int = DEFAULT_MAX_BODY
    #: Shared by every replica so a session opened on one is recognised on another; random per process otherwise.
    session_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    #: Origins a browser-based client may send (DNS-rebinding defence); an Origin not listed is refused.
    allowed_origins: tuple[str, ...] = ()
    #: Upper bound on how long a user's list filter is reused before the issuer is asked again.
    list_cache_seconds: float = 60.0
    #: Where users get their tokens (RFC 9728 ``authorization_servers``): their identity provider. Default: the issuer.
    authorization_server: str | None = None
    upstream_timeout: float = 300.0
    issuer_timeout: float = 5.0

    def __post_init__(self) -> None:
        _check_url("--upstream", self.upstream)
        _check_url("--issuer", self.issuer)
        for name, uri in (("--resource", self.resource), ("--upstream-resource", self.upstream_resource)):
            parts = urlsplit(uri)
            if not parts.scheme or not parts.netloc or parts.fragment or len(uri) > 2000:
                raise ValueError(f"{name} {uri[:200]!r} must be an absolute URI without a fragment")
        if not self.client_id:
            raise ValueError("--client-id must not be empty")
        if not self.client_secret:
            raise ValueError("the client secret is missing: set GATEWAY_CLIENT_SECRET")
        if not self.path.startswith("/") or "?" in self.path or "#" in self.path:
            raise ValueError("--path must be an absolute path such as /mcp")
        if not 1024 <= self.max_body <= 64 * 1024 * 1024:
            raise ValueError("--max-body must be between 1 KiB and 64 MiB")
        if len(self.session_key) < 32:
            raise ValueError("the session key must be at least 32 bytes")
        if self.list_cache_seconds < 0:
            raise ValueError("the list cache lifetime must be >= 0")

    @property
    def metadata_path(self) -> str:
        """RFC 9728 section 3.1: the well-known path with the resource's own path appended."""
        suffix = urlsplit(self.resource).path.rstrip("/")
        return "/.well-known/oauth-protected-resource" + suffix
