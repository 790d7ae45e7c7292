"""A bench's table of figures: each row the median of its rounds, min-max, target, verdict.

A :class:`Figure` collects one sample per round; a figure with a :class:`Target` is "met"
when its median is on the right side of the target, and "missed" otherwise or when any of
its attempts failed.  :func:`render` lays the figures out as one plain-text table.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Literal

#: Decimals shown per unit.
DIGITS = {"ms": 1, "s": 2, "MB/s": 0, "x": 2}


@dataclass(frozen=True)
class Target:
    """``op`` ``value``, in the figure's unit, e.g. ``Target("<=", 30)`` for at most 30 ms."""

    op: Literal["<=", ">="]
    value: float

    def met(self, median: float) -> bool:
        return median <= self.value if self.op == "<=" else median >= self.value


@dataclass
class Figure:
    """One row: ``name``, samples in ``unit`` (one per round), an optional target and note."""

    name: str
    unit: str
    target: Target | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list)
    #: Attempts that failed (a job that did not succeed, a step that timed out).
    failures: int = 0

    def add(self, value: float) -> None:
        self.samples.append(value)

    def fmt(self, value: float) -> str:
        return f"{value:.{DIGITS.get(self.unit, 2)}f}"

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """(figure, median, min-max, target, verdict, note)."""
        unit = f" {self.unit}" if self.unit != "x" else "x"
        target = f"{self.target.op} {self.target.value:g}{unit}" if self.target else ""
        note = self.note + (f"; {self.failures} failed" if self.failures else "")
        if not self.samples:
            return self.name, "-", "-", target, "missed" if self.target else "", note
        median = statistics.median(self.samples)
        spread = f"{self.fmt(min(self.samples))}-{self.fmt(max(self.samples))}"
        verdict = ""
        if self.target is not None:
            verdict = "met" if self.target.met(median) and not self.failures else "missed"
        return self.name, f"{self.fmt(median)}{unit}", spread, target, verdict, note


def render(figures: list[Figure]) -> str:
    """The figures as one table with a header line."""
    rows = [("figure", "median", "min-max", "target", "verdict", "notes")]
    rows += [figure.cells() for figure in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for row in rows:
        left, median, spread, target, verdict, note = row
        lines.append(f"{left:<{widths[0]}}  {median:>{widths[1]}}  {spread:>{widths[2]}}  "
                     f"{target:<{widths[3]}}  {verdict:<{widths[4]}}  {note}".rstrip())
    return "\n".join(lines)
