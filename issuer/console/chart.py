"""The Overview's chart of decisions per slice of time, as plain SVG geometry.

Drawn on the server as rectangles with sizes in attributes (no script, no
inline style, which the Content-Security-Policy forbids); colours come from
the stylesheet by class. The page also prints the numbers as a table, so the
chart is never the only way to read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Bar", "Chart", "stacked_bars"]

WIDTH, HEIGHT, GAP = 480, 120, 4


@dataclass(frozen=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    kind: str  #: CSS class: granted or denied
    label: str  #: the tooltip and accessible text


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    peak: int


def stacked_bars(buckets: Sequence[Mapping[str, Any]], kinds: Sequence[str] = ("granted", "denied")) -> Chart:
    """One stacked column per bucket, scaled to the busiest bucket (at least 1, so an idle hour is flat)."""
    peak = max([sum(int(b.get(k, 0)) for k in kinds) for b in buckets] + [1])
    slot = WIDTH // max(1, len(buckets))
    bars: list[Bar] = []
    for i, bucket in enumerate(buckets):
        top = HEIGHT
        for kind in kinds:
            n = int(bucket.get(kind, 0))
            if n == 0:
                continue
            h = max(1, round(HEIGHT * n / peak))
            top -= h
            when = str(bucket.get("start", ""))[11:16]
            bars.append(Bar(i * slot + GAP // 2, top, slot - GAP, h, kind, f"{when} UTC: {n} {kind}"))
    return Chart(WIDTH, HEIGHT, tuple(bars), peak)
