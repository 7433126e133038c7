"""The sweep process: asks the study for trials, runs each in a process of its own (`jobs` at a time), records how
each ended, keeps `best.yaml` current, and stops cleanly on Ctrl-C.

Trial processes are forked from a zygote that has torch, optuna and the engine imported (`zygote.py`), so a trial
pays for a fork, not for a fresh interpreter and `import torch`. A trial that crashes, leaks or hangs harms only
itself: its process ends, the study records it as failed with one line why, and the sweep starts the next one.

Signals: the first SIGINT/SIGTERM stops asking for trials and is passed on once to every running trial, which
stops after its current step (its run record says `interrupted`; the study marks it `interrupted`, so a rerun
runs it again); the second is passed on again (trials abort at once); the third kills them. Exit 130 (SIGINT) or
143 (SIGTERM).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import optuna

from zae_engine.spec.source import SpecError
from zae_engine.sweep.best import write_best
from zae_engine.sweep.display import LiveView
from zae_engine.sweep.plan import SweepPlan, trial_source
from zae_engine.sweep.results import RUN, best_trial, trial_rows
from zae_engine.sweep.space import PrunerSpec, suggest
from zae_engine.sweep.study import (
    ERROR,
    LEASE_SECONDS,
    StudySettings,
    claim,
    claim_possible,
    finish_complete,
    finish_failed,
    finish_pruned,
    mark_stale,
    one_line,
    open_study,
    renew_lease,
    total_trials,
)
from zae_engine.sweep.worker import SYS_PATH_VARIABLE, Outcome, TrialTask, run_trial

ZYGOTE = "zae_engine.sweep.zygote"
REFRESH_SECONDS = 1.0
ABANDON_GRACE_SECONDS = 30.0
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


@dataclass(frozen=True)
class SweepOptions:
    """`zae sweep`'s options; None: the sweep section's value (or its default)."""

    trials: int | None = None
    jobs: int = 1
    storage: str | None = None
    study: str | None = None
    sampler: str | None = None
    pruner: str | None = None
    timeout: float | None = None


@dataclass
class SweepResult:
    study: str
    storage: str
    folder: Path
    total: int
    ran: int = 0
    best: Path | None = None
    stopped_by: str | None = None  # SIGINT / SIGTERM
    complete: int = 0
    timed_out: bool = False  # --timeout kept trials from starting

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.stopped_by or "", 0)


@dataclass
class _Running:
    trial: optuna.Trial
    process: Any
    conn: Any
    log: Path
    leased: float = field(default_factory=time.monotonic)


class _Stop:
    """SIGINT/SIGTERM as a flag plus a wake-up pipe, so the waiting loop notices at once and nothing is cut mid-write."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.handled = 0
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> str | None:
        return signal.Signals(self.signals[0]).name if self.signals else None

    @property
    def fd(self) -> int:
        return self._read

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.close(self._read)
        os.close(self._write)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)
        try:
            os.write(self._write, b"!")
        except OSError:
            pass

    def drain(self) -> None:
        try:
            while os.read(self._read, 512):
                pass
        except (BlockingIOError, OSError):
            pass


def zygote_context() -> Any:
    """The forkserver context whose server has torch and the engine imported. Start it early (the CLI does, before
    checking the spec): it imports while the sweep checks the spec and opens the study."""
    import json
    import sys
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([ZYGOTE])
    os.environ[SYS_PATH_VARIABLE] = json.dumps(sys.path)
    forkserver.ensure_running()
    return context


