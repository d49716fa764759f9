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

The gateway does not know the tools' schemas, so it cannot tell which
argument an ``Mcp-Param`` header mirrors. It refuses one whose value (after
the ``=?base64?...?=`` decoding the specification defines) is no argument
value of the call at all, and forwards the value as rendered from that
argument; the MCP server checks the header against its schema, as the
specification requires of every server that reads the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from mcp.shared.inbound import decode_header_value, encode_header_value

from .asgi_io import Headers
from .jsonrpc import Message

__all__ = ["HeaderMismatch", "mirrored_headers"]

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


def _param_headers(message: Message, params: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    arguments = message.params.get("arguments") if message.method == "tools/call" else None
    if not isinstance(arguments, dict):
        raise HeaderMismatch("Mcp-Param headers on a message that is no tools/call with arguments")
    values = set(_renderings(arguments))
    out = []
    for name, sent in params:
        token = name[len(PARAM_PREFIX):]
        if len(sent) != 1 or not _TOKEN.fullmatch(token):
            raise HeaderMismatch("an Mcp-Param header is repeated or has no valid name")
        decoded = decode_header_value(sent[0]) if _PLAIN.fullmatch(sent[0]) else None
        if decoded is not None and decoded not in values and _INTEGRAL.fullmatch(decoded):
            decoded = decoded.split(".", 1)[0]  # 42.0 mirrors the integer 42
        if decoded is None or decoded not in values:
            raise HeaderMismatch(f"Mcp-Param-{token[:40]} matches no argument of the call")
        out.append((f"Mcp-Param-{token}", encode_header_value(decoded)))
    return out


def mirrored_headers(headers: Headers, message: Message) -> list[tuple[str, str]]:
    """The mirrored headers to forward, built from ``message``; HeaderMismatch when the client's contradict it."""
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
    if params:
        out += _param_headers(message, params)
    return out
