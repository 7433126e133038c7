"""How a study looks: one row per trial (number, state, value, parameters), for the live view and `zae sweep show`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from zae_engine.sweep.space import SweepSpec

STATE_STYLES = {
    "complete": "green",
    "pruned": "yellow",
    "failed": "red",
    "interrupted": "magenta",
    "running": "cyan",
    "waiting": "dim",
}
LIVE_ROWS = 20  # the live view shows the running trials and the latest finished ones


@dataclass(frozen=True)
class TrialRow:
    """One trial as people and `--json` see it."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int | None  # the last epoch it reported
    seconds: float | None
    error: str | None
    run: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "value": self.value if self.value is None or math.isfinite(self.value) else None,
            "params": self.params,
            "epochs": self.epochs,
            "duration_s": None if self.seconds is None else round(self.seconds, 3),
            "error": self.error,
            "run": self.run,
        }


def short_names(keys: list[str]) -> dict[str, str]:
    """`optimizer.init_args.lr` -> `lr` where the last part is unique among the parameters."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: (tail if last.count(tail) == 1 else key) for key, tail in zip(keys, last)}


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(
    rows: list[TrialRow], sweep: SweepSpec | None, metric: str, best: int | None, title: str | None = None
) -> Table:
    keys = list(sweep.params) if sweep is not None else list(dict.fromkeys(k for r in rows for k in r.params))
    names = short_names(keys)
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True, min_width=8)
    table.add_column(metric, justify="right", no_wrap=True)
    for key in keys:
        table.add_column(names[key], justify="right", no_wrap=True)
    table.add_column("epochs", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("why", overflow="fold")
    for row in rows:
        marker = " *" if row.number == best else ""
        value = "" if row.value is None else number(row.value)
        cells = [
            f"{row.number}{marker}",
            Text(row.state, style=STATE_STYLES.get(row.state, "")),
            value,
            *[number(row.params[key]) if key in row.params else "" for key in keys],
            "" if row.epochs is None else str(row.epochs),
            "" if row.seconds is None else f"{row.seconds:.1f}s",
            Text(row.error or "", style="red" if row.state == "failed" else "dim"),
        ]
        table.add_row(*cells)
    return table


def headline(study: str, rows: list[TrialRow], total: int | None, metric: str, best: TrialRow | None) -> str:
    tally: dict[str, int] = {}
    for row in rows:
        tally[row.state] = tally.get(row.state, 0) + 1
    counted = sum(n for state, n in tally.items() if state in ("complete", "pruned", "failed", "running"))
    parts = [f"study {study}: {counted}" + (f"/{total}" if total else "") + " trials"]
    parts.append(", ".join(f"{n} {state}" for state, n in tally.items()))
    if best is not None and best.value is not None:
        parts.append(f"best #{best.number} {metric} {number(best.value)}")
    return " · ".join(p for p in parts if p)


class LiveView:
    """The live table on a terminal; elsewhere (a pipe, a CI log) one line per finished trial."""

    def __init__(self, console: Console, study: str, sweep: SweepSpec, total: int) -> None:
        self.console = console
        self.study = study
        self.sweep = sweep
        self.total = total
        self._live: Live | None = None
        self._reported: set[int] = set()

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def update(self, rows: list[TrialRow], best: TrialRow | None, first: bool = False) -> None:
        """Show the study; `first`: the trials it held when this sweep began (a line each only on a terminal)."""
        title = headline(self.study, rows, self.total, self.sweep.metric, best)
        if first and self._live is None:
            self._reported.update(r.number for r in rows if r.state not in ("running", "waiting"))
            if self._reported:
                self.console.print(f"resuming: {title}", markup=False)
            return
        if self._live is not None:
            running = [r for r in rows if r.state == "running"]
            finished = [r for r in rows if r.state != "running"][-max(0, LIVE_ROWS - len(running)) :]
            shown = sorted(finished + running, key=lambda r: r.number)
            table = trials_table(shown, self.sweep, self.sweep.metric, best.number if best else None)
            self._live.update(Group(Text(title, style="bold"), table), refresh=True)
            return
        for row in rows:
            if row.state in ("running", "waiting") or row.number in self._reported:
                continue
            self._reported.add(row.number)
            value = "" if row.value is None else f" {self.sweep.metric} {number(row.value)}"
            params = ", ".join(f"{k}={number(v)}" for k, v in row.params.items())
            why = f" — {row.error}" if row.error and row.state != "complete" else ""
            self.console.print(f"trial {row.number} {row.state}{value} ({params}){why}", markup=False)

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)


__all__ = ["LiveView", "TrialRow", "headline", "short_names", "trials_table"]
