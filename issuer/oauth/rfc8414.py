"""OAuth 2.0 Authorization Server Metadata (RFC 8414).

https://www.rfc-editor.org/rfc/rfc8414

Built once per process from the settings; clients find every endpoint here.
"""

from __future__ import annotations

from typing import Any

from ..dpop import ALGORITHMS as DPOP_ALGORITHMS
from ..identity.types import ASYMMETRIC_ALGORITHMS
from ..settings import Settings
from .rfc8693 import GRANT_TYPE, TokenExchangeGrant

__all__ = ["INTROSPECT_PATH", "JWKS_PATH", "REVOKE_PATH", "TOKEN_PATH", "WELL_KNOWN_PATH", "build_metadata"]

WELL_KNOWN_PATH = "/.well-known/oauth-authorization-server"
TOKEN_PATH = "/token"
JWKS_PATH = "/jwks.json"
INTROSPECT_PATH = "/introspect"
REVOKE_PATH = "/revoke"
REVOCATION_FEED_PATH = "/revocations"


def build_metadata(settings: Settings) -> dict[str, Any]:
    base = settings.url
    methods = list(TokenExchangeGrant.TOKEN_ENDPOINT_AUTH_METHODS)
    return {
        "issuer": base,
        "token_endpoint": base + TOKEN_PATH,
        "jwks_uri": base + JWKS_PATH,
        "introspection_endpoint": base + INTROSPECT_PATH,
        "revocation_endpoint": base + REVOKE_PATH,
        # Not registered with IANA: where verifiers poll for revoked capabilities (docs/api.md).
        "revocation_feed_endpoint": base + REVOCATION_FEED_PATH,
        "grant_types_supported": [GRANT_TYPE],
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": sorted(ASYMMETRIC_ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "response_types_supported": [],
        "authorization_details_types_supported": ["tool_invocation"],
        # RFC 9449 section 5.1: proofs made with these algorithms bind a capability to their key.
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
        "scopes_supported": [],
    }
