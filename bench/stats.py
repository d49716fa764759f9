"""Percentiles of merged latency samples, and CPU accounting that tells whether a phase was disturbed.

The machine is shared: other engineers' test suites may run during a
benchmark. So every phase records how much of the two cores the server's
process tree and the load generators used, and how much *something else*
used ("foreign CPU", as in ../shared/peers). A figure measured with tens of
percent foreign CPU is suspect, and the report says so.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuSnapshot", "foreign_cpu", "jiffies_to_seconds", "percentile", "read_latencies", "summarise",
           "wait_quiet"]

_TICK = os.sysconf("SC_CLK_TCK")
#: Process names of the services the issuer uses (a PostgreSQL backend's comm is "postgres").
SERVICES = frozenset({"postgres", "redis-server"})


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; NaN when empty."""
    if not sorted_values:
        return float("nan")
    if q <= 0:
        return float(sorted_values[0])
    rank = -(-q * len(sorted_values) // 100)  # ceil without floats drifting
    return float(sorted_values[min(len(sorted_values), int(rank)) - 1])


def read_latencies(paths: Iterable[Path]) -> list[float]:
    out = array("d")
    for p in paths:
        out.frombytes(p.read_bytes())
    return sorted(out)


def summarise(sorted_seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/p99.9/max in milliseconds."""
    return {f"p{str(q).replace('.0', '')}_ms": percentile(sorted_seconds, q) * 1000 for q in (50.0, 95.0, 99.0, 99.9)} \
        | {"max_ms": (sorted_seconds[-1] * 1000) if sorted_seconds else float("nan")}


@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide busy and total jiffies, and the jiffies of a set of our own processes."""

    busy: int
    total: int
    ours: int
    services: int  #: PostgreSQL and Redis server processes: part of the exchange's cost, shared with others

    @classmethod
    def take(cls, pids: Iterable[int]) -> CpuSnapshot:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        total = sum(fields[:8])  # guest time is already inside user
        return cls(total - idle, total, sum(_proc_jiffies(p) for p in pids),
                   sum(_proc_jiffies(p) for p in _service_pids()))


def _service_pids() -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() in SERVICES:
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def jiffies_to_seconds(j: int) -> float:
    return j / _TICK


def _proc_jiffies(pid: int) -> int:
    """utime + stime of a process and of its children that were waited for."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    parts = stat[stat.rindex(")") + 2:].split()
    return int(parts[11]) + int(parts[12]) + int(parts[13]) + int(parts[14])


def wait_quiet(max_wait: float, busy_pct: float) -> float:
    """Wait (at most ``max_wait`` s) until the machine is below ``busy_pct`` % busy over one second.

    Returns the last busy share seen. Other engineers' test suites come and go
    on this machine; a few seconds' wait often avoids measuring in their middle.
    """
    import time

    deadline = time.monotonic() + max_wait
    while True:
        a = CpuSnapshot.take(())
        time.sleep(1.0)
        b = CpuSnapshot.take(())
        busy = 100.0 * (b.busy - a.busy) / max(b.total - a.total, 1)
        if busy < busy_pct or time.monotonic() >= deadline:
            return busy


def foreign_cpu(before: CpuSnapshot, after: CpuSnapshot, ours_extra_seconds: float = 0.0) -> dict[str, float]:
    """Share of all cores (%) busy overall, used by the issuer and the generators, by PostgreSQL and Redis
    (whoever their client was), and by anything else: "foreign", the disturbance."""
    total = max(after.total - before.total, 1)
    busy = after.busy - before.busy
    ours = after.ours - before.ours + ours_extra_seconds * _TICK
    services = max(0, after.services - before.services)
    return {"machine_busy_pct": 100.0 * busy / total, "ours_pct": 100.0 * ours / total,
            "services_pct": 100.0 * services / total, "foreign_pct": 100.0 * (busy - ours - services) / total}
