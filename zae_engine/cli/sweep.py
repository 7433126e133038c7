"""`zae sweep SPEC`: a hyper-parameter search over a spec's `sweep:` section; `zae sweep show STUDY`: its trials.

`zae sweep SPEC ...` is short for `zae sweep start SPEC ...`. Both import optuna (and the sweep, torch) only when
they run, so `zae --help` stays fast; without optuna they say which extra to install.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from zae_engine.cli.help import SWEEP_EPILOG
from zae_engine.cli.output import command, out, state
from zae_engine.errors import ZaeError, did_you_mean

START = "start"


class _DefaultStart(TyperGroup):
    """`zae sweep SPEC ...` runs `start`; `zae sweep show STUDY` runs `show`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [START, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultStart,
    help="Hyper-parameter search over a run spec's `sweep:` section (Optuna). `zae sweep SPEC ...` is short for "
    "`zae sweep start SPEC ...`.",
    no_args_is_help=True,
    epilog=SWEEP_EPILOG,
)


class Sampler(str, Enum):
    tpe = "tpe"
    random = "random"
    grid = "grid"


class Pruner(str, Enum):
    median = "median"
    hyperband = "hyperband"
    none = "none"


STORAGE_HELP = (
    "Where the study lives: a journal file path (default runs/sweeps/STUDY/optuna.journal), or a database URL "
    "(sqlite:///sweep.db, postgresql://..., mysql://...) that several machines share."
)


@app.command(START, epilog=SWEEP_EPILOG)
@command
def start(
    spec: Path = typer.Argument(..., metavar="SPEC", help="Run spec with a `sweep:` section, or a sweep file."),
    trials: int = typer.Option(None, "--trials", "-n", min=1, metavar="N", help="The study's total number of trials."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, metavar="J", help="Trials at a time, each in its own process."),
    storage: str = typer.Option(None, "--storage", metavar="URL", help=STORAGE_HELP),
    study: str = typer.Option(None, "--study", metavar="NAME", help="Study name (default: the spec file's name)."),
    sampler: Sampler = typer.Option(None, "--sampler", help="How values are picked (default: the sweep section's)."),
    pruner: Pruner = typer.Option(None, "--pruner", help="How hopeless trials stop early (default: the section's)."),
    timeout: float = typer.Option(
        None, "--timeout", min=0, metavar="S", help="Start no trial after S seconds (running ones finish)."
    ),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override a spec field."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Search: run trials of the spec with values from its sweep section; write best.yaml."""
    state.debug = state.debug or debug
    _need_optuna()
    from zae_engine.sweep.checks import load_sweep
    from zae_engine.sweep.plan import check_study_name, default_study_name
    from zae_engine.sweep.runner import SweepOptions, SweepRunner

    sampler_name = sampler.value if sampler else None
    if spec.is_file():  # start the trials' zygote now: it imports torch while this process checks the spec
        from zae_engine.spec.build import add_import_roots
        from zae_engine.sweep.runner import zygote_context

        add_import_roots(spec)
        zygote_context()
    plan = load_sweep(spec, overrides, sampler=sampler_name)
    name = check_study_name(study or default_study_name(spec))
    options = SweepOptions(trials, jobs, storage, name, sampler_name, pruner.value if pruner else None, timeout)
    runner = SweepRunner(plan, options, out, spec_label=str(spec))
    out.print(
        f"[bold]zae sweep[/] {escape(str(spec))}: study [bold]{escape(name)}[/], {runner.total} trial(s) in all, "
        f"{jobs} at a time, sampler {runner.sampler}, pruner {runner.pruner.name}; "
        f"{plan.sweep.metric} ({plan.sweep.direction}, {plan.sweep.objective} epoch)"
    )
    out.print(f"storage: {escape(_shown_storage(runner.storage))}; trial logs: {escape(str(runner.folder / 'logs'))}")
    result = runner.run()
    if result.best is not None:
        out.print(f"best.yaml: {escape(str(result.best))} (zae run {escape(str(result.best))})")
    out.print(
        f"trials: zae sweep show {escape(name)}" + (f" --storage {escape(_shown_storage(storage))}" if storage else "")
    )
    if result.stopped_by:
        raise typer.Exit(result.exit_code)
    if result.complete == 0 and result.ran > 0:
        raise ZaeError(f"no trial of study '{name}' completed; see why with: zae sweep show {name}")


@app.command("show")
@command
def show(
    study: str = typer.Argument(..., metavar="STUDY", help="The study's name."),
    storage: str = typer.Option(
        None, "--storage", metavar="URL", help="Where the study lives (default: runs/sweeps/STUDY/optuna.journal)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: the study, its trials and the best one."),
    runs_dir: Path = typer.Option(Path("runs"), "--dir", help="Folder the runs (and runs/sweeps/) are in."),
) -> None:
    """The trials of a study: number, state, value, parameters; and the best one."""
    _need_optuna()
    from zae_engine.sweep.display import headline, trials_table
    from zae_engine.sweep.plan import check_study_name, study_folder
    from zae_engine.sweep.results import recorded_sweep, summary, trial_rows
    from zae_engine.sweep.study import SweepError, load_existing

    folder = study_folder(runs_dir, check_study_name(study))
    if storage is None:
        journal = folder / "optuna.journal"
        if not journal.is_file():
            known = sorted(p.name for p in (runs_dir / "sweeps").glob("*") if (p / "optuna.journal").is_file())
            raise SweepError(
                f"no study '{study}' in {journal}{did_you_mean(study, known)}"
                + (f"; studies there: {', '.join(known)}" if known else "")
                + "; for a study elsewhere give --storage (zae sweep printed it)"
            )
        storage = str(journal)
    loaded = load_existing(storage, study)
    sweep = recorded_sweep(loaded)
    data = summary(loaded, sweep)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    rows = trial_rows(loaded, sweep)
    metric = sweep.metric if sweep else "value"
    best = data["best"]
    best_row = next((r for r in rows if best and r.number == best["number"]), None)
    out.print(headline(study, rows, None, metric, best_row), markup=False)
    out.print(trials_table(rows, sweep, metric, best_row.number if best_row else None))
    if best_row is not None:
        params = ", ".join(f"{k}={v!r}" for k, v in best_row.params.items())
        out.print(f"best: trial {best_row.number}, {metric} {best_row.value!r} ({params})", markup=False)
        best_yaml = folder / "best.yaml"
        if best_yaml.is_file():
            out.print(f"best.yaml: {best_yaml} (zae run {best_yaml})", markup=False)
    else:
        out.print("best: none yet (no trial has completed)", markup=False)
    if rows:
        numbers = [r.number for r in rows if r.state == "complete"][:2] or [rows[0].number]
        example = " ".join(f"{study}-{n}" for n in numbers)
        out.print(f"each trial is the recorded run '{study}-<number>': zae runs compare {example}", markup=False)


def _need_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ZaeError(
            'zae sweep needs optuna, which is not installed: pip install "zae-engine[sweep]" '
            "(from a checkout: pip install -e '.[sweep]')"
        ) from None


def _shown_storage(storage: str | None) -> str:
    from zae_engine.sweep.study import redacted

    return redacted(storage) if storage else ""


__all__ = ["app"]
