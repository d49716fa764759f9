"""Small ASGI helpers: the request's headers as the gateway reads them, and whole responses."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

__all__ = ["ASGIApp", "Headers", "Message", "Receive", "Scope", "Send", "send_json", "send_response"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Headers:
    """Request headers by lower-case name, every value kept: a repeated header is visible, never merged."""

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in raw:
            self._values.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))

    def all(self, name: str) -> list[str]:
        return self._values.get(name, [])

    def one(self, name: str) -> str | None:
        """The header's value; ValueError when it is repeated (a proxy and a server may pick different ones)."""
        values = self._values.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise ValueError(f"{name} appears more than once")
        return values[0]

    def names(self) -> list[str]:
        return list(self._values)


async def send_response(send: Send, status: int, body: bytes, content_type: str = "application/json",
                        headers: Sequence[tuple[str, str]] = ()) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
           (b"cache-control", b"no-store")]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, value: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
    await send_response(send, status, json.dumps(value, separators=(",", ":")).encode(), headers=headers)
