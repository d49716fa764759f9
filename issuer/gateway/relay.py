"""Refusals, and the MCP server's answers relayed to the client.

A refusal is an exception carrying the whole HTTP answer, so that any check
at any depth ends the request the same way. The answer to a list request is
relayed only as :class:`~.answers.ListAnswer` reads it; every other answer
as it comes, with only the headers the client may see and the MCP server's
session id tagged for the user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import httpx

from .answers import AnswerRefused, ListAnswer
from .asgi_io import Receive, Send
from .jsonrpc import error_body
from .sse import rewrite_events
from .upstream import FORWARDED_RESPONSE_HEADERS, pump

__all__ = ["REFUSED", "UNAVAILABLE", "Refusal", "answer_headers", "read_bounded", "respond", "respond_list",
           "rpc_refusal"]

log = logging.getLogger("issuer.gateway")

#: JSON-RPC error codes of the gateway's refusals (the implementation-defined server range).
REFUSED: Final = -32001
UNAVAILABLE: Final = -32000
#: The largest JSON answer read whole.
_MAX_ANSWER: Final = 16 * 1024 * 1024


class Refusal(Exception):
    """An HTTP-level refusal: status, body and headers."""

    def __init__(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = (),
                 event: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers
        self.event = event


def rpc_refusal(status: int, code: int, message: str, request_id: Any = None, **kw: Any) -> Refusal:
    return Refusal(status, error_body(request_id, code, message), **kw)


def answer_headers(resp: httpx.Response, bind: Callable[[str], str],
                   names: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    """The answer's headers the client may see, the session id tagged for the user (``bind``)."""
    if resp.status_code in (401, 403):
        log.warning("the MCP server refused the gateway's capability (HTTP %d)", resp.status_code)
        raise rpc_refusal(502, UNAVAILABLE, "the MCP server refused the gateway's capability")
    out = [(k.encode(), v.encode("latin-1")) for k in names for v in resp.headers.get_list(k)]
    upstream_session = resp.headers.get("mcp-session-id")
    if upstream_session is not None:
        try:
            out.append((b"mcp-session-id", bind(upstream_session).encode()))
        except ValueError:
            raise rpc_refusal(502, UNAVAILABLE, "the MCP server sent a malformed session id") from None
    return out


async def respond_list(receive: Receive, send: Send, resp: httpx.Response, bind: Callable[[str], str],
                       answer: ListAnswer) -> None:
    """The answer to a list request: filtered if it reads as that request's response, an error otherwise."""
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "text/event-stream" and resp.status_code == 200:
        out = answer_headers(resp, bind, FORWARDED_RESPONSE_HEADERS)
        await send({"type": "http.response.start", "status": 200, "headers": out})
        chunks = rewrite_events(resp.aiter_raw(), answer.event, at_end=answer.end)
        await pump(receive, send, chunks, lambda e: log.info("stream from the MCP server ended: %s",
                                                             type(e).__name__))
        return
    out = answer_headers(resp, bind, tuple(h for h in FORWARDED_RESPONSE_HEADERS if h != "content-type"))
    status = resp.status_code if 200 <= resp.status_code < 500 else 502
    raw = await read_bounded(resp, _MAX_ANSWER)
    try:
        if ctype != "application/json":
            raise AnswerRefused(f"an answer of content type {ctype[:60] or 'none'}")
        body = answer.json(raw)
    except AnswerRefused as e:
        answer.refuse(str(e))
        body, status = answer.error(), (resp.status_code if 400 <= resp.status_code < 500 else 502)
    out += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def respond(receive: Receive, send: Send, resp: httpx.Response, bind: Callable[[str], str],
                  transform: Any) -> None:
    """Any other answer, as it comes: one JSON body whole, a stream chunk by chunk (``transform``: its events)."""
    out = answer_headers(resp, bind, FORWARDED_RESPONSE_HEADERS)
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":  # one message: nothing to stream, so no copy loop to run
        body = await read_bounded(resp, _MAX_ANSWER)
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
    chunks = resp.aiter_raw()
    if transform is not None and ctype == "text/event-stream":
        chunks = rewrite_events(chunks, transform)
    await pump(receive, send, chunks, lambda e: log.info("stream from the MCP server ended: %s",
                                                         type(e).__name__))


async def read_bounded(resp: httpx.Response, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in resp.aiter_raw():
        size += len(chunk)
        if size > limit:
            raise rpc_refusal(502, UNAVAILABLE, "the MCP server's answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)