class SweepRunner:
    def __init__(self, plan: SweepPlan, options: SweepOptions, console: Any, spec_label: str = "") -> None:
        sweep = plan.sweep
        self.plan = plan
        self.options = options
        self.console = console
        self.study_name = options.study or "sweep"
        self.sampler = options.sampler or sweep.sampler
        pruner = sweep.pruner if options.pruner is None else sweep.pruner.model_copy(update={"name": options.pruner})
        self.pruner: PrunerSpec = pruner
        self.total = total_trials(options.trials or sweep.trials, self.sampler, sweep)
        self.folder = plan.study_folder(options.study or "sweep")
        self.storage = options.storage or str(self.folder / "optuna.journal")
        self.spec_label = spec_label
        self._best_written: int | None = None
        self._stop_sweep: str | None = None

    def run(self) -> SweepResult:
        plan, sweep = self.plan, self.plan.sweep
        context = zygote_context()
        settings = StudySettings(
            self.study_name, self.storage, self.sampler, self.pruner, plan.spec.run.n_epoch, sweep.seed
        )
        study = open_study(settings, sweep, self.spec_label, report=lambda text: self.console.print(text, markup=False))
        result = SweepResult(self.study_name, self.storage, self.folder, self.total)
        stale = mark_stale(study)
        if stale:
            self.console.print(
                f"marked {len(stale)} trial(s) left running by a stopped sweep as interrupted: "
                f"{', '.join(map(str, stale))}; they are run again",
                markup=False,
            )
        deadline = None if self.options.timeout is None else time.monotonic() + self.options.timeout
        running: dict[int, _Running] = {}
        view = LiveView(self.console, self.study_name, sweep, self.total)
        with _Stop() as stop, view:
            try:
                self._loop(study, context, stop, view, running, result, deadline)
            except BaseException:
                self._abandon(study, running)
                raise
        result.stopped_by = stop.requested
        if result.timed_out:
            self.console.print(
                f"--timeout {self.options.timeout:g} s reached: no further trials were started", markup=False
            )
        elif result.ran == 0 and not stop.requested and self._stop_sweep is None:
            self.console.print(
                f"study {self.study_name} already has its {self.total} trial(s); nothing to run "
                "(raise --trials to run more)",
                markup=False,
            )
        best = best_trial(study)
        if best is not None and best.number != self._best_written:
            self._write_best(best)
        result.best = self.folder / "best.yaml" if best is not None else None
        result.complete = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
        if self._stop_sweep is not None:
            raise SpecError([self._stop_sweep])
        return result

    def _loop(
        self,
        study: optuna.Study,
        context: Any,
        stop: _Stop,
        view: LiveView,
        running: dict[int, _Running],
        result: SweepResult,
        deadline: float | None,
    ) -> None:
        self._refresh(study, view, first=True)
        while True:
            timed_out = deadline is not None and time.monotonic() >= deadline
            if timed_out and not result.timed_out and claim_possible(study, self.total):
                result.timed_out = True  # it stopped trials from starting (not merely: the study was complete)
            if not stop.requested and not timed_out and self._stop_sweep is None:
                while len(running) < self.options.jobs:
                    started = self._start(study, context)
                    if started is None:
                        break
                    running[started.process.sentinel] = started
                    result.ran += 1
                    self._refresh(study, view)
            if not running:
                break
            ready = wait([*running, stop.fd], timeout=REFRESH_SECONDS)
            if stop.fd in ready:
                stop.drain()
            self._pass_on_signals(stop, running, view)
            for sentinel in [s for s in ready if s in running]:
                self._finish(study, running.pop(sentinel), stop)
            self._renew_leases(running)
            self._refresh(study, view)
        self._refresh(study, view)

    def _abandon(self, study: optuna.Study, running: dict[int, _Running]) -> None:
        """The sweep itself failed: stop its trials as Ctrl-C would, and mark them interrupted (best effort)."""
        for job in running.values():
            with contextlib.suppress(OSError, TypeError):
                os.kill(job.process.pid, signal.SIGINT)
        deadline = time.monotonic() + ABANDON_GRACE_SECONDS
        for job in running.values():
            job.process.join(max(0.0, deadline - time.monotonic()))
            if job.process.exitcode is None:
                job.process.kill()
                job.process.join()
            with contextlib.suppress(Exception):
                finish_failed(study, job.trial, "the sweep process failed", status="interrupted")
        running.clear()

    # -- one trial ------------------------------------------------------------------------------------
    def _start(self, study: optuna.Study, context: Any) -> _Running | None:
        trial = claim(study, self.total)
        if trial is None:
            return None
        plan, sweep = self.plan, self.plan.sweep
        values = {key: suggest(trial, key, param) for key, param in sweep.params.items()}
        source = trial_source(plan, values, self.study_name, trial.number, record=plan.spec.run.record)
        log = self.folder / "logs" / f"trial-{trial.number}.log"
        task = TrialTask(
            number=trial.number,
            trial_id=trial._trial_id,  # Optuna's id of the trial, to reopen it in the trial process
            study=self.study_name,
            storage=str(Path(self.storage).resolve()) if "://" not in self.storage else self.storage,
            pruner=self.pruner,
            n_epoch=plan.spec.run.n_epoch,
            metric=sweep.metric,
            objective=sweep.objective,
            direction=sweep.direction,
            source=source,
            log_path=str(log.resolve()),
        )
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=run_trial, args=(task, send), name=f"zae-trial-{trial.number}", daemon=False)
        try:
            process.start()
        except Exception as exc:
            finish_failed(study, trial, f"could not start the trial's process: {type(exc).__name__}: {exc}")
            receive.close()
            send.close()
            raise
        send.close()
        return _Running(trial, process, receive, log)

    def _finish(self, study: optuna.Study, job: _Running, stop: _Stop) -> None:
        job.process.join()
        outcome: Outcome | None = None
        try:
            if job.conn.poll():
                outcome = job.conn.recv()
        except (EOFError, OSError):
            outcome = None
        finally:
            job.conn.close()
        trial = job.trial
        try:
            if outcome is not None and outcome.run:
                trial.set_user_attr(RUN, outcome.run)
            if outcome is None:
                if stop.requested:
                    finish_failed(study, trial, f"stopped by {stop.requested}", status="interrupted")
                else:
                    finish_failed(
                        study, trial, f"the trial's process died ({_exit(job.process.exitcode)}); see {job.log}"
                    )
            elif outcome.state == "complete" and outcome.value is not None:
                finish_complete(study, trial, outcome.value)
                best = best_trial(study)
                if best is not None and best.number == trial.number:
                    self._write_best(best)
            elif outcome.state == "pruned":
                trial.set_user_attr(ERROR, one_line(outcome.error or "pruned"))
                finish_pruned(study, trial)
            elif outcome.state == "interrupted":
                finish_failed(study, trial, outcome.error or "interrupted", status="interrupted")
            else:
                finish_failed(study, trial, outcome.error or "failed")
                if outcome.stop_sweep and self._stop_sweep is None:
                    where = self.plan.source.where(("sweep", "metric"))
                    self._stop_sweep = f"{where}: sweep.metric: {outcome.error}; no more trials were started"
        except (RuntimeError, ValueError) as exc:  # e.g. another sweep marked it stale meanwhile
            self.console.print(f"trial {trial.number}: could not record its end: {exc}", markup=False)
        job.process.close()

    def _write_best(self, best: Any) -> None:
        write_best(self.plan, self.study_name, best, self.folder)
        self._best_written = best.number

    # -- the loop's chores ----------------------------------------------------------------------------
    def _pass_on_signals(self, stop: _Stop, running: dict[int, _Running], view: LiveView) -> None:
        while stop.handled < len(stop.signals):
            signum = stop.signals[stop.handled]
            stop.handled += 1
            name = signal.Signals(signum).name
            if stop.handled == 1:
                view.note(
                    f"{name}: starting no more trials; the {len(running)} running trial(s) stop after their step "
                    "(again: abort them now)"
                )
            forward = signum if stop.handled <= 2 else signal.SIGKILL
            for job in running.values():
                try:
                    os.kill(job.process.pid, forward)
                except (ProcessLookupError, TypeError):
                    pass

    def _renew_leases(self, running: dict[int, _Running]) -> None:
        now = time.monotonic()
        for job in running.values():
            if now - job.leased >= LEASE_SECONDS:
                job.leased = now
                try:
                    renew_lease(job.trial)
                except (RuntimeError, ValueError):
                    pass

    def _refresh(self, study: optuna.Study, view: LiveView, first: bool = False) -> None:
        rows = trial_rows(study, self.plan.sweep)
        best = best_trial(study)
        view.update(rows, next((r for r in rows if best is not None and r.number == best.number), None), first)


def _exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


__all__ = ["SweepOptions", "SweepResult", "SweepRunner"]
