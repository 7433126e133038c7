"""`zae runs`: list, show, compare, plot, export and remove recorded runs.

Every command reads run folders only (`zae_engine.runs`): no torch, no add-on is imported, so they answer
at once, also while a run is training. RUN is an id, a unique id prefix, a run's name, a run folder, or
`last` (the newest start). `--json` prints data for programs instead of tables.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from zae_engine.cli.output import EXIT_ERROR, command, err, out, report
from zae_engine.errors import did_you_mean

if TYPE_CHECKING:  # imported inside the commands: `zae --help` should not pay for pydantic models
    from zae_engine.runs import Metrics, Run

app = typer.Typer(help="Look at recorded runs: list, show, compare, plot, export, remove.", no_args_is_help=True)

RUN_HELP = "An id, a unique id prefix, a run name, a run folder, or 'last'."
DIR_HELP = "Folder the runs are recorded in."
DEFAULT_DIR = Path("runs")
STATUSES = "running, done, failed, interrupted, stopped_early, crashed"
LOSSES = ("train/loss", "valid/loss")
_STATUS_STYLE = {
    "running": "blue",
    "done": "green",
    "failed": "red",
    "interrupted": "yellow",
    "stopped_early": "cyan",
    "crashed": "bold red",
}


# ------------------------------------------------------------------------------------------------ formatting
def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _local(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


def _best(run: Run) -> str:
    best = run.record.best
    if best is None or best.value is None:
        return "—"
    return f"{best.metric} {best.value:.4g}" + (f" @{best.epoch}" if best.epoch is not None else "")


def _label(run: Run) -> str:
    """How a run is named in legends and column heads (plain text: escape it for rich markup)."""
    return f"{run.name} ({run.id})"


def _print_json(value: Any) -> None:
    from zae_engine.runs.files import dumps

    print(dumps(value, indent=2))


# ------------------------------------------------------------------------------------------------ list
@app.command("list")
@command
def list_command(
    root: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help=DIR_HELP),
    status: list[str] = typer.Option([], "--status", help=f"Only runs with this status (repeatable): {STATUSES}."),
    sort: str = typer.Option(
        None, "--sort", help="Order by the final value of a metric (lowest first), or 'best' (best first)."
    ),
    reverse: bool = typer.Option(False, "--reverse", help="Reverse the order."),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON list (keys: id, name, status, epochs, best, started, duration_s, dir)."
    ),
) -> None:
    """Recorded runs, oldest first: id, name, status, epochs, best metric, duration, start time."""
    from zae_engine.runs import SHOWN_STATUSES, RunsError, list_runs

    for wanted in status:
        if wanted not in SHOWN_STATUSES:
            raise RunsError(
                f"--status '{wanted}' is not a status{did_you_mean(wanted, SHOWN_STATUSES)}; "
                f"choose from {', '.join(SHOWN_STATUSES)}"
            )
    runs, damaged = list_runs(root)
    for bad in damaged[:5]:
        report("skipped", "yellow", bad.reason)
    if len(damaged) > 5:
        report("skipped", "yellow", f"{len(damaged) - 5} more folders with an unreadable run.json")
    if status:
        runs = [run for run in runs if run.status in status]
    if sort:
        runs = _sorted(runs, sort)
    if reverse:
        runs.reverse()
    if as_json:
        _print_json([run.summary() for run in runs])
        return
    if not runs:
        out.print(f"no runs in '{root}'" + ("" if root.is_dir() else " (the folder does not exist)"), markup=False)
        return
    rows = [
        (
            run.id,
            run.name,
            run.status,
            str(run.record.epochs),
            _best(run),
            _duration(run.duration_s()),
            _local(run.record.started),
        )
        for run in runs
    ]
    out.print(_columns(("id", "name", "status", "epochs", "best", "duration", "started"), rows, status_column=2))


def _columns(headers: tuple[str, ...], rows: list[tuple[str, ...]], status_column: int) -> Text:
    """One line per row, columns aligned, status coloured. Not a rich Table: a box of 1,000 rows takes rich
    ~0.4 s to lay out and is scrolled rather than read; these lines print in milliseconds and grep well."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    text = Text()
    last = len(headers) - 1
    for index, (cell, width) in enumerate(zip(headers, widths)):
        text.append(cell if index == last else cell.ljust(width + 2), "bold")
    text.append("\n")
    for row in rows:
        for index, (cell, width) in enumerate(zip(row, widths)):
            style = _STATUS_STYLE.get(cell) if index == status_column else None
            text.append(cell if index == last else cell.ljust(width + 2), style)
        text.append("\n")
    text.rstrip()
    return text


