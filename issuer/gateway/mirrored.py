"""MCP's mirrored headers: checked against the body, and rebuilt from it for the MCP server.

Streamable HTTP (MCP 2026-07-28) copies body fields into headers so that
intermediaries can route without parsing JSON: ``Mcp-Method`` (the method),
``Mcp-Name`` (``params.name`` or ``params.uri``) and ``Mcp-Param-{Name}``
(tool arguments a tool's schema marks with ``x-mcp-header``). A load
balancer, a WAF or the MCP server may act on a header while the gateway
decided on the body; a header that says something else than the body is
that attack. So it is refused (HTTP 400, ``HeaderMismatch`` -32020) before
anything is decided, and what is forwarded carries headers the gateway built
from the message it decided on, never the client's copies.

Which argument an ``Mcp-Param`` header mirrors is in the tool's
``inputSchema`` (``x-mcp-header``). The gateway learns each tool's schema
from the ``tools/list`` answers it relays (:class:`ToolSchemas`); for a tool
it has listed, the headers are checked exactly as the MCP server would
(the official SDK's own check) and rebuilt from the arguments. For a tool it
has not listed (another replica did, or the gateway restarted since), it
refuses a header whose value (after the ``=?base64?...?=`` decoding the
specification defines) is no argument value of the call at all, and
forwards the value as rendered from the arguments; the MCP server checks
the header against its schema, as the specification requires of every
server that reads the body.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Final

from mcp.shared.inbound import (
    decode_header_value,
    encode_header_value,
    mcp_param_headers,
    validate_mcp_param_headers,
    x_mcp_header_map,
)

from .asgi_io import Headers
from .jsonrpc import Message

__all__ = ["HeaderMismatch", "ToolSchemas", "mirrored_headers"]

PARAM_PREFIX: Final = "mcp-param-"
#: The body field ``Mcp-Name`` mirrors, per method.
NAME_FIELDS: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
                      "resources/subscribe": "uri", "resources/unsubscribe": "uri"}
_VERSION_META: Final = "io.modelcontextprotocol/protocolVersion"
#: RFC 9110 token: what may follow ``Mcp-Param-``.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A value sent as is: visible ASCII, inner spaces (RFC 9110 field values, the specification's plain form).
_PLAIN: Final = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
_INTEGRAL: Final = re.compile(r"-?[0-9]+\.0+")


class HeaderMismatch(ValueError):
    """A mirrored header contradicts the body, is repeated or malformed; the message names which, never a value."""


class ToolSchemas:
    """The ``inputSchema`` of each tool the gateway listed, by name (bounded, least recently listed out first).

    Tool definitions belong to the MCP server, not to a user, so one map
    serves every user; a tool the user may not see is never called anyway.
    Only schemas whose ``x-mcp-header`` annotations are valid get here: the
    list filter drops a tool with invalid ones, as the specification asks
    of clients.
    """

    def __init__(self, max_tools: int = 4096) -> None:
        self._schemas: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._max = max_tools

    def learn(self, tools: list[Any]) -> None:
        for tool in tools:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str) and isinstance(tool.get("inputSchema"),
                                                                                             dict):
                self._schemas[tool["name"]] = tool["inputSchema"]
                self._schemas.move_to_end(tool["name"])
        while len(self._schemas) > self._max:
            self._schemas.popitem(last=False)

    def get(self, name: str) -> dict[str, Any] | None:
        return self._schemas.get(name)


def _renderings(arguments: dict[str, Any]) -> Iterator[str]:
    """Each argument value reachable through object members, as a client mirrors it into a header."""
    stack: list[Any] = [arguments]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, bool):
            yield "true" if node else "false"
        elif isinstance(node, str):
            yield node
        elif isinstance(node, int):
            yield str(node)
        elif isinstance(node, float) and node.is_integer():
            yield str(int(node))


def _known_schema(schema: dict[str, Any], arguments: dict[str, Any], params: list[tuple[str, list[str]]],
                  strict: bool) -> list[tuple[str, str]]:
    """The tool's schema is known: the client's headers checked as the MCP server would, and rebuilt from it."""
    declared = {f"{PARAM_PREFIX}{token.lower()}" for token in x_mcp_header_map(schema).values()}
    if any(name not in declared for name, _ in params):
        raise HeaderMismatch("an Mcp-Param header the tool's schema does not declare")
    if params or strict:
        rejection = validate_mcp_param_headers(schema, arguments, {name: sent[0] for name, sent in params})
        if rejection is not None:
            raise HeaderMismatch(rejection.message)
    return list(mcp_param_headers(x_mcp_header_map(schema), arguments).items())


def _param_headers(message: Message, params: list[tuple[str, list[str]]], schemas: ToolSchemas | None,
                   strict: bool) -> list[tuple[str, str]]:
    arguments = message.params.get("arguments", {}) if message.method == "tools/call" else None
    if not isinstance(arguments, dict):
        if params:
            raise HeaderMismatch("Mcp-Param headers on a message that is no tools/call with arguments")
        return []
    for name, sent in params:
        if len(sent) != 1 or not _TOKEN.fullmatch(name[len(PARAM_PREFIX):]) or not _PLAIN.fullmatch(sent[0]):
            raise HeaderMismatch("an Mcp-Param header is repeated, has no valid name or a character it may not")
    tool = message.params.get("name")
    schema = schemas.get(tool) if schemas is not None and isinstance(tool, str) else None
    if schema is not None:
        return _known_schema(schema, arguments, params, strict)
    values = set(_renderings(arguments))
    out = []
    for name, sent in params:
        token = name[len(PARAM_PREFIX):]
        decoded = decode_header_value(sent[0])
        if decoded is not None and decoded not in values and _INTEGRAL.fullmatch(decoded):
            decoded = decoded.split(".", 1)[0]  # 42.0 mirrors the integer 42
        if decoded is None or decoded not in values:
            raise HeaderMismatch(f"Mcp-Param-{token[:40]} matches no argument of the call")
        out.append((f"Mcp-Param-{token}", encode_header_value(decoded)))
    return out


def mirrored_headers(headers: Headers, message: Message, schemas: ToolSchemas | None = None) -> list[tuple[str, str]]:
    """The mirrored headers to forward, built from ``message``; HeaderMismatch when the client's contradict it.

    ``schemas``: the tools' input schemas as listed, for the exact check of ``Mcp-Param`` headers.
    """
    try:
        method_sent = headers.one("mcp-method")
        name_sent = headers.one("mcp-name")
        version = headers.one("mcp-protocol-version")
    except ValueError as e:
        raise HeaderMismatch(str(e)) from None
    params = [(k, headers.all(k)) for k in headers.names() if k.startswith(PARAM_PREFIX)]
    if message.method is None:
        if method_sent is not None or name_sent is not None or params:
            raise HeaderMismatch("a response carries no Mcp-Method, Mcp-Name or Mcp-Param header")
        return []
    if not _PLAIN.fullmatch(message.method) or " " in message.method:
        raise HeaderMismatch("the method cannot be mirrored into Mcp-Method")
    if method_sent is not None and method_sent != message.method:
        raise HeaderMismatch("Mcp-Method does not match the body's method")
    meta = message.params.get("_meta")
    if version is not None and isinstance(meta, dict) and _VERSION_META in meta and meta[_VERSION_META] != version:
        raise HeaderMismatch("MCP-Protocol-Version does not match the body's protocol version")
    out = [("Mcp-Method", message.method)]
    field = NAME_FIELDS.get(message.method)
    name = message.params.get(field) if field is not None else None
    if name_sent is not None and (not isinstance(name, str) or not _PLAIN.fullmatch(name_sent)
                                  or decode_header_value(name_sent) != name):
        raise HeaderMismatch(f"Mcp-Name does not match the body's {field or 'name'}")
    if isinstance(name, str):
        out.append(("Mcp-Name", encode_header_value(name)))
    out += _param_headers(message, params, schemas, strict=version == "2026-07-28")
    return out
