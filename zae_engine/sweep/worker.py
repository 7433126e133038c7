"""One trial, in a process of its own: build the trial's spec, train it, send back how it ended.

The process is forked from the sweep's zygote (see `zygote.py`), so torch, optuna and the engine are already
imported. Its output goes to the trial's log file; the sweep's table is the only thing on the terminal. It opens
the study itself, to report each epoch's metric (pruning needs the other trials' reports); the sweep process alone
records the trial's end in the study, from the outcome sent back here — or from the exit code, if this process
died before it could send one.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from zae_engine.errors import MissingMetricError
from zae_engine.spec.source import SpecSource
from zae_engine.sweep.space import PrunerSpec

PARENT_GONE_GRACE_SECONDS = 30.0
#: the sweep's sys.path, for the zygote (Python 3.11's fork server does not take it over by itself)
SYS_PATH_VARIABLE = "ZAE_SWEEP_SYS_PATH"


@dataclass(frozen=True)
class TrialTask:
    """Everything a trial process needs (plain data: it is pickled to the process)."""

    number: int
    trial_id: int
    study: str
    storage: str
    pruner: PrunerSpec
    n_epoch: int
    metric: str
    objective: str
    direction: str
    source: SpecSource
    log_path: str


@dataclass(frozen=True)
class Outcome:
    """How a trial ended: `complete` (with its value), `pruned`, `failed` or `interrupted` (with one line why)."""

    state: str
    value: float | None = None
    error: str | None = None
    stop_sweep: bool = False  # the sweep itself is wrong (e.g. a metric no epoch reports): start no more trials
    run: str | None = None  # the id of the trial's run record


def run_trial(task: TrialTask, conn: Any) -> None:
    """The trial process's entry point."""
    _write_output_to(task.log_path)
    _stop_when_the_sweep_is_gone()
    outcome = execute(task)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        conn.send(outcome)
    except OSError:  # the sweep is gone; the study will mark this trial as interrupted
        pass
    finally:
        conn.close()


def execute(task: TrialTask) -> Outcome:
    trainer = None
    try:
        import optuna

        from zae_engine.spec.build import build_run, check_spec
        from zae_engine.spec.models import validate_spec
        from zae_engine.sweep.objective import objective_value
        from zae_engine.sweep.study import make_pruner, open_storage, quiet_optuna, redacted
        from zae_engine.trainer.addons.optuna_pruning import OptunaPruningAddon

        sys.argv[:] = [redacted(arg) for arg in sys.argv]  # the run record keeps argv: no database password in it
        quiet_optuna()
        study = optuna.load_study(
            study_name=task.study, storage=open_storage(task.storage), pruner=make_pruner(task.pruner, task.n_epoch)
        )
        trial = optuna.trial.Trial(study, task.trial_id)
        spec = validate_spec(task.source)
        plan = check_spec(spec, task.source)
        plan.addons.append((OptunaPruningAddon, {"trial": trial, "monitor": task.metric}))
        built = build_run(plan)
        trainer = built.trainer
        trainer.run_spec = plan.run_spec
        print(f"trial {task.number} of study {task.study}", flush=True)
        trainer.run(built.n_epoch, built.loader, built.valid_loader, total=True)
        value = objective_value(trainer.history, task.metric, task.objective, task.direction)
        if math.isnan(value) or math.isinf(value):
            return Outcome(
                "failed",
                error=f"{task.metric} is {value} (the objective must be a finite number)",
                run=_run_id(trainer),
            )
        return Outcome("complete", value=value, run=_run_id(trainer))
    except MissingMetricError as exc:
        traceback.print_exc()
        return Outcome("failed", error=str(exc), stop_sweep=True, run=_run_id(trainer))
    except KeyboardInterrupt as exc:  # the sweep was stopped (it forwards SIGINT/SIGTERM here)
        return Outcome("interrupted", error=str(exc) or "interrupted", run=_run_id(trainer))
    except BaseException as exc:
        if type(exc).__name__ == "TrialPruned":
            return Outcome("pruned", error=str(exc), run=_run_id(trainer))
        traceback.print_exc()
        from zae_engine.runs.recorder import error_summary

        return Outcome("failed", error=error_summary(exc), run=_run_id(trainer))


def _run_id(trainer: Any) -> str | None:
    path = getattr(getattr(trainer, "addons", {}).get("run_log"), "path", None) if trainer is not None else None
    return path.name if path is not None else None


def _write_output_to(path: str) -> None:
    """Everything this process prints (progress, warnings, tracebacks) goes to the trial's log file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _stop_when_the_sweep_is_gone() -> None:
    """If the sweep process dies (kill -9, a closed terminal), stop this trial as Ctrl-C would: after the step."""
    import multiprocessing
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(PARENT_GONE_GRACE_SECONDS)
        os.kill(os.getpid(), signal.SIGINT)  # a second one aborts at once

    threading.Thread(target=watch, name="zae-sweep-parent-watch", daemon=True).start()


__all__ = ["Outcome", "TrialTask", "execute", "run_trial"]
