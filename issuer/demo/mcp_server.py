"""The helpdesk MCP server: the would-be confused deputy, built with the official ``mcp`` SDK.

It accepts a user's token only when the token was issued for this server
(its resource URI in ``aud``), and it never forwards that token. Each tool
call is exchanged at the issuer (:mod:`issuer.sdk.client`) for a capability
bound to exactly that call's arguments, and the upstream receives only the
capability. Whatever a prompt injection makes the model ask for, the
capability can only be what policy grants the *user*; the server's own
registration grants nothing by itself.

A refusal reaches the model as a tool error (``ToolError``) that names the
component that refused and why: ``refused by the issuer: invalid_scope: ...``
or ``refused by the files API: HTTP 403 insufficient_scope: ...``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
import jwt
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..loopback import is_loopback
from ..sdk.client import ClientSecret, ExchangeClient, ExchangeError
from ..sdk.client.httpx_auth import CapabilityAuth
from .world import FILES_RESOURCE, MCP_RESOURCE, TICKETS_RESOURCE

__all__ = ["MCP_PATH", "UserTokenVerifier", "build_mcp_app", "refusal"]

MCP_PATH: Final = "/mcp"
_USER_TOKEN_ALGORITHMS: Final = ["ES256", "RS256", "EdDSA"]
_JWKS_REFETCH_COOLDOWN: Final = 10.0


def refusal(who: str, why: str) -> ToolError:
    """The one shape of a refusal, so a model (and the demo's transcript) can tell who said no."""
    return ToolError(f"refused by the {who}: {why}")


class UserTokenVerifier:
    """The MCP server's check of its callers: tokens issued for this server, by the identity provider.

    ``jwks`` is the provider's JWKS URL, a path to a JWK Set file, or None to
    find ``jwks_uri`` in the provider's OpenID discovery document. Keys are
    cached and fetched again (at most every 10 s) when a token names an
    unknown ``kid``: the provider rotated.

    Without ``idp_issuer`` the server has no keys to check signatures with
    (a compose file that does not say which provider its users come from).
    It then checks what it can, ``aud`` and ``exp``, and leaves the
    signature and the trust in the provider to the issuer, which verifies
    the token at every tool call's exchange and refuses a forged one with
    ``invalid_grant``; nothing reaches an upstream without that exchange. So
    that a forged token cannot join someone else's MCP session, the session
    is then bound to the exact token (its digest is the principal), not to
    the ``sub`` it claims.
    """

    def __init__(self, *, idp_issuer: str | None, audience: str, jwks: str | None = None) -> None:
        if idp_issuer is not None:
            _check_url("--idp", idp_issuer)
        elif jwks is not None:
            raise ValueError("--idp-jwks needs --idp: the issuer the keys belong to")
        self.issuer = idp_issuer
        self.audience = audience
        self._static: jwt.PyJWKSet | None = None
        self._jwks_uri: str | None = None
        if jwks is not None and not jwks.startswith(("http://", "https://")):
            self._static = jwt.PyJWKSet.from_dict(json.loads(Path(jwks).read_text(encoding="utf-8")))
        elif jwks is not None:
            _check_url("--idp-jwks", jwks)
            self._jwks_uri = jwks
        self._keys: jwt.PyJWKSet | None = self._static
        self._fetched_at = -1e18
        self._lock = threading.Lock()

    @property
    def checks_signatures(self) -> bool:
        return self.issuer is not None

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await anyio.to_thread.run_sync(self._decode, token)
        except (jwt.PyJWTError, httpx.HTTPError, ValueError, KeyError):
            return None  # the SDK answers 401 invalid_token
        principal = str(claims.get("client_id", ""))
        if not self.checks_signatures:
            principal = "unverified-token:" + hashlib.sha256(token.encode()).hexdigest()
        return AccessToken(token=token, client_id=principal, scopes=[], expires_at=int(claims["exp"]),
                           resource=self.audience, subject=str(claims["sub"]), claims=claims)

    def _decode(self, token: str) -> dict[str, Any]:
        required = ["exp", "iss", "aud", "sub"]
        if self.issuer is None:
            unverified: dict[str, Any] = jwt.decode(
                token, audience=self.audience, leeway=30,
                options={"require": required, "verify_signature": False, "verify_exp": True, "verify_aud": True},
            )
            return unverified
        kid = jwt.get_unverified_header(token).get("kid")
        claims: dict[str, Any] = jwt.decode(
            token, self._key(kid), algorithms=_USER_TOKEN_ALGORITHMS, audience=self.audience, issuer=self.issuer,
            leeway=30, options={"require": required},
        )
        return claims

    def _key(self, kid: Any) -> jwt.PyJWK:
        with self._lock:
            for attempt in range(2):
                keys = self._keys
                if keys is not None:
                    for key in keys.keys:
                        if key.key_id == kid:
                            return key
                stale = time.monotonic() - self._fetched_at > _JWKS_REFETCH_COOLDOWN
                if self._static is not None or attempt or not stale:
                    break
                self._keys = self._fetch()
                self._fetched_at = time.monotonic()
        raise jwt.InvalidKeyError("no key of the identity provider matches the token's kid")

    def _fetch(self) -> jwt.PyJWKSet:
        assert self.issuer is not None
        with httpx.Client(timeout=5, trust_env=False, follow_redirects=False) as http:
            if self._jwks_uri is None:
                doc = http.get(f"{self.issuer.rstrip('/')}/.well-known/openid-configuration").raise_for_status().json()
                if doc.get("issuer") != self.issuer or not isinstance(doc.get("jwks_uri"), str):
                    raise ValueError("the identity provider's discovery document does not match --idp")
                _check_url("jwks_uri", doc["jwks_uri"])
                self._jwks_uri = doc["jwks_uri"]
            return jwt.PyJWKSet.from_dict(http.get(self._jwks_uri).raise_for_status().json())


def _check_url(name: str, url: str) -> None:
    """The project's one loopback rule: https, or plain http to a loopback host only."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return
    raise ValueError(f"{name} {url!r} must be https (plain http only for a loopback host)")


def build_mcp_app(
    *,
    issuer: str,
    upstream: str,
    client_id: str,
    client_secret: str,
    idp_issuer: str | None,
    idp_jwks: str | None = None,
    resource: str = MCP_RESOURCE,
    host: str = "127.0.0.1",
) -> Starlette:
    """The Streamable HTTP app at ``/mcp``, with ``/healthz``; raises ValueError on unusable URLs."""
    _check_url("--upstream", upstream)
    exchange = ExchangeClient(issuer=issuer, client_id=client_id, credentials=ClientSecret(client_secret),
                              allow_insecure_loopback=True, timeout=5)
    users = UserTokenVerifier(idp_issuer=idp_issuer, audience=resource, jwks=idp_jwks)
    server = MCPServer(
        "helpdesk",
        instructions="Helpdesk tools. Every call runs with the signed-in user's own rights, never the server's.",
        token_verifier=users,
        # RFC 9728 metadata names where users get tokens; without --idp, the issuer is the one that judges them.
        auth=AuthSettings.model_validate({"issuer_url": idp_issuer or issuer, "resource_server_url": resource,
                                          "validate_token_resource": True}),
        log_level="WARNING",
    )
    base = upstream.rstrip("/")

    @server.tool()
    async def list_tickets(project: str) -> dict[str, Any]:
        """List the tickets of one project (for example "apollo"), as the signed-in user may see them."""
        auth = CapabilityAuth(exchange, _user_token(), tool=TICKETS_RESOURCE, scope="tickets:read",
                              actions=["list"], arguments={"project": project})
        return await _call("tickets API", auth, "GET", f"{base}/tickets", params={"project": project})

    @server.tool()
    async def read_file(path: str) -> dict[str, Any]:
        """Read one file of the file share by its absolute path, as the signed-in user may."""
        auth = CapabilityAuth(exchange, _user_token(), tool=FILES_RESOURCE, scope="files:read",
                              actions=["read"], arguments={"path": path})
        return await _call("files API", auth, "POST", f"{base}/files/read", json={"path": path})

    app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=host)
    app.router.routes.append(Route("/healthz", _healthz, methods=["GET"]))
    return app


async def _healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _user_token() -> str:
    access = get_access_token()  # as the SDK's bearer middleware admitted it: issued for this server
    if access is None:
        raise refusal("MCP server", "no authenticated user")
    return access.token


async def _call(api: str, auth: CapabilityAuth, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(auth=auth, timeout=10, trust_env=False) as http:
            resp = await http.request(method, url, **kwargs)
    except ExchangeError as e:  # no capability: the upstream never hears of this call
        raise refusal("issuer", str(e)) from None
    except httpx.HTTPError as e:
        raise refusal("MCP server", f"the {api} is unreachable ({type(e).__name__})") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400 or not isinstance(body, dict):
        err = body if isinstance(body, dict) else {}
        raise refusal(api, f"HTTP {resp.status_code} {err.get('error', 'error')}: {err.get('error_description', '')}")
    return body


if TYPE_CHECKING:  # mypy proves the verifier satisfies the SDK's protocol

    def _conforms(verifier: UserTokenVerifier) -> TokenVerifier:
        return verifier
