"""The Optuna side of a sweep: storage, the study, samplers and pruners, and the life of one trial in it.

Storage. A value with `://` is a database URL (`sqlite:///sweep.db`, `postgresql://user@host/db`,
`mysql+pymysql://...`); anything else is the path of an Optuna journal file, which is the default
(`runs/sweeps/<study>/optuna.journal`). The journal is an append-only log, each operation one line written under
a lock and fsynced: a crash loses at most the operation being written and never what came before; it needs no
schema (a trial process opens it in milliseconds), and Optuna recommends it over SQLite for several processes on
one machine or on NFS, where SQLite's locking fails ("database is locked", or worse on NFS).

Counting. `--trials N` is the study's total: trials that ended (complete, pruned or failed) plus those running
count; trials a stopped sweep left behind (`interrupted`) do not, and are run again. Several processes share the
total exactly: a process asks Optuna for a trial, then checks that fewer than N counting trials precede it
(Optuna numbers trials in the order they are made); if not, it lost the race for the last slot and records the
trial as a `surplus` placeholder, which is never run and never shown.

Liveness. Each running trial carries its sweep process's host and pid and a time stamp renewed every minute. A
sweep that starts marks `interrupted` the running trials of a dead process on its own host, and on any host those
whose stamp is older than ten minutes, so a machine that died does not hold slots forever.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from zae_engine.errors import ConfigError
from zae_engine.sweep.space import PrunerSpec, SweepSpec, fingerprint, grid_size, grid_space

STATUS = "zae.status"  # interrupted | surplus (on FAIL trials)
ERROR = "zae.error"  # one line: why a trial failed or stopped
HOST, PID, ALIVE = "zae.host", "zae.pid", "zae.alive"
FINGERPRINT = "zae.sweep"  # study attribute: metric, direction, objective and params it was made with
SPEC = "zae.spec"  # study attribute: the spec it was made from (for `zae sweep show`)
LEASE_SECONDS = 60.0
MAX_JOURNAL_LINE = 1 << 20  # a journal entry is a few hundred bytes; read no more than this at a time
LEASE_GRACE_SECONDS = 600.0

SHOWN_STATES = ("complete", "pruned", "failed", "interrupted", "running", "waiting")


class SweepError(ConfigError):
    """A study that cannot be opened or resumed as asked; the message says why and what to do."""


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; the sweep has its own table."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(text: str) -> optuna.storages.BaseStorage:
    """A database URL, or the path of a journal file (created with its folder if missing)."""
    if "://" in text:
        kwargs = {"connect_args": {"timeout": 60}} if text.startswith("sqlite") else {}
        try:
            return optuna.storages.RDBStorage(text, engine_kwargs=kwargs)
        except ImportError as exc:
            raise SweepError(f"--storage {text}: {exc}; install the database driver (e.g. psycopg2-binary)") from None
        except Exception as exc:
            raise SweepError(
                f"--storage {redacted(text)}: cannot open the database: {type(exc).__name__}: {exc}"
            ) from None
    from optuna.storages.journal import JournalFileBackend

    path = Path(text)
    if path.is_dir():
        raise SweepError(f"--storage {text}: is a folder; give a journal file such as {path / 'optuna.journal'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def check_journal(storage: str, repair: bool) -> str | None:
    """Refuse a file that is not an Optuna journal; with `repair`, cut a torn last line (left by a crash mid-write,
    e.g. a power cut) under the journal's own lock, since Optuna would glue its next line onto it and the whole
    journal would become unreadable. Returns a note when it repaired something."""
    if "://" in storage:
        return None
    path = Path(storage)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with path.open("rb") as stream:
        first = stream.readline(MAX_JOURNAL_LINE)
    try:
        looks_right = isinstance(json.loads(first), dict) and "op_code" in json.loads(first)
    except ValueError:
        looks_right = False
    if not looks_right:
        raise SweepError(
            f"{storage}: not an Optuna journal (its first line is not a journal entry); it was left as it is. "
            "Give the journal zae sweep printed, or a new path"
        )
    if not repair:
        return None
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))  # the lock Optuna's own appends take
    lock.acquire()
    try:
        size = path.stat().st_size
        with path.open("rb+") as stream:
            stream.seek(max(0, size - MAX_JOURNAL_LINE))
            tail = stream.read()
            if tail.endswith(b"\n"):
                return None
            cut = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
            stream.truncate(cut)
            stream.flush()
            os.fsync(stream.fileno())
    finally:
        lock.release()
    return f"{storage}: dropped an incomplete last line ({size - cut} bytes), left by a crash while it was written"


def unreadable(storage: str, exc: BaseException) -> str:
    """The message for a storage whose content Optuna refuses; nothing is written to it."""
    return (
        f"{redacted(storage)}: cannot read the study there ({type(exc).__name__}: {one_line(str(exc))}); it was left "
        "as it is. Is it an Optuna journal (or database) written by zae sweep? Give another --storage or --study"
    )


def load_existing(storage: str, name: str) -> optuna.Study:
    """A study that must exist already (`zae sweep show`): a clear message when it does not or cannot be read."""
    from zae_engine.errors import did_you_mean

    quiet_optuna()
    check_journal(storage, repair=False)  # a torn last line is harmless to a reader: Optuna skips it
    opened = open_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        names = optuna.get_all_study_names(opened)
        raise SweepError(
            f"no study '{name}' in {redacted(storage)}{did_you_mean(name, names)}"
            + (f"; it holds: {', '.join(names)}" if names else "; it holds none")
        ) from None
    except ValueError as exc:
        raise SweepError(unreadable(storage, exc)) from None


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{head}://{user}:***@{host}"


def make_pruner(spec: PrunerSpec, n_epoch: int) -> optuna.pruners.BasePruner:
    """Steps are epoch numbers (from 1): the first decision may come after epoch `warmup_epochs + 1`."""
    first = spec.warmup_epochs + 1
    if spec.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=first)
    if spec.name == "hyperband":
        top: int | str = max(n_epoch, first) if n_epoch > 0 else "auto"
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=top, reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_sampler(kind: str, sweep: SweepSpec, seed: int | None) -> optuna.samplers.BaseSampler:
    if kind == "grid":
        space = grid_space(sweep)
        if space is None:
            raise SweepError("the grid sampler needs a finite set of values for every parameter")  # checked earlier
        return optuna.samplers.GridSampler(space, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def total_trials(requested: int, sampler: str, sweep: SweepSpec) -> int:
    """The study's total; a grid has no more distinct trials than points."""
    return min(requested, grid_size(sweep)) if sampler == "grid" else requested


