"""The gateway's ASGI app: checks, decides, forwards, filters. One request at a time, no state but caches.

Order of checks for the MCP endpoint (each one ends the request when it fails):

1. method POST, GET or DELETE (405); no token in the query string (400);
   no repeated or malformed ``Authorization``, ``Mcp-Session-Id``,
   ``MCP-Protocol-Version`` or ``Content-Type`` header, a protocol version
   the gateway speaks, an ``Origin`` on the allowlist (400/403);
2. a bearer token (401 with the RFC 9728 ``resource_metadata``), valid and
   issued for this gateway as the issuer judges it (401 ``invalid_token``),
   whose user policy lets use this MCP server at all (403);
3. a session id, when sent, opened by this same user (404 as the MCP
   server itself would answer for an unknown session; audited);
4. for POST: ``application/json``, at most ``max_body`` bytes (413/415),
   one JSON-RPC message the strict decoder accepts (400);
5. mirrored headers (``Mcp-Method``, ``Mcp-Name``, ``Mcp-Param-*``) that
   agree with the body (400 HeaderMismatch; :mod:`.mirrored`);
6. the decision: a call method is a call-bound exchange at the issuer
   (a refusal is a JSON-RPC error, HTTP 200, the session stays usable);
   a list or pass method is forwarded with the user's session capability;
   any other method is refused (default deny).

What is forwarded is the decided message re-serialised, with mirrored
headers rebuilt from it; a list answer reaches the client only as
:mod:`.answers` reads it (:mod:`.relay`). An answer given before the body
was read to its end says ``Connection: close``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl

import anyio
import httpx
import mcp_types.version as mcp_versions

from .answers import ListAnswer, stream_filter
from .asgi_io import Headers, Receive, Scope, Send, send_json, send_response
from .config import GatewayConfig
from .decisions import RESOURCE_ACTION, CallRefused, Decider, NoGrant, Unauthenticated, Unavailable, UserGrant
from .jsonrpc import (
    CALL_METHODS,
    HEADER_MISMATCH,
    INVALID_REQUEST,
    LIST_METHODS,
    METHOD_NOT_FOUND,
    PASS_METHODS,
    Message,
    MessageError,
    error_body,
    parse_message,
)
from .mirrored import HeaderMismatch, ToolSchemas, mirrored_headers
from .protected_resource import metadata_body, www_authenticate
from .relay import REFUSED, UNAVAILABLE, Refusal, respond, respond_list, rpc_refusal
from .security_log import audit, digest
from .sessions import SessionBinder, SessionRefused
from .upstream import Upstream

__all__ = ["REFUSED", "UNAVAILABLE", "Gateway"]

log = logging.getLogger("issuer.gateway")

#: Protocol versions whose Streamable HTTP transport this gateway implements.
VERSIONS: Final = frozenset({"2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"}) & frozenset(
    mcp_versions.KNOWN_PROTOCOL_VERSIONS)
_FORWARDED_REQUEST_HEADERS: Final = ("accept", "last-event-id", "mcp-protocol-version")
_MAX_HEADER: Final = 8192


class Gateway:
    """``Gateway(config)`` is an ASGI app; run it under uvicorn (``issuer gateway``)."""

    def __init__(self, config: GatewayConfig, *, decider: Decider | None = None) -> None:
        self.config = config
        self.decider = decider or Decider(config)
        self.sessions = SessionBinder(config.session_key)
        self.tool_schemas = ToolSchemas()  # learnt from the tools/list answers relayed, for Mcp-Param checks
        self.upstream = Upstream(config.upstream, config.upstream_timeout)
        self._metadata = metadata_body(config)
        self._metadata_paths = {"/.well-known/oauth-protected-resource", config.metadata_path}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # WebSocket is no MCP transport
            await send({"type": "websocket.close", "code": 1008})
            return
        started = False
        # A body the gateway answers before reading to its end stays unread on the connection: the server
        # closes it after the answer, and the answer says so (Connection: close) rather than leave the client
        # to find out on its next request.
        headers = Headers(scope.get("headers", ()))
        body_unread = bool(headers.all("transfer-encoding")) or any(v.strip() != "0"
                                                                   for v in headers.all("content-length"))

        async def tracking_receive() -> MutableMapping[str, Any]:
            nonlocal body_unread
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_unread = False
            return message

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and body_unread:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            started = True
            await send(message)

        try:
            await self._http(scope, tracking_receive, tracking_send)
        except Refusal as r:
            if r.event is not None:
                audit(f"gateway.{r.event}", client=_client(scope), method=scope["method"], path=scope["path"])
            await send_response(tracking_send, r.status, r.body, headers=r.headers)
        except Exception as e:  # never a 500 and never a stack trace to the client
            log.error("gateway request failed: %s", type(e).__name__)
            if not started:
                await send_response(tracking_send, 502, error_body(None, UNAVAILABLE, "the gateway could not "
                                                                   "complete the request"))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.aclose()
                await self.decider.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing --------------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path in self._metadata_paths and method in ("GET", "HEAD"):
            await send_response(send, 200, self._metadata, headers=[("access-control-allow-origin", "*")])
        elif path == "/healthz" and method == "GET":
            await send_json(send, 200, {"status": "ok"})
        elif path == self.config.path:
            await self._mcp(scope, receive, send)
        else:
            await send_json(send, 404, {"error": "not_found"})

    # -- the MCP endpoint -------------------------------------------------------------------------
    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("POST", "GET", "DELETE"):
            raise rpc_refusal(405, INVALID_REQUEST, "method not allowed", headers=(("allow", "GET, POST, DELETE"),))
        headers = Headers(scope.get("headers", ()))
        query = scope.get("query_string", b"").decode("latin-1")
        self._check_query(query)
        token, session_id, version = self._check_headers(headers)
        grant = await self._authenticate(token)
        upstream_session = None
        if session_id is not None:
            try:
                upstream_session = self.sessions.open(grant.principal, session_id)
            except SessionRefused as e:
                audit("gateway.session_refused", user=grant.principal, session=digest(session_id), reason=str(e),
                      client=_client(scope), method=method)
                raise rpc_refusal(404, INVALID_REQUEST, "Session not found") from None
        # Mcp-Method, Mcp-Name and Mcp-Param-* are never the client's copies: a POST forwards them rebuilt
        # from the message decided on (.mirrored); a GET or DELETE has no message for them to mirror.
        forward = [(k, v) for k in _FORWARDED_REQUEST_HEADERS for v in headers.all(k)]
        if upstream_session is not None:
            forward.append(("mcp-session-id", upstream_session))
        forward.append(("accept-encoding", "identity"))
        del version
        if method == "POST":
            await self._post(scope, receive, send, headers, token, grant, forward, query)
        else:
            forward.append(("authorization", f"Bearer {grant.capability}"))
            transform = None if method == "DELETE" else stream_filter(grant, self._refused_answer(scope, grant))
            await self._forward(receive, send, method, forward, None, query, grant, transform)

    def _check_query(self, query: str) -> None:
        if not query:
            return
        try:
            names = {k.lower() for k, _ in parse_qsl(query, keep_blank_values=True, max_num_fields=50)}
        except ValueError:
            raise rpc_refusal(400, INVALID_REQUEST, "malformed query string") from None
        if "access_token" in names:
            raise Refusal(400, b'{"error":"invalid_request","error_description":"tokens are never accepted in the '
                               b'query string; send Authorization: Bearer"}', event="query_token")

    def _check_headers(self, headers: Headers) -> tuple[str | None, str | None, str | None]:
        try:
            authorization = headers.one("authorization")
            session_id = headers.one("mcp-session-id")
            version = headers.one("mcp-protocol-version")
            headers.one("content-type")
            origin = headers.one("origin")
        except ValueError as e:
            raise rpc_refusal(400, INVALID_REQUEST, f"bad request: {e}") from None
        for value in (authorization, session_id, version, origin):
            if value is not None and (len(value) > _MAX_HEADER or not (value.isascii() and value.isprintable())):
                raise rpc_refusal(400, INVALID_REQUEST, "bad request: a header has characters it may not contain")
        if session_id is not None and (not session_id or len(session_id) > 300 or " " in session_id):
            raise rpc_refusal(400, INVALID_REQUEST, "bad request: malformed Mcp-Session-Id")
        if version is not None and version not in VERSIONS:
            raise rpc_refusal(400, INVALID_REQUEST, "bad request: unsupported MCP-Protocol-Version")
        if origin is not None and origin not in self.config.allowed_origins:
            raise rpc_refusal(403, INVALID_REQUEST, "forbidden: this Origin may not use the gateway")
        token = None
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip() or " " in value.strip():
                raise self._unauthorized("invalid_token", "the Authorization header is not a bearer token")
            token = value.strip()
        return token, session_id, version

    def _unauthorized(self, error: str | None, description: str | None) -> Refusal:
        challenge = www_authenticate(self.config, error, description)
        body = (b'{"error":"invalid_token","error_description":"the access token is missing, invalid or not for '
                b'this resource"}' if error else b'{"error":"unauthorized","error_description":"an access token is '
                b'required"}')
        return Refusal(401, body, (("www-authenticate", challenge),))

    async def _authenticate(self, token: str | None) -> UserGrant:
        if token is None:
            raise self._unauthorized(None, None)
        try:
            grant = await self.decider.session(token)
        except Unauthenticated as e:
            raise self._unauthorized("invalid_token", e.description) from None
        except Unavailable as e:
            retry = (("retry-after", str(max(1, round(e.retry_after)))),) if e.retry_after else ()
            raise rpc_refusal(503, UNAVAILABLE, f"the gateway cannot decide now: {e.description}",
                              headers=retry) from None
        if isinstance(grant, NoGrant):
            challenge = www_authenticate(self.config, "insufficient_scope", "policy grants this user nothing here")
            raise Refusal(403, b'{"error":"insufficient_scope","error_description":"policy grants this user '
                               b'nothing on this MCP server"}', (("www-authenticate", challenge),))
        return grant

    async def _read_body(self, receive: Receive, headers: Headers) -> bytes:
        ctype = (headers.one("content-type") or "").lower()
        main, _, params = ctype.partition(";")
        if main.strip() != "application/json" or params.strip() not in ("", "charset=utf-8"):
            raise rpc_refusal(415, INVALID_REQUEST, "unsupported content type: POST application/json")
        limit = self.config.max_body
        length = headers.all("content-length")
        if length and (len(length) > 1 or not length[0].isdigit() or int(length[0]) > limit):
            raise rpc_refusal(413, INVALID_REQUEST, f"the body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise rpc_refusal(400, INVALID_REQUEST, "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise rpc_refusal(413, INVALID_REQUEST, f"the body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _post(self, scope: Scope, receive: Receive, send: Send, headers: Headers, token: str | None,
                    grant: UserGrant, forward: list[tuple[str, str]], query: str) -> None:
        body = await self._read_body(receive, headers)
        try:
            message = parse_message(body)
        except MessageError as e:
            raise rpc_refusal(400, e.code, e.message, e.request_id) from None
        try:
            mirrored = mirrored_headers(headers, message, self.tool_schemas)
        except HeaderMismatch as e:
            audit("gateway.header_mismatch", user=grant.principal, reason=str(e), client=_client(scope),
                  method=(message.method or "")[:60])
            raise rpc_refusal(400, HEADER_MISMATCH, f"header mismatch: {e}", message.request_id) from None
        capability = await self._decide(scope, message, token, grant)
        forward = [*forward, *mirrored, ("content-type", "application/json"), ("authorization", f"Bearer {capability}")]
        answer = None
        if message.method in LIST_METHODS and message.request_id is not None:
            answer = ListAnswer(message.method, message.request_id, grant, self._refused_answer(scope, grant),
                                self.tool_schemas)
        await self._forward(receive, send, "POST", forward, message.encode(), query, grant, answer)

    async def _decide(self, scope: Scope, message: Message, token: str | None, grant: UserGrant) -> str:
        """The capability this message is forwarded with, or a refusal."""
        m = message.method
        if m == "completion/complete" and message.is_request and not _may_complete(message.params, grant):
            raise Refusal(200, error_body(message.request_id, REFUSED, "completion for something this user may "
                                                                         "not use", {"reason": "not_permitted"}))
        if m is None or m in LIST_METHODS or m in PASS_METHODS or (m.startswith("notifications/")
                                                                  and not message.is_request):
            return grant.capability
        if m in CALL_METHODS and message.is_request:
            assert token is not None
            try:
                return await self.decider.call(token, m, message.params)
            except ValueError as e:
                raise rpc_refusal(200, -32602, f"invalid params: {e}", message.request_id) from None
            except CallRefused as e:
                raise Refusal(200, error_body(message.request_id, REFUSED, e.message, e.data())) from None
            except Unauthenticated as e:
                raise self._unauthorized("invalid_token", e.description) from None
            except Unavailable:
                raise rpc_refusal(200, UNAVAILABLE, "the issuer could not decide this call; try again later",
                                  message.request_id) from None
        audit("gateway.method_refused", user=grant.principal, method=m[:60], client=_client(scope))
        if not message.is_request:
            raise rpc_refusal(400, INVALID_REQUEST, "this notification is not allowed through the gateway")
        raise rpc_refusal(200, METHOD_NOT_FOUND, f"method {m[:60]} is not allowed through the gateway",
                          message.request_id)

    def _bind(self, grant: UserGrant) -> Callable[[str], str]:
        """Tags the MCP server's session id for this user (ValueError when it is malformed)."""
        return lambda upstream_session: self.sessions.bind(grant.principal, upstream_session)

    def _refused_answer(self, scope: Scope, grant: UserGrant) -> Callable[[str], None]:
        """Writes an MCP server answer the gateway did not relay to the security log, with why."""

        def refused(reason: str) -> None:
            audit("gateway.answer_refused", user=grant.principal, reason=reason, client=_client(scope),
                  method=scope["method"])
        return refused

    async def _forward(self, receive: Receive, send: Send, method: str, headers: list[tuple[str, str]],
                       body: bytes | None, query: str, grant: UserGrant, transform: Any) -> None:
        try:
            with anyio.fail_after(30):  # headers must come; the stream itself may last as long as the server wants
                resp = await self.upstream.open(method, headers, body, query)
        except (httpx.HTTPError, OSError, TimeoutError) as e:
            log.warning("MCP server unreachable: %s", type(e).__name__)
            raise rpc_refusal(502, UNAVAILABLE, "the MCP server is unreachable") from None
        try:
            if isinstance(transform, ListAnswer):
                await respond_list(receive, send, resp, self._bind(grant), transform)
            else:
                await respond(receive, send, resp, self._bind(grant), transform)
        finally:
            await resp.aclose()


def _may_complete(params: dict[str, Any], grant: UserGrant) -> bool:
    """Argument completion reveals a prompt's or resource template's values: only for what the user may use."""
    ref = params.get("ref")
    if not isinstance(ref, dict):
        return False
    if ref.get("type") == "ref/prompt":
        return isinstance(ref.get("name"), str) and f"prompt:{ref['name']}" in grant.actions
    if ref.get("type") == "ref/resource":
        return RESOURCE_ACTION in grant.actions
    return False


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}" if client else "-"

