"""A TCP proxy on 127.0.0.1 that tests put in front of PostgreSQL or Redis to inject network faults.

* :meth:`FaultProxy.freeze` stops relaying on every connection, open or new, without closing any: what a
  failover moving an address or a firewall dropping packets looks like to a client (its writes are
  accepted by the local kernel, no answer ever comes);
* :meth:`FaultProxy.cut` closes every open connection at once (a reset), as a restart of the peer or a
  ``pg_terminate_backend`` would;
* :meth:`FaultProxy.resume` relays again, what was held included.

One thread per direction per connection: a test opens a handful of connections, never thousands.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from types import TracebackType

__all__ = ["FaultProxy"]


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._relaying = threading.Event()
        self._relaying.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0  #: connections clients opened through the proxy
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        from sqlalchemy.engine import make_url

        if url.startswith(("redis://", "rediss://")):
            scheme, rest = url.split("://", 1)
            path = rest.split("/", 1)[1] if "/" in rest else ""
            return f"{scheme}://127.0.0.1:{self.port}/{path}"
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    @property
    def frozen(self) -> bool:
        return not self._relaying.is_set()

    def freeze(self) -> None:
        self._relaying.clear()

    def resume(self) -> None:
        self._relaying.set()

    def cut(self) -> None:
        """Reset every open connection (the proxy keeps accepting new ones)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _reset(sock)

    def close(self) -> None:
        self._closed.set()
        self._relaying.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy src to dst; while frozen read nothing, so whatever is sent waits in the kernel's buffers."""
        try:
            while not self._closed.is_set():
                self._relaying.wait()
                readable, _, _ = select.select([src], [], [], 0.05)
                if not readable or not self._relaying.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):  # cut or closed under us
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (linger 0), as a peer that went away does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