@dataclass(frozen=True)
class StudySettings:
    name: str
    storage: str
    sampler: str
    pruner: PrunerSpec
    n_epoch: int
    seed: int | None = None


def open_study(
    settings: StudySettings,
    sweep: SweepSpec,
    spec_path: str = "",
    storage: optuna.storages.BaseStorage | None = None,
    report: Callable[[str], None] | None = None,
) -> optuna.Study:
    """Create the study, or resume it when the search is the same one; a different search is refused.

    `storage`: an already open storage (e.g. in memory) instead of opening `settings.storage`; `report` gets a
    line about a repaired journal (default: a warning)."""
    quiet_optuna()
    if storage is None:
        note = check_journal(settings.storage, repair=True)
        if note:
            if report is None:
                import warnings

                warnings.warn(note, RuntimeWarning, stacklevel=2)
            else:
                report(note)
        storage = open_storage(settings.storage)
    try:
        existing = optuna.create_study(
            storage=storage, study_name=settings.name, direction=sweep.direction, load_if_exists=True
        )
    except ValueError as exc:  # a damaged journal, a foreign file, a study of that name with several objectives
        raise SweepError(unreadable(settings.storage, exc)) from None
    wanted = (
        optuna.study.StudyDirection.MAXIMIZE if sweep.direction == "maximize" else optuna.study.StudyDirection.MINIMIZE
    )
    if existing.direction != wanted:
        raise SweepError(
            f"study '{settings.name}' in {redacted(settings.storage)} exists and is "
            f"{existing.direction.name.lower()}d, but the sweep says direction: {sweep.direction}; "
            "give another --study name"
        )
    bound = fingerprint(sweep)
    recorded = existing.user_attrs.get(FINGERPRINT)
    if recorded is None:
        existing.set_user_attr(FINGERPRINT, bound)
        if spec_path:
            existing.set_user_attr(SPEC, spec_path)
    elif recorded != bound:
        changed = [key for key in ("metric", "direction", "objective") if recorded.get(key) != bound[key]]
        if recorded.get("params") != bound["params"]:
            changed.append("params")
        raise SweepError(
            f"study '{settings.name}' in {redacted(settings.storage)} was made with another search "
            f"({', '.join(changed)} differ); its trials would not compare with new ones. Give another --study name, "
            "or restore the sweep section it was made with"
        )
    seed = None if settings.seed is None else settings.seed + len(existing.trials)  # a resumed study draws afresh
    return optuna.load_study(
        study_name=settings.name,
        storage=storage,
        sampler=make_sampler(settings.sampler, sweep, seed),
        pruner=make_pruner(settings.pruner, settings.n_epoch),
    )