def _sorted(runs: list[Run], key: str) -> list[Run]:
    from zae_engine.runs import RunsError

    if key == "best":

        def rank(run: Run) -> tuple[bool, float]:
            best = run.record.best
            if best is None or best.value is None:
                return True, 0.0
            return False, best.value if best.mode == "min" else -best.value

        return sorted(runs, key=rank)
    known = {name for run in runs for name in run.record.final}
    if runs and key not in known:
        raise RunsError(
            f"--sort '{key}': no run has a final value of it{did_you_mean(key, known)}; "
            f"metrics here: {', '.join(sorted(known)) or '(none yet)'}; or use --sort best"
        )
    return sorted(runs, key=lambda run: (run.record.final.get(key) is None, run.record.final.get(key) or 0.0))


# ------------------------------------------------------------------------------------------------ show
@app.command("show")
@command
def show_command(
    ref: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    root: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help=DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the record, metrics and checkpoints as JSON."),
) -> None:
    """One run: its record, final and best metrics, checkpoints, and a chart of the loss."""
    from zae_engine.runs import find_run, read_metrics
    from zae_engine.runs.checkpoints import saved_checkpoints

    run = find_run(root, ref)
    metrics = read_metrics(run)
    checkpoints, notes = saved_checkpoints(run)
    best_epoch = run.record.best.epoch if run.record.best else None
    if as_json:
        _print_json(
            {
                **run.summary(),
                "epochs": metrics.epochs_done(run.record.epochs),
                "record": run.record.model_dump(mode="json"),
                "final": metrics.final(),
                "at_best": metrics.at_epoch(best_epoch) if best_epoch is not None else {},
                "checkpoints": [c.as_json() for c in checkpoints],
                "skipped_lines": metrics.skipped,
            }
        )
        return
    _print_record(run, metrics.epochs_done(run.record.epochs))
    _print_metrics(metrics, best_epoch)
    if checkpoints:
        table = Table("checkpoint", "kind", "epoch", "step", "value", "", title="checkpoints", title_justify="left")
        for c in checkpoints:
            table.add_row(
                escape(str(Path(c.save_path) / c.name)),
                escape(c.kind),
                _number(c.epoch),
                _number(c.step),
                _number(c.value),
                " ".join(c.marks),
            )
        out.print(table)
    for note in notes:
        out.print(f"[dim]{escape(note)}[/]")
    losses = [name for name in LOSSES if metrics.series(name)]
    if losses:
        from zae_engine.runs.chart import Series, line_chart

        out.print(
            line_chart([Series(name, metrics.series(name)) for name in losses], width=_chart_width(), x_label="epoch")
        )
    if metrics.skipped:
        report(
            "note",
            "yellow",
            f"{metrics.skipped} metrics line(s) could not be read (an incomplete last line is normal after a crash)",
        )


def _print_record(run: Run, epochs: int) -> None:
    record = run.record
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", f"{escape(record.name)}  [dim]{escape(record.id)}[/]")
    grid.add_row("status", _status(run.status) + (f"  {escape(record.error)}" if record.error else ""))
    grid.add_row("folder", escape(str(run.path)))
    grid.add_row("started", f"{_local(record.started)}  ({_duration(run.duration_s())}, {epochs} epochs)")
    if record.ended:
        grid.add_row("ended", _local(record.ended))
    grid.add_row("best", escape(_best(run)))
    devices = ", ".join(record.devices) or "—"
    grid.add_row("where", escape(f"{record.host}  pid {record.pid}  world size {record.world_size}  devices {devices}"))
    versions = record.versions
    plugins = ", ".join(f"{name} {version}" for name, version in (versions.get("plugins") or {}).items())
    shown = ", ".join(f"{name} {versions[name]}" for name in ("zae-engine", "torch", "python") if versions.get(name))
    grid.add_row("versions", escape(shown + (f"; plugins: {plugins}" if plugins else "")))
    if record.git:
        grid.add_row("git", escape(record.git.commit[:12]) + (" (uncommitted changes)" if record.git.dirty else ""))
    if record.tags:
        grid.add_row("tags", escape(", ".join(f"{k}={v}" for k, v in record.tags.items())))
    out.print(grid)
    from zae_engine.runs.compare import flatten

    options = flatten(record.config())
    if options:
        table = Table("option", "value", title="spec" if record.spec else "options", title_justify="left")
        for key, value in options.items():
            table.add_row(escape(key), escape(json.dumps(value, default=str)))
        out.print(table)


