"""Curves of several runs to a PNG, SVG or PDF file, through matplotlib (the optional extra `plot`).

One panel per metric, every run overlaid in each, the same colour for a run in every panel. The picture is
always FIGURE_SIZE_PX pixels (no tight bounding box), so scripts and docs can rely on its size. SVG text
stays text, so run names can be searched for in the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from zae_engine.checkpoint.atomic import atomic_path
from zae_engine.runs.store import RunsError

FIGURE_SIZE_PX = (1000, 600)
DPI = 100
FORMATS = (".png", ".svg", ".pdf")
MISSING = "writing a plot file needs matplotlib, which is not installed: pip install 'zae-engine[plot]'"


@dataclass
class Curve:
    run: str  # the legend label of the run
    metric: str
    points: list[tuple[float, float | None]]


def save_plot(curves: list[Curve], out: Path, *, x_label: str = "epoch") -> None:
    """Draw `curves` (grouped into one panel per metric) and write them atomically to `out`."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise RunsError(f"--out '{out}': unknown picture type '{suffix or '(none)'}'; use one of {', '.join(FORMATS)}")
    try:
        from matplotlib import rc_context
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise RunsError(MISSING) from None
    metrics = list(dict.fromkeys(curve.metric for curve in curves))
    runs = list(dict.fromkeys(curve.run for curve in curves))
    columns = 1 if len(metrics) == 1 else 2
    rows = math.ceil(len(metrics) / columns)
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "zae-engine"}):
        figure = Figure(figsize=(FIGURE_SIZE_PX[0] / DPI, FIGURE_SIZE_PX[1] / DPI), dpi=DPI, layout="constrained")
        axes = figure.subplots(rows, columns, squeeze=False).flatten()
        colours = {run: f"C{i % 10}" for i, run in enumerate(runs)}
        for ax, metric in zip(axes, metrics):
            for curve in curves:
                if curve.metric != metric:
                    continue
                xs = [x for x, _ in curve.points]
                ys = [math.nan if y is None else y for _, y in curve.points]
                ax.plot(xs, ys, label=curve.run, color=colours[curve.run], marker="o" if len(xs) < 30 else None)
            ax.set_title(metric)
            ax.set_xlabel(x_label)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        for ax in axes[len(metrics) :]:
            ax.set_visible(False)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out, suffix) as tmp:
            figure.savefig(tmp, format=suffix[1:], dpi=DPI)
