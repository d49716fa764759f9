"""The one connection pool to the MCP server, and streaming a response back without buffering it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import anyio
import httpx

from .asgi_io import Receive, Send

__all__ = ["FORWARDED_RESPONSE_HEADERS", "Upstream", "pump"]

#: Response headers the client may see; everything else (cookies, server banners, hop-by-hop) stays behind.
FORWARDED_RESPONSE_HEADERS: Final = ("content-type", "cache-control", "retry-after", "mcp-protocol-version",
                                     "x-accel-buffering")


class Upstream:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self._url = httpx.URL(url)  # parsed once, not per request
        # No proxies from the environment, no redirects, no cookies: the MCP server is one fixed address.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=5.0), trust_env=False, follow_redirects=False,
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )

    async def open(self, method: str, headers: Sequence[tuple[str, str]], body: bytes | None,
                   query: str = "") -> httpx.Response:
        url = self._url if not query else httpx.URL(f"{self.url}?{query}")
        request = self.client.build_request(method, url, headers=list(headers), content=body)
        return await self.client.send(request, stream=True)

    async def aclose(self) -> None:
        await self.client.aclose()


async def pump(receive: Receive, send: Send, chunks: AsyncIterator[bytes],
               on_error: Callable[[BaseException], Any] | None = None) -> None:
    """Copy ``chunks`` to the client as they come; stop early when the client goes away.

    Each chunk is sent as soon as it is read (no buffering), which is what
    lets a progress notification reach the client before the tool returns.
    """
    async with anyio.create_task_group() as tg:

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch_disconnect)
        try:
            async for chunk in chunks:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (httpx.HTTPError, OSError, ValueError) as e:  # the upstream broke off mid-stream
            if on_error is not None:
                on_error(e)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        tg.cancel_scope.cancel()
