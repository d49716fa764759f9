"""Real servers for the demo's apps: in a background thread (the bare demo) or in the foreground (subcommands).

The bare demo binds every server to port 0 on 127.0.0.1 and reads back the
port the kernel chose, so it can run next to ``make run`` (port 8000) and
next to another demo without a race for "free" ports. Each background server
is stopped and its thread joined by ``close()``.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import uvicorn
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = ["BackgroundAsgi", "BackgroundWsgi", "serve_asgi", "serve_wsgi"]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_START_TIMEOUT = 15.0


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """The transcript is the bare demo's output; access lines would drown it."""


def _not_ready(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting\n"]


class BackgroundWsgi:
    """A threaded werkzeug server; ``app`` may be set after binding, when the app needs to know its own URL."""

    def __init__(self, app: WsgiApp | None = None) -> None:
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app or _not_ready, threaded=True,
                                                   request_handler=_QuietHandler)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self, app: WsgiApp | None = None) -> BackgroundWsgi:
        if app is not None:
            self._server.app = app
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"demo wsgi {self.url}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


class BackgroundAsgi:
    """uvicorn in a thread, lifespan included: the MCP SDK's session manager lives in it."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, http="h11", ws="none", lifespan="on", log_config=None, log_level="warning",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=f"demo asgi {self.url}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the MCP server did not start on {self.url}")
            time.sleep(0.01)

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def serve_wsgi(app: WsgiApp, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM; werkzeug's threaded server, with its access log.

    SIGTERM is turned into the Ctrl-C werkzeug already stops on: as PID 1 of a
    container, a process without a handler would ignore ``docker stop`` until
    it is killed.
    """
    server = make_server(host, port, app, threaded=True)
    signal.signal(signal.SIGTERM, _interrupt)
    server.serve_forever()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve_asgi(app: Any, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn handles both and shuts down gracefully)."""
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
