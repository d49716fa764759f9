"""The MCP server's answers the gateway filters: read as what they must be, or they never reach the client.

The answer to a list request is filtered to what the user may use. A filter
that meets something it cannot read must not pass it on: an answer in
another content type, a JSON array (a batch), a response with another id or
an id of another type (``1`` and ``"1"`` are different requests, and
``True == 1`` in Python), a result without the list, data that is not strict
JSON (duplicate members, ``NaN``: another parser may read another list).
Each of these becomes a JSON-RPC error to the client for its request and a
``gateway.answer_refused`` line in the security log.

On the server's own stream (``GET``), where a list result can be replayed
on resumption, an event the gateway cannot read is dropped and logged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from ..kernel import strictjson
from ..kernel.strictjson import StrictJSONError
from .decisions import UserGrant
from .jsonrpc import error_body
from .listing import LIST_KEYS, filter_result
from .mirrored import ToolSchemas
from .sse import DROP, UNREADABLE, StreamRefused

__all__ = ["UNCHECKED", "AnswerRefused", "ListAnswer", "stream_filter"]

#: The JSON-RPC error code and message the client gets for an answer the gateway could not check.
UNCHECKED: Final = (-32000, "the MCP server's answer could not be checked; it was not passed on")


class AnswerRefused(ValueError):
    """The answer cannot be read as the response to the request sent; the message says why, never what."""


def _same_id(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _is_server_message(value: dict[str, Any]) -> bool:
    """A request or notification of the server's (progress, sampling, logging): no result of any request."""
    return isinstance(value.get("method"), str) and "result" not in value and "error" not in value


class ListAnswer:
    """Reads the answer to one list request, as one JSON body or on its SSE stream."""

    def __init__(self, method: str, request_id: str | int, grant: UserGrant,
                 refused: Callable[[str], None], schemas: ToolSchemas | None = None) -> None:
        self.schemas = schemas  #: learns the input schema of each tool listed, for the Mcp-Param checks
        self.method = method
        self.request_id = request_id
        self.grant = grant
        self._refused = refused
        self._answered = False

    def error(self) -> bytes:
        return error_body(self.request_id, *UNCHECKED)

    def response(self, value: Any) -> dict[str, Any]:
        """The response, filtered and rebuilt from what was read; AnswerRefused when it is not the one expected."""
        if not isinstance(value, dict):
            raise AnswerRefused("not a JSON-RPC object")
        if value.get("jsonrpc") != "2.0" or "method" in value:
            raise AnswerRefused("not a JSON-RPC response")
        if ("result" in value) == ("error" in value):
            raise AnswerRefused("neither a result nor an error")
        if "error" in value:
            error = value["error"]
            if not (_same_id(value.get("id"), self.request_id) or value.get("id") is None):
                raise AnswerRefused("an error for another request")
            if not (isinstance(error, dict) and type(error.get("code")) is int and isinstance(error.get("message"),
                                                                                                str)):
                raise AnswerRefused("a malformed error")
            return {"jsonrpc": "2.0", "id": self.request_id,
                    "error": {"code": error["code"], "message": error["message"][:500]}}
        if not _same_id(value.get("id"), self.request_id):
            raise AnswerRefused("a response to another request")
        result = value["result"]
        if not isinstance(result, dict) or not isinstance(result.get(LIST_KEYS[self.method]), list):
            raise AnswerRefused(f"a result without the {LIST_KEYS[self.method]} list")
        filtered = filter_result(self.method, result, self.grant)
        if self.method == "tools/list" and self.schemas is not None:
            self.schemas.learn(filtered["tools"])
        return {"jsonrpc": "2.0", "id": self.request_id, "result": filtered}

    def json(self, raw: bytes) -> bytes:
        """The filtered JSON body, from the server's JSON body."""
        try:
            value = strictjson.loads(raw)
        except StrictJSONError as e:
            raise AnswerRefused(f"not JSON the gateway accepts ({e})") from None
        return _encode(self.response(value))

    def refuse(self, reason: str) -> None:
        self._refused(reason)

    # -- SSE --------------------------------------------------------------------------------------
    def event(self, message: Any) -> Any:
        """One event of the stream: the server's own messages pass, the response is filtered, anything else ends it."""
        if isinstance(message, dict) and _is_server_message(message):
            return None
        try:
            if message is UNREADABLE:
                raise AnswerRefused("an event that is not JSON the gateway accepts")
            if self._answered:
                raise AnswerRefused("a second response")
            replaced = self.response(message)
        except AnswerRefused as e:
            self._refused(str(e))
            raise StreamRefused(b"" if self._answered else _event(self.error())) from None
        self._answered = True
        return replaced

    def end(self) -> bytes:
        """A stream that ended without the response: the client gets the error rather than waiting."""
        if self._answered:
            return b""
        self._refused("the stream ended without the response")
        return _event(self.error())


def _event(data: bytes) -> bytes:
    return b"event: message\ndata: " + data + b"\n\n"


def stream_filter(grant: UserGrant, refused: Callable[[str], None]) -> Callable[[Any], Any]:
    """For the server's GET stream: a list result replayed there is filtered by its shape; unreadable is dropped."""

    def transform(message: Any) -> Any:
        if message is UNREADABLE or not isinstance(message, dict):
            refused("an event on the server's stream that is not one JSON-RPC message")
            return DROP
        result = message.get("result")
        if isinstance(result, dict):
            for method, key in LIST_KEYS.items():
                if key in result:
                    return {**message, "result": filter_result(method, result, grant)}
        return None

    return transform
