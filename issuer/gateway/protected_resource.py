"""The gateway as an OAuth protected resource (RFC 9728, RFC 6750), as the MCP authorization spec requires."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from .config import GatewayConfig

__all__ = ["metadata_body", "metadata_url", "www_authenticate"]

def metadata_body(config: GatewayConfig) -> bytes:
    """RFC 9728 section 2: this resource, and the authorization server users get tokens from."""
    doc = {
        "resource": config.resource,
        "authorization_servers": [config.authorization_server or config.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP gateway",
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def metadata_url(config: GatewayConfig) -> str:
    """Derived from the resource identifier (RFC 9728 section 3.1), never from a Host header a client chose."""
    parts = urlsplit(config.resource)
    return f"{parts.scheme}://{parts.netloc}{config.metadata_path}"


def www_authenticate(config: GatewayConfig, error: str | None = None,
                     description: str | None = None) -> str:
    """RFC 6750 section 3 with RFC 9728 section 5.1's ``resource_metadata``; quoted values are plain ASCII."""
    parts = [f'resource_metadata="{metadata_url(config)}"']
    if error is not None:
        parts.append(f'error="{error}"')
    if description is not None:
        clean = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in description[:200])
        parts.append(f'error_description="{clean}"')
    return "Bearer " + ", ".join(parts)