# ---------------------------------------------------------------------------------------------- trial states
def shown_state(trial: FrozenTrial) -> str:
    """complete | pruned | failed | interrupted | running | waiting | surplus."""
    state = trial.state
    if state == TrialState.FAIL:
        return trial.user_attrs.get(STATUS) or "failed"
    return {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }[state]


def counts(trial: FrozenTrial) -> bool:
    """Whether the trial takes one of the study's `--trials` slots."""
    return shown_state(trial) in ("complete", "pruned", "failed", "running")


def visible(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if shown_state(t) != "surplus"]


def claim_possible(study: optuna.Study, total: int) -> bool:
    """Whether the study has a slot left (fewer than `total` counting trials)."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False)) < total


def claim(study: optuna.Study, total: int) -> optuna.Trial | None:
    """A new running trial if the study has fewer than `total` counting trials, else None (see the module doc)."""
    if not claim_possible(study, total):
        return None
    trial = study.ask()
    ahead = sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and counts(t))
    if ahead >= total:
        trial.set_user_attr(STATUS, "surplus")
        _tell(study, trial, state=TrialState.FAIL)
        return None
    trial.set_user_attr(HOST, socket.gethostname())
    trial.set_user_attr(PID, os.getpid())
    trial.set_user_attr(ALIVE, time.time())
    return trial


def live(study: optuna.Study, trial: FrozenTrial) -> optuna.Trial:
    """A handle on a running trial this process did not ask for itself (to mark or report it)."""
    return optuna.trial.Trial(study, trial._trial_id)


def renew_lease(trial: optuna.Trial) -> None:
    trial.set_user_attr(ALIVE, time.time())


def _tell(study: optuna.Study, trial: optuna.Trial | int, *args: Any, **kwargs: Any) -> None:
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as exc:
        # GridSampler calls study.stop() once the grid is used up, which Optuna allows only inside
        # study.optimize(); the trial is recorded all the same (Optuna writes its state in a `finally`)
        if "Study.stop" not in str(exc):
            raise


def finish_complete(study: optuna.Study, trial: optuna.Trial | int, value: float) -> None:
    _tell(study, trial, value)


def finish_pruned(study: optuna.Study, trial: optuna.Trial | int) -> None:
    _tell(study, trial, state=TrialState.PRUNED)  # its value is the last one it reported


def finish_failed(study: optuna.Study, trial: optuna.Trial, error: str, status: str | None = None) -> None:
    """FAIL, with the one-line reason; `status='interrupted'` for trials stopped by the sweep, not by themselves."""
    trial.set_user_attr(ERROR, one_line(error))
    if status:
        trial.set_user_attr(STATUS, status)
    _tell(study, trial, state=TrialState.FAIL)


def one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]


def mark_stale(study: optuna.Study, now: float | None = None) -> list[int]:
    """Mark `interrupted` the running trials whose sweep process is gone; returns their numbers."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    marked = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        owner_gone = attrs.get(HOST) == host and isinstance(attrs.get(PID), int) and not _alive(attrs[PID])
        expired = isinstance(attrs.get(ALIVE), (int, float)) and now - attrs[ALIVE] > LEASE_GRACE_SECONDS
        if owner_gone or expired:
            why = (
                "its sweep process ended without finishing it"
                if owner_gone
                else "its sweep process stopped renewing it"
            )
            try:
                finish_failed(study, live(study, trial), why, status="interrupted")
            except (RuntimeError, ValueError):  # another process finished it meanwhile
                continue
            marked.append(trial.number)
    return marked


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = [
    "SHOWN_STATES",
    "StudySettings",
    "SweepError",
    "claim",
    "counts",
    "finish_complete",
    "finish_failed",
    "finish_pruned",
    "load_existing",
    "make_pruner",
    "make_sampler",
    "mark_stale",
    "open_storage",
    "open_study",
    "quiet_optuna",
    "renew_lease",
    "shown_state",
    "total_trials",
    "visible",
]
