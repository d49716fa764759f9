"""A bounded HTTP/1.1 load generator, run as its own process: ``python -m bench.loadgen SPEC.json``.

Why not wrk: it is not on a fresh machine, and it measures closed-loop only,
where a slow response delays the next request and hides the queueing it
caused (coordinated omission). This generator needs nothing beyond the
standard library and has two modes:

``closed``
    ``connections`` keep-alive connections, each sending its next request as
    soon as the previous response is complete: the peak rate the server (and
    this machine) can sustain.
``open``
    requests are scheduled at a fixed offered ``rate``; request *i* is due at
    ``start + i / rate`` whatever happened before, and its latency is measured
    from that intended time, so time spent waiting for a free connection or
    in the server's queue counts. At most ``connections`` are in flight.

One thread and one ``selectors`` loop over raw, keep-alive sockets, with the
requests pre-built as bytes (:mod:`bench.scenario`): the generator spends its
CPU on the socket calls, not on an HTTP library. It is bounded: it sends at
most ``rate * duration`` requests (open) or runs ``duration`` seconds
(closed), then waits at most ``drain`` seconds for the responses in flight,
and only ever connects to 127.0.0.1. Every request sent is answered or
counted as lost, so the count of 200s can be checked against the audit rows.

Prints one JSON object on stdout; the raw latencies (seconds, float64) go to
``latency_file`` so several generator processes can be merged exactly.
"""

from __future__ import annotations

import gc
import json
import resource
import selectors
import socket
import sys
import time
from array import array
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["load_requests", "run", "save_requests"]

_CRLF2 = b"\r\n\r\n"


def save_requests(path: Path, requests: list[bytes]) -> None:
    """Length-prefixed records: the generator reads them back without parsing anything."""
    with path.open("wb") as f:
        for r in requests:
            f.write(len(r).to_bytes(4, "big"))
            f.write(r)


def load_requests(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


class _Conn:
    __slots__ = ("buf", "closes", "due", "need", "sock")

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.need = -1  #: total length of the response being read, once its headers are in
        self.closes = False
        self.due = 0.0  #: when the request in flight was sent (closed) or due (open); 0 = idle

    def response(self) -> tuple[int, bool] | None:
        """(status, server closes) once a whole response is buffered, else None."""
        if self.need < 0:
            end = self.buf.find(_CRLF2)
            if end < 0:
                return None
            head = bytes(self.buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                eol = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:eol if eol >= 0 else len(head)])
            self.need = end + 4 + length
            self.closes = b"\r\nconnection: close" in head
        if len(self.buf) < self.need:
            return None
        status = int(self.buf[9:12])
        del self.buf[:self.need]
        self.need = -1
        return status, self.closes


class _Run:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.port = int(spec["port"])
        self.requests = load_requests(Path(spec["requests_file"]))
        self.next_req = int(spec.get("start_index", 0))
        self.sel = selectors.DefaultSelector()
        self.lat = array("d")
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.sent = 0
        self.conns: list[_Conn] = []

    def connect(self) -> _Conn:
        c = _Conn(self.port)
        self.sel.register(c.sock, selectors.EVENT_READ, c)
        self.conns.append(c)
        return c

    def drop(self, c: _Conn, why: str) -> None:
        if c.due:
            self.errors[why] = self.errors.get(why, 0) + 1
        self.sel.unregister(c.sock)
        c.sock.close()
        self.conns.remove(c)

    def send(self, c: _Conn, due: float) -> None:
        req = self.requests[self.next_req % len(self.requests)]
        self.next_req += 1
        c.due = due
        c.sock.sendall(req)
        self.sent += 1

    def read(self, c: _Conn, now: float) -> bool:
        """Read what is there; True if a response completed (then ``c`` is idle)."""
        try:
            data = c.sock.recv(65536)
        except OSError as e:
            self.drop(c, type(e).__name__)
            return False
        if not data:
            self.drop(c, "closed_mid_response" if c.due else "closed")
            return False
        c.buf += data
        got = c.response()
        if got is None:
            return False
        status, closes = got
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.lat.append(now - c.due)
        c.due = 0.0
        if closes:
            self.drop(c, "server_closed")
            return False
        return True

    def in_flight(self) -> list[_Conn]:
        return [c for c in self.conns if c.due]

    # ------------------------------------------------------------------ closed loop
    def closed(self, connections: int, duration: float, drain: float) -> dict[str, Any]:
        clock = time.perf_counter
        start = clock()
        end = start + duration
        in_window = 0
        for _ in range(connections):
            self.send(self.connect(), clock())
        while True:
            now = clock()
            if now >= end and not self.in_flight():
                break
            if now >= end + drain:
                break
            for key, _ in self.sel.select(timeout=0.1 if now < end else end + drain - now):
                c: _Conn = key.data
                now = clock()
                if self.read(c, now) and now <= end:
                    in_window += 1
                    self.send(c, now)
            if now < end:  # a dropped connection is replaced, so the concurrency stays what was asked
                for _ in range(connections - len(self.conns)):
                    self.send(self.connect(), clock())
        return {"throughput": in_window / duration, "completed_in_window": in_window}

    # ------------------------------------------------------------------ open loop
    def open(self, rate: float, duration: float, connections: int, drain: float) -> dict[str, Any]:
        clock = time.perf_counter
        total = int(rate * duration)
        interval = 1.0 / rate
        idle: deque[_Conn] = deque(self.connect() for _ in range(min(connections, 8)))
        start = clock()
        i = 0
        while True:
            now = clock()
            while i < total and start + i * interval <= now:
                if idle:
                    c = idle.popleft()
                    if c not in self.conns:
                        continue
                elif len(self.conns) < connections:
                    c = self.connect()
                else:
                    break  # every connection busy: request i waits, and its wait is counted
                self.send(c, start + i * interval)
                i += 1
            if i >= total and not self.in_flight():
                break
            if now > start + duration + drain:
                break
            wait = max(0.0, start + i * interval - now) if i < total and idle else 0.05
            for key, _ in self.sel.select(timeout=min(wait, 0.05)):
                c = key.data
                if self.read(c, clock()):
                    idle.append(c)
        elapsed = max(clock() - start, 1e-9)
        return {"unsent": total - i, "throughput": (self.statuses.get(200, 0)) / elapsed}

    def finish(self, mode_result: dict[str, Any], spec: dict[str, Any], cpu0: float, wall0: float) -> dict[str, Any]:
        lost = len(self.in_flight())
        if lost:
            self.errors["no_response"] = self.errors.get("no_response", 0) + lost
        for c in list(self.conns):
            self.sel.unregister(c.sock)
            c.sock.close()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        Path(spec["latency_file"]).write_bytes(self.lat.tobytes())
        return {
            **mode_result,
            "mode": spec["mode"], "sent": self.sent, "responses": len(self.lat),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors, "next_index": self.next_req,
            "cpu_seconds": ru.ru_utime + ru.ru_stime - cpu0, "wall_seconds": time.perf_counter() - wall0,
        }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    gc.disable()  # nothing here makes cycles; a collection would show up as a latency spike
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = ru.ru_utime + ru.ru_stime, time.perf_counter()
    r = _Run(spec)
    drain = float(spec.get("drain", 15.0))
    if spec["mode"] == "closed":
        res = r.closed(int(spec["connections"]), float(spec["duration"]), drain)
    else:
        res = r.open(float(spec["rate"]), float(spec["duration"]), int(spec["connections"]), drain)
    return r.finish(res, spec, cpu0, wall0)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
