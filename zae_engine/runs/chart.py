"""Line charts in the terminal, drawn with Braille dots and coloured with rich.

Why our own and not plotext: `zae runs show` draws a loss chart on every call, so the chart belongs to the
core install, and the core should not grow a dependency for ~100 lines. Drawing with rich also means the
chart shares the console with the tables around it (same width, same colour rules, `NO_COLOR` honoured).
Each character cell holds a 2x4 grid of dots, so a 60x12 chart has 120x48 points of resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text

COLOURS = ("cyan", "magenta", "yellow", "green", "red", "blue", "bright_white")
_DOT = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # _DOT[row][col] within a cell


@dataclass
class Series:
    label: str
    points: list[tuple[float, float | None]]  # (x, y); a None or non-finite y breaks the line


def _finite(points: list[tuple[float, float | None]]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in points if y is not None and math.isfinite(y)]


def _span(low: float, high: float) -> tuple[float, float]:
    if high > low:
        return low, high
    pad = abs(low) * 0.05 or 0.5
    return low - pad, high + pad


def _number(value: float) -> str:
    return f"{value:.4g}"


def line_chart(series: list[Series], *, width: int = 60, height: int = 12, x_label: str = "epoch") -> Text:
    """A chart of every series on shared axes, with y labels on the left, x range below and a legend."""
    drawn = [s for s in series if _finite(s.points)]
    if not drawn:
        return Text("(nothing to chart: no finite values)")
    all_points = [p for s in drawn for p in _finite(s.points)]
    x_lo, x_hi = _span(min(x for x, _ in all_points), max(x for x, _ in all_points))
    y_lo, y_hi = _span(min(y for _, y in all_points), max(y for _, y in all_points))
    cols, rows = width * 2, height * 4
    bits = [[0] * width for _ in range(height)]
    owner: list[list[int | None]] = [[None] * width for _ in range(height)]

    def dot(px: int, py: int, index: int) -> None:
        row, col = py // 4, px // 2
        bits[row][col] |= _DOT[py % 4][px % 2]
        owner[row][col] = index

    def to_dot(x: float, y: float) -> tuple[int, int]:
        px = round((x - x_lo) / (x_hi - x_lo) * (cols - 1))
        py = round((y_hi - y) / (y_hi - y_lo) * (rows - 1))
        return min(max(px, 0), cols - 1), min(max(py, 0), rows - 1)

    for index, s in enumerate(drawn):
        previous: tuple[int, int] | None = None
        for x, y in s.points:
            if y is None or not math.isfinite(y):
                previous = None
                continue
            current = to_dot(x, y)
            if previous is None:
                dot(*current, index)
            else:
                steps = max(abs(current[0] - previous[0]), abs(current[1] - previous[1]), 1)
                for i in range(1, steps + 1):
                    dot(
                        round(previous[0] + (current[0] - previous[0]) * i / steps),
                        round(previous[1] + (current[1] - previous[1]) * i / steps),
                        index,
                    )
            previous = current

    labels = {0: _number(y_hi), height - 1: _number(y_lo), (height - 1) // 2: _number((y_hi + y_lo) / 2)}
    margin = max(len(text) for text in labels.values()) + 1
    chart = Text()
    for row in range(height):
        chart.append(labels.get(row, "").rjust(margin - 1) + " ┤" if row in labels else " " * margin + "│", "dim")
        for col in range(width):
            who = owner[row][col]
            chart.append(chr(0x2800 + bits[row][col]), COLOURS[who % len(COLOURS)] if who is not None else None)
        chart.append("\n")
    chart.append(" " * margin + "└" + "─" * width + "\n", "dim")
    left, right = _number(x_lo), _number(x_hi)
    axis = f"{left}{x_label.center(max(width - len(left) - len(right), 0))}{right}"
    chart.append(" " * (margin + 1) + axis + "\n", "dim")
    for index, s in enumerate(drawn):
        chart.append(" " * (margin + 1) + "━━ ", COLOURS[index % len(COLOURS)])
        chart.append(s.label + ("\n" if index < len(drawn) - 1 else ""))
    return chart