def _print_metrics(metrics: Metrics, best_epoch: int | None) -> None:
    final, epochs = metrics.final(), metrics.epochs()
    if not final:
        out.print("no epoch recorded yet")
        return
    at_best = metrics.at_epoch(best_epoch) if best_epoch is not None else {}
    table = Table("metric", f"final (epoch {epochs[-1].epoch})", title="metrics", title_justify="left")
    if at_best:
        table.add_column(f"best epoch ({best_epoch})")
    for name in dict.fromkeys([*final, *at_best]):
        table.add_row(escape(name), _number(final.get(name)), *([_number(at_best.get(name))] if at_best else []))
    out.print(table)


def _chart_width() -> int:
    return max(20, min(out.width - 14, 100))


# ------------------------------------------------------------------------------------------------ compare
@app.command("compare")
@command
def compare_command(
    refs: list[str] = typer.Argument(..., metavar="RUN...", help="Two or more runs. " + RUN_HELP),
    root: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help=DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the differing options and the metrics as JSON."),
) -> None:
    """The options that differ between runs (as --set keys) and their metrics side by side."""
    from zae_engine.runs import RunsError, read_metrics
    from zae_engine.runs.compare import MISSING, differing_options, side_by_side

    runs = _distinct_runs(root, refs)
    if len(runs) < 2:
        raise RunsError("zae runs compare needs two or more different runs")
    options = differing_options(runs)
    metrics = side_by_side(runs, [read_metrics(run) for run in runs])
    if as_json:
        _print_json(
            {
                "runs": [run.summary() for run in runs],
                "options": {k: [None if v is MISSING else v for v in vs] for k, vs in options.items()},
                **metrics,
            }
        )
        return
    labels = [escape(_label(run)) for run in runs]
    head = Table("", *labels, title="runs", title_justify="left")
    head.add_row("status", *(_status(run.status) for run in runs))
    head.add_row("epochs", *(str(run.record.epochs) for run in runs))
    head.add_row("best", *(escape(_best(run)) for run in runs))
    head.add_row("started", *(_local(run.record.started) for run in runs))
    out.print(head)
    if options:
        table = Table("option", *labels, title="options that differ", title_justify="left")
        for key, values in options.items():
            table.add_row(escape(key), *("—" if v is MISSING else escape(json.dumps(v, default=str)) for v in values))
        out.print(table)
    else:
        out.print("options: the same in every run")
    for part, title in (("final", "final metrics (last epoch)"), ("best", "metrics at each run's best epoch")):
        if metrics[part]:
            table = Table("metric", *labels, title=title, title_justify="left")
            for name, values in metrics[part].items():
                table.add_row(escape(name), *(_number(v) for v in values))
            out.print(table)


def _distinct_runs(root: Path, refs: list[str]) -> list[Run]:
    from zae_engine.runs import find_run

    runs: list[Run] = []
    for ref in refs:
        run = find_run(root, ref)
        if all(run.path.resolve() != seen.path.resolve() for seen in runs):
            runs.append(run)
    return runs


# ------------------------------------------------------------------------------------------------ plot
@app.command("plot")
@command
def plot_command(
    refs: list[str] = typer.Argument(..., metavar="RUN...", help="One or more runs. " + RUN_HELP),
    root: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help=DIR_HELP),
    metric: list[str] = typer.Option(
        [], "--metric", "-m", help="Metric to plot (repeatable); default: train/loss and valid/loss."
    ),
    per_step: bool = typer.Option(False, "--step", help="Plot against optimizer steps instead of epochs."),
    out_file: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Write a picture (.png, .svg or .pdf; needs the 'plot' extra) instead of drawing in the terminal.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plotted points as JSON."),
) -> None:
    """Curves of several runs overlaid, per epoch or per step: in the terminal, or to a PNG/SVG file."""
    from zae_engine.runs import read_metrics

    runs = _distinct_runs(root, refs)
    per = "step" if per_step else "epoch"
    loaded = [(run, read_metrics(run)) for run in runs]
    names = _plotted_metrics(metric, loaded, per)
    curves = {name: [(run, m.series(name, per)) for run, m in loaded if m.series(name, per)] for name in names}
    for name, found in curves.items():
        missing = [run.id for run, _ in loaded if all(run is not r for r, _ in found)]
        if missing:
            report("note", "yellow", f"{name}: nothing recorded in {', '.join(missing)}")
    if as_json:
        _print_json(
            {
                "x": per,
                "runs": [run.summary() for run in runs],
                "metrics": {name: {run.id: points for run, points in found} for name, found in curves.items()},
            }
        )
        return
    if out_file is not None:
        from zae_engine.runs.plot import Curve, save_plot

        save_plot(
            [Curve(_label(run), name, points) for name, found in curves.items() for run, points in found],
            out_file,
            x_label=per,
        )
        out.print(f"wrote {out_file}", markup=False)
        return
    from zae_engine.runs.chart import Series, line_chart

    for name, found in curves.items():
        out.print(f"[bold]{escape(name)}[/]")
        out.print(line_chart([Series(_label(run), points) for run, points in found], width=_chart_width(), x_label=per))


