"""Server-sent events, rewritten one event at a time: a list response on an SSE stream is filtered as it passes.

Only the stream of a list request goes through here; every other stream is
copied chunk by chunk. An event is forwarded as soon as its terminating
blank line arrives, so progress notifications and server requests on the
same stream are not held back.

Each event's data is read with the project's strict decoder: data another
parser could read differently (a duplicate member, ``NaN``) reaches the
transform as :data:`UNREADABLE`, never as one parser's guess, and the
transform decides: refuse the stream (:class:`StreamRefused`), drop the
event (:data:`DROP`) or pass it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from ..kernel import strictjson
from ..kernel.strictjson import StrictJSONError

__all__ = ["DROP", "UNREADABLE", "EventTooLarge", "StreamRefused", "rewrite_events"]

#: What a transform receives for data that is not strict JSON.
UNREADABLE: Final = object()
#: What a transform returns to leave an event out.
DROP: Final = object()

_END: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE: Final = re.compile(rb"\r\n|\n|\r")


class StreamRefused(Exception):
    """Raised by a transform: the stream ends here, with ``final`` (an error event, or nothing) as its last bytes."""

    def __init__(self, final: bytes) -> None:
        super().__init__("stream refused")
        self.final = final


class EventTooLarge(ValueError):
    """One event grew beyond the bound: the stream is cut rather than buffered without limit."""


def _rewrite(block: bytes, transform: Callable[[Any], Any | None]) -> bytes:
    lines = _LINE.split(block)
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    if not b"".join(data).strip():  # no data, or the empty data of a resumable stream's priming event
        return block + b"\n\n"
    try:
        message = strictjson.loads(b"\n".join(data))
    except StrictJSONError:
        message = UNREADABLE
    replaced = transform(message)
    if replaced is None:
        return block + b"\n\n"
    if replaced is DROP:
        return b""
    head = [line for line in lines if not line.startswith(b"data:")]
    body = json.dumps(replaced, separators=(",", ":"), ensure_ascii=False).encode()
    return b"\n".join([*head, b"data: " + body]) + b"\n\n"


async def rewrite_events(chunks: AsyncIterator[bytes], transform: Callable[[Any], Any | None],
                         max_event: int = 8 * 1024 * 1024,
                         at_end: Callable[[], bytes] | None = None) -> AsyncIterator[bytes]:
    """Yield the stream with each event's JSON ``data`` passed through ``transform`` (None: unchanged).

    ``at_end`` gives the bytes to close a stream that ended by itself with
    (a list stream that never carried its answer ends with an error event).
    """
    buffer = b""
    out: list[bytes] = []
    try:
        async for chunk in chunks:
            buffer += chunk
            while True:
                m = _END.search(buffer)
                if m is None:
                    break
                out.append(_rewrite(buffer[: m.start()], transform))
                buffer = buffer[m.end():]
            if len(buffer) > max_event:
                raise EventTooLarge("an SSE event exceeds the gateway's bound")
            if out:
                yield b"".join(out)
                out = []
        if buffer.strip():
            out.append(_rewrite(buffer, transform))
        if at_end is not None:
            out.append(at_end())
    except StreamRefused as e:
        out.append(e.final)
    if any(out):
        yield b"".join(out)
