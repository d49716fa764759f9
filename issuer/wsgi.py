"""``issuer serve``: the app under gunicorn, configured from the settings.

Each worker builds its own app after the fork (no preload), so no database
connection or lock crosses a fork.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

from .errors import ConfigurationError
from .logs import configure_logging
from .settings import Settings

__all__ = ["serve"]


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # options newer than the installed gunicorn are skipped
                self.cfg.set(key, value)

    def load(self) -> Any:
        import gc

        from .app import create_app

        app = create_app(self._settings)
        # A worker holds ~180,000 long-lived objects (Flask, Authlib, SQLAlchemy, the app). A full
        # collection walks them all: ~100 ms during which every thread of the worker stops, which is
        # what the slowest exchanges were waiting for. Frozen, they are never walked again.
        gc.collect()
        gc.freeze()
        return app


def _claim_port(host: str, port: int) -> None:
    """SO_REUSEPORT would let this server share a port another one already listens on, silently
    splitting its traffic; a plain bind first turns that into the usual error."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        socket.create_server((host, port), family=family).close()
    except OSError as e:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    configure_logging(settings.log_level)
    _claim_port(host, port)
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": settings.threads,
        "worker_class": "gthread" if settings.threads > 1 else "sync",
        "preload_app": False,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "limit_request_line": 8190,
        # Each worker listens on its own socket and the kernel spreads new connections over them: on
        # one shared socket, whichever worker woke first took a burst of connections, and a replica
        # could serve every client from one core while the other idled.
        "reuse_port": True,
        "control_socket_disable": True,  # replicas on one host must not fight over one socket path
    }
    # Every worker writes its metric values here; /metrics in any worker sums them all.
    metrics_dir = tempfile.mkdtemp(prefix="issuer-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _Gunicorn(settings, options).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