def _plotted_metrics(wanted: list[str], loaded: list[tuple[Run, Metrics]], per: str) -> list[str]:
    from zae_engine.runs import RunsError

    available = list(dict.fromkeys(name for _, m in loaded for name in m.names()))
    if per == "step":
        available += [name.removeprefix("running/") for name in available if name.startswith("running/")]
    if not wanted:
        defaults = [name for name in LOSSES if any(m.series(name, per) for _, m in loaded)]
        if defaults:
            return defaults
        raise RunsError(
            "none of the runs recorded train/loss or valid/loss yet; choose with --metric: "
            + (", ".join(available) or "(no metrics recorded)")
        )
    for name in wanted:
        if name not in available:
            raise RunsError(
                f"--metric '{name}': no run recorded it{did_you_mean(name, available)}; "
                f"recorded: {', '.join(available) or '(none)'}"
            )
    return list(dict.fromkeys(wanted))


# ------------------------------------------------------------------------------------------------ export
@app.command("export")
@command
def export_command(
    ref: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    root: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help=DIR_HELP),
    as_csv: bool = typer.Option(False, "--csv", help="Write CSV: kind, epoch, step, time, then one column per metric."),
    as_json: bool = typer.Option(False, "--json", help="Write the same rows as a JSON list of objects."),
    out_file: Path = typer.Option(
        None, "--out", "-o", help="File to write (replaced atomically); default: standard output."
    ),
) -> None:
    """A run's metrics, every recorded line, as CSV (or JSON)."""
    from zae_engine.runs import RunsError, find_run, read_metrics
    from zae_engine.runs.files import dumps, write_atomic

    if as_csv == as_json:
        raise RunsError("choose one format: --csv or --json")
    run = find_run(root, ref)
    metrics = read_metrics(run)
    names = metrics.names()
    rows = [
        {
            "kind": p.kind,
            "epoch": p.epoch,
            "step": p.step,
            "time": datetime.fromtimestamp(p.time, timezone.utc).isoformat() if p.time is not None else None,
            **{name: p.values.get(name) for name in names},
        }
        for p in metrics.points
    ]
    if as_json:
        text = dumps(rows, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["kind", "epoch", "step", "time", *names], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    if out_file is None:
        sys.stdout.write(text)
        return
    if not out_file.parent.is_dir():
        raise RunsError(f"--out '{out_file}': the folder '{out_file.parent}' does not exist; create it first")
    if out_file.is_dir():
        raise RunsError(f"--out '{out_file}' is a folder; name a file, e.g. {out_file / (run.id + '.csv')}")
    write_atomic(out_file, text)
    err.print(f"wrote {len(rows)} rows to {out_file}", markup=False)


# ------------------------------------------------------------------------------------------------ rm
@app.command("rm")
@command
def rm_command(
    ref: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    root: Path = typer.Option(DEFAULT_DIR, "--dir", "-d", help=DIR_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    force: bool = typer.Option(False, "--force", help="Also remove a run that is still running."),
    as_json: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
) -> None:
    """Delete a run's folder (its record and metrics; checkpoints in a save_path elsewhere are kept)."""
    from zae_engine.runs import RunsError, find_run

    run = find_run(root, ref)
    if run.path.is_symlink() or not run.path.is_dir():
        raise RunsError(f"'{run.path}' is not a run folder; nothing removed")
    if run.status == "running" and not force:
        raise RunsError(
            f"run {run.id} ({run.name}) is still running (pid {run.record.pid} on {run.record.host}); "
            "stop it first, or pass --force"
        )
    if not yes:
        question = f"remove run {run.id} ({run.name}, {run.status}) and its folder {run.path}?"
        try:
            confirmed = typer.confirm(question, default=False, err=True)
        except typer.Abort:  # no answer (end of input)
            confirmed = False
        if not confirmed:
            report("error", "bold red", "nothing removed (answer 'y', or pass --yes to remove without asking)")
            raise typer.Exit(EXIT_ERROR)
    shutil.rmtree(run.path)
    if as_json:
        _print_json({"removed": run.summary()})
    else:
        out.print(f"removed run {run.id} ({run.name}): {run.path}", markup=False)
