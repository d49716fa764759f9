"""Exchange client SDK: turn a user's token into a capability for one upstream tool.

An MCP server never forwards the token its MCP client sent. It exchanges it
at the issuer (RFC 8693 token exchange) for a short-lived capability naming
the user, this server as actor, exactly one tool and the granted scopes, and
sends that capability to the tool instead::

    from issuer.sdk.client import ClientSecret, ExchangeClient, InvalidGrant, IssuerUnavailable

    exchange = ExchangeClient(                       # one per process; thread-safe
        issuer="https://issuer.example",
        client_id="mcp-helpdesk",
        credentials=ClientSecret(os.environ["CLIENT_SECRET"]),
    )

    try:
        cap = exchange.exchange(user_token, tool="https://tickets.example", scope="tickets:read")
    except InvalidGrant:          # the user's token was refused: answer the MCP client 401
        ...
    except IssuerUnavailable:     # retry later
        ...
    headers = {"Authorization": f"Bearer {cap.access_token}"}   # to the tool; never the user's token

Capabilities are cached per user, tool, scopes, actions and constraints
until ``refresh_margin`` seconds before they expire, so calling
``exchange`` before every tool call costs one HTTP request per user and tool
every few minutes. A capability bound to one call (``arguments=...``) is
never cached.

With httpx, :class:`issuer.sdk.client.httpx_auth.CapabilityAuth` attaches
the capability to every request and retries once with a fresh one on a 401.

Importing this package needs only the standard library, PyJWT and
cryptography. Errors form one tree under :class:`ExchangeError`, drawn in
``issuer/sdk/client/_errors.py``; messages and reprs never contain a token
or a secret.
"""

from ._capability import ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, IssuedCapability
from ._client import ExchangeClient
from ._credentials import ClientSecret, PrivateKeyJwt
from ._dpop import DPoPKey
from ._errors import (
    DiscoveryError,
    ExchangeError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    IssuerUnavailable,
    ProtocolError,
    RateLimited,
    UnauthorizedClient,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "JWT_TOKEN_TYPE",
    "ClientSecret",
    "DPoPKey",
    "DiscoveryError",
    "ExchangeClient",
    "ExchangeError",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "IssuedCapability",
    "IssuerUnavailable",
    "PrivateKeyJwt",
    "ProtocolError",
    "RateLimited",
    "UnauthorizedClient",
]

# Public names report this package as their home (as httpx does), so reprs and
# tracebacks say ``issuer.sdk.client.InvalidGrant``, not a private module.
_locals = locals()
for _name in __all__:
    if not _name.isupper():
        _locals[_name].__module__ = __name__
del _locals, _name
