"""Serve WSGI and ASGI apps for real on 127.0.0.1, each in a daemon thread on a port the kernel picks.

* :class:`WsgiServer`: werkzeug's threaded server (as the live issuer uses);
* :class:`AsgiServer`: uvicorn, with the app's lifespan run (an MCP server
  needs it: its session manager lives there);
* :class:`RecordedWsgi`, :class:`RecordedAsgi`: wrap an app and record every
  request that reaches it, refused or not, so a test can prove a request never came.

``close()`` stops the server and joins its thread; fixtures call it in teardown.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import uvicorn
from werkzeug.serving import make_server

__all__ = ["AsgiServer", "Recorded", "RecordedAsgi", "RecordedWsgi", "SeenRequest", "WsgiServer"]

_START_TIMEOUT = 10.0


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    authorization: str | None


class Recorded:
    """Every request that reached an app, refused or not, in order of arrival."""

    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()

    def record(self, method: str, path: str, authorization: str | None) -> None:
        with self._lock:
            self.requests.append(SeenRequest(method, path, authorization))

    @property
    def authorizations(self) -> list[str | None]:
        return [r.authorization for r in self.requests]


class RecordedWsgi(Recorded):
    """A WSGI app that records each request before passing it on."""

    def __init__(self, app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]) -> None:
        super().__init__()
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.record(environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("HTTP_AUTHORIZATION"))
        return self.app(environ, start_response)


class RecordedAsgi(Recorded):
    """An ASGI app that records each HTTP request before passing it on."""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http":
            values = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"authorization"]
            self.record(scope["method"], scope["path"], values[0] if values else None)
        await self.app(scope, receive, send)


class WsgiServer:
    def __init__(self, app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"wsgi {self.url}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class AsgiServer:
    def __init__(self, app: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, http="h11", ws="none", lifespan="auto", log_config=None, log_level="warning",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=f"asgi {self.url}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:  # lifespan startup done and the socket listening
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        if self._thread.is_alive():
            raise RuntimeError(f"uvicorn on {self.url} did not stop")
