"""Server-sent events, rewritten one event at a time: a list response on an SSE stream is filtered as it passes.

Only the stream of a list request goes through here; every other stream is
copied chunk by chunk. An event is forwarded as soon as its terminating
blank line arrives, so progress notifications and server requests on the
same stream are not held back.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

__all__ = ["EventTooLarge", "rewrite_events"]

_END: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE: Final = re.compile(rb"\r\n|\n|\r")


class EventTooLarge(ValueError):
    """One event grew beyond the bound: the stream is cut rather than buffered without limit."""


def _rewrite(block: bytes, transform: Callable[[Any], Any | None]) -> bytes:
    lines = _LINE.split(block)
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    if not data:
        return block + b"\n\n"
    try:
        message = json.loads(b"\n".join(data))
    except ValueError:
        return block + b"\n\n"
    replaced = transform(message)
    if replaced is None:
        return block + b"\n\n"
    head = [line for line in lines if not line.startswith(b"data:")]
    body = json.dumps(replaced, separators=(",", ":"), ensure_ascii=False).encode()
    return b"\n".join([*head, b"data: " + body]) + b"\n\n"


async def rewrite_events(chunks: AsyncIterator[bytes], transform: Callable[[Any], Any | None],
                         max_event: int = 8 * 1024 * 1024) -> AsyncIterator[bytes]:
    """Yield the stream with each event's JSON ``data`` passed through ``transform`` (None: unchanged)."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        out = []
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
    if buffer.strip():
        yield _rewrite(buffer, transform)
