"""The demo's output: a short, indented transcript that doubles as the ledger of expected outcomes.

Every check the scenario makes goes through :meth:`Transcript.outcome`, so the
exit code is computed from exactly what the reader saw: 0 only when every
line reads ``OK``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Transcript"]

_WIDTH = 200


@dataclass
class Transcript:
    echo: Callable[[str], None]
    outcomes: int = 0
    failures: list[str] = field(default_factory=list)
    _step: str = ""

    def title(self, text: str) -> None:
        self.echo(text)
        self.echo("")

    def service(self, name: str, url: str, note: str) -> None:
        self.echo(f"  {name:<18} {url:<28} {note}")

    def step(self, number: str, text: str) -> None:
        self._step = number
        self.echo("")
        self.echo(f"{number}. {text}")

    def quote(self, text: str) -> None:
        for line in text.splitlines():
            self.echo(f"   | {line}".rstrip())

    def action(self, text: str) -> None:
        self.echo(f"   {text}")

    def detail(self, label: str, text: str) -> None:
        self.echo(f"     {label + ':':<10} {_clip(text)}")

    def outcome(self, ok: bool, expected: str, got: str = "") -> None:
        """One expected outcome, checked: ``OK``, or ``UNEXPECTED`` with what happened instead."""
        self.outcomes += 1
        if ok:
            self.echo(f"     {'OK':<10} expected: {expected}")
            return
        self.failures.append(f"step {self._step}: expected {expected}, but {got}")
        self.echo(f"     {'UNEXPECTED':<10} expected: {expected}")
        self.echo(f"     {'':<10} instead:  {got}")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.echo("")
        self.echo(title)
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
        self.echo("  " + "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for r in rows:
            self.echo("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())

    def note(self, text: str) -> None:
        self.echo(f"  {text}")

    def finish(self) -> int:
        """The verdict line and the exit code."""
        self.echo("")
        if not self.failures:
            self.echo(f"RESULT: all {self.outcomes} expected outcomes happened.")
            return 0
        self.echo(f"RESULT: FAILED: {len(self.failures)} of {self.outcomes} outcomes were not as expected:")
        for f in self.failures:
            self.echo(f"  - {f}")
        return 1


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _WIDTH else flat[: _WIDTH - 3] + "..."
