"""JSON-RPC 2.0 messages as the gateway must judge them: one parse, one classification, typed errors.

The gateway decides on what it parsed and forwards what it decided on: the
message is re-serialised from the parsed value, so a parser difference
between the gateway and the MCP server (duplicate members, a byte-order
mark, non-finite numbers, invalid UTF-8) can never make the server execute
something other than what the gateway authorized. Input such a difference
could hide in is refused outright, by the project's one strict decoder
(:mod:`issuer.kernel.strictjson`): also a NUL or a lone surrogate, which the
issuer could not store in the audit record of the very call that carried
it, and nesting deeper than it documents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from ..kernel import strictjson
from ..kernel.strictjson import StrictJSONError

__all__ = [
    "CALL_METHODS",
    "HEADER_MISMATCH",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LIST_METHODS",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PASS_METHODS",
    "Message",
    "MessageError",
    "error_body",
    "parse_message",
]

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
#: MCP 2026-07-28 Streamable HTTP: a mirrored header (Mcp-Method, Mcp-Name, Mcp-Param-*) disagrees with the body.
HEADER_MISMATCH: Final = -32020

#: Methods that run something on the user's behalf: each one is an exchange at the issuer.
CALL_METHODS: Final = frozenset({"tools/call", "resources/read", "resources/subscribe", "prompts/get"})
#: Methods whose result the gateway filters to what the user may use.
LIST_METHODS: Final = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list"})
#: Methods that pass unchanged: they reveal nothing the lists do not and run nothing. Anything else is refused.
PASS_METHODS: Final = frozenset({
    "initialize", "ping", "completion/complete", "logging/setLevel", "resources/unsubscribe", "server/discover",
    "subscriptions/listen", "tasks/get", "tasks/list", "tasks/result", "tasks/cancel",
})


class MessageError(Exception):
    """A message the gateway refuses to forward; ``code`` is the JSON-RPC error code to answer with."""

    def __init__(self, code: int, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Message:
    """One JSON-RPC message from the client: a request, a notification or a response to the server."""

    value: dict[str, Any]
    method: str | None
    request_id: str | int | None
    params: dict[str, Any]

    @property
    def is_request(self) -> bool:
        return self.method is not None and self.request_id is not None

    def encode(self) -> bytes:
        return json.dumps(self.value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _request_id(value: dict[str, Any]) -> str | int | None:
    if "id" not in value:
        return None
    rid = value["id"]
    if isinstance(rid, bool) or not isinstance(rid, str | int) or (isinstance(rid, str) and len(rid) > 200):
        raise MessageError(INVALID_REQUEST, "id must be a string of at most 200 characters or an integer")
    return rid


def parse_message(body: bytes) -> Message:
    """Parse one POSTed message. Batches are refused: no supported protocol version has them."""
    try:
        value = strictjson.loads(body)
    except StrictJSONError as e:
        raise MessageError(PARSE_ERROR, f"the body is not JSON the gateway accepts: {e}") from None
    if isinstance(value, list):
        raise MessageError(INVALID_REQUEST, "JSON-RPC batches are not supported")
    if not isinstance(value, dict):
        raise MessageError(INVALID_REQUEST, "a JSON-RPC message must be an object")
    rid = _request_id(value)
    if value.get("jsonrpc") != "2.0":
        raise MessageError(INVALID_REQUEST, 'jsonrpc must be "2.0"', rid)
    method = value.get("method")
    if method is None:
        if rid is None or ("result" in value) == ("error" in value):
            raise MessageError(INVALID_REQUEST, "a message without a method must be a response with an id", rid)
        return Message(value, None, rid, {})
    if not isinstance(method, str) or not method or len(method) > 200:
        raise MessageError(INVALID_REQUEST, "method must be a non-empty string", rid)
    params = value.get("params", {})
    if not isinstance(params, dict):
        raise MessageError(INVALID_PARAMS, "params must be an object", rid)
    return Message(value, method, rid, params)


def error_body(request_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}, separators=(",", ":")).encode()
