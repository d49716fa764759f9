"""The MCP gateway: an inline policy point for MCP servers that do not verify capabilities themselves.

``issuer gateway`` serves :class:`Gateway`, an ASGI reverse proxy for MCP
Streamable HTTP. Users' tokens are judged by the issuer, every call is a
call-bound token exchange there (policy, argument constraints, rate limits
and the audit record, once), lists are filtered to what the user may use,
and the MCP server receives a capability naming the user instead of the
user's token. See docs/gateway.md.
"""

from .app import Gateway
from .config import GatewayConfig

__all__ = ["Gateway", "GatewayConfig"]
