"""The reading side: list the runs in a folder, find one by what a user types, load its metrics.

Listing reads one small `run.json` per run and never the metrics, so it stays fast over thousands of runs.
A folder that is not a run (no `run.json`) is ignored; one whose `run.json` is damaged is reported apart
and never stops the listing. Symlinks are not followed, so a runs folder cannot point readers elsewhere.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from zae_engine.errors import ZaeError
from zae_engine.runs.files import UnreadableFile, read_json, read_lines
from zae_engine.runs.liveness import writer_alive
from zae_engine.runs.record import CRASHED, LOCK_NAME, METRICS_NAME, RECORD_FORMAT, RECORD_NAME, RunRecord

LAST = "last"


class RunsError(ZaeError):
    """A run that cannot be found or read; the message names it and what to do."""


@dataclass(frozen=True)
class Run:
    """One recorded run as a reader sees it: the record plus the status as of now."""

    path: Path
    record: RunRecord
    status: str  # the record's status, or `crashed` for a `running` record whose writer is gone

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    def duration_s(self, now: datetime | None = None) -> float:
        return self.record.duration_s(self.status, now)

    def summary(self) -> dict[str, Any]:
        """The `zae runs list --json` object (its keys are part of the CLI contract)."""
        record = self.record
        return {
            "id": record.id,
            "name": record.name,
            "status": self.status,
            "epochs": record.epochs,
            "best": record.best.model_dump(mode="json") if record.best else None,
            "started": record.started.isoformat(),
            "duration_s": round(self.duration_s(), 3),
            "dir": str(self.path),
        }


@dataclass(frozen=True)
class Damaged:
    path: Path
    reason: str


def load_run(path: Path) -> Run:
    """The run in folder `path`; RunsError when it is not a readable run folder."""
    record = _read_record(path)
    if record.status != "running" or writer_alive(path / LOCK_NAME) is not False:
        return Run(path, record, record.status)
    # The writer is gone. It writes its final status before letting go of the lock, so read once more: a run
    # that finished between our two looks is not a crash.
    try:
        record = _read_record(path)
    except RunsError:
        pass
    return Run(path, record, CRASHED if record.status == "running" else record.status)


def _read_record(path: Path) -> RunRecord:
    file = path / RECORD_NAME
    try:
        raw = read_json(file)
    except UnreadableFile as exc:
        raise RunsError(f"{file}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != RECORD_FORMAT:
        raise RunsError(f"{file}: not a zae-engine run record")
    try:
        return RunRecord.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(record)"
        raise RunsError(f"{file}: damaged run record: '{where}': {first['msg']}") from None


def _run_folders(root: Path) -> list[Path]:
    """Sub-folders of `root` holding a run.json, in name (= start) order; symlinked folders are skipped."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise RunsError(
            f"'{root}' is a file, not a runs folder; pass --dir with the folder runs are recorded in"
        ) from None
    folders = [
        Path(entry.path)
        for entry in entries
        if entry.is_dir(follow_symlinks=False) and os.path.lexists(os.path.join(entry.path, RECORD_NAME))
    ]
    return sorted(folders, key=lambda p: p.name)


def list_runs(root: str | os.PathLike) -> tuple[list[Run], list[Damaged]]:
    """Every run under `root` (oldest first) and the folders whose record could not be read."""
    runs: list[Run] = []
    damaged: list[Damaged] = []
    for folder in _run_folders(Path(root)):
        try:
            runs.append(load_run(folder))
        except RunsError as exc:
            damaged.append(Damaged(folder, str(exc)))
    runs.sort(key=lambda run: (run.record.started, run.id))
    return runs, damaged


def find_run(root: str | os.PathLike, ref: str) -> Run:
    """A run by id, unique id prefix, exact name, folder path, or `last` (newest start); RunsError otherwise."""
    root = Path(root)
    if ref == LAST:
        runs, _ = list_runs(root)
        if not runs:
            raise RunsError(f"no runs recorded in '{root}'{_where_hint(root)}")
        return runs[-1]
    folders = _run_folders(root)
    by_id = {folder.name: folder for folder in folders}
    if ref in by_id:
        return load_run(by_id[ref])
    as_path = Path(ref)
    if ref and as_path.is_dir():
        if as_path.is_symlink():
            raise RunsError(f"'{ref}' is a symlink; pass the run folder itself")
        if (as_path / RECORD_NAME).exists():
            return load_run(as_path)
        if os.sep in ref:
            raise RunsError(f"'{ref}' is a folder but not a run (it has no {RECORD_NAME})")
    matches = [name for name in by_id if name.startswith(ref)] if ref else []
    if len(matches) == 1:
        return load_run(by_id[matches[0]])
    if len(matches) > 1:
        shown = ", ".join(matches[:10]) + (f", ... ({len(matches)} in all)" if len(matches) > 10 else "")
        raise RunsError(f"'{ref}' matches several runs: {shown}; type more of the id")
    runs, _ = list_runs(root)
    named = [run for run in runs if run.name == ref]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise RunsError(f"several runs are named '{ref}': {', '.join(run.id for run in named)}; use an id")
    if not runs:
        raise RunsError(f"no runs recorded in '{root}'{_where_hint(root)}")
    close = difflib.get_close_matches(ref, [*by_id, *{run.name for run in runs}], n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise RunsError(
        f"no run '{ref}' in '{root}'{hint}; give an id, a unique id prefix, a name, a run folder or 'last' "
        "(`zae runs list` shows them)"
    )


def _where_hint(root: Path) -> str:
    return "" if root.is_dir() else " (the folder does not exist); pass --dir with the folder runs are recorded in"


@dataclass
class Point:
    kind: str  # "epoch" or "step"
    epoch: int | None
    step: int
    time: float | None
    values: dict[str, float | None]


@dataclass
class Metrics:
    """A run's metric lines, in the order written; `skipped` counts lines that could not be read."""

    points: list[Point] = field(default_factory=list)
    skipped: int = 0

    def epochs(self) -> list[Point]:
        """Epoch summaries, one per epoch (the last one written wins if an epoch appears twice)."""
        by_epoch: dict[Any, Point] = {}
        for point in self.points:
            if point.kind == "epoch":
                by_epoch[point.epoch if point.epoch is not None else ("step", point.step)] = point
        return list(by_epoch.values())

    def epochs_done(self, recorded: int = 0) -> int:
        """The last epoch with a summary line; `run.json` may be up to `save_every` seconds behind while running
        (or after a kill), the metrics file never is. `recorded`: what run.json says."""
        return max([recorded, *(p.epoch for p in self.points if p.kind == "epoch" and isinstance(p.epoch, int))])

    def names(self, kind: str | None = None) -> list[str]:
        """Metric keys in the order they first appear."""
        seen: dict[str, None] = {}
        for point in self.points:
            if kind is None or point.kind == kind:
                seen.update(dict.fromkeys(point.values))
        return list(seen)

    def final(self) -> dict[str, float | None]:
        epochs = self.epochs()
        return dict(epochs[-1].values) if epochs else {}

    def at_epoch(self, epoch: int | None) -> dict[str, float | None]:
        for point in self.epochs():
            if point.epoch == epoch:
                return dict(point.values)
        return {}

    def series(self, metric: str, per: str = "epoch") -> list[tuple[float, float | None]]:
        """(x, value) pairs of one metric: per epoch from epoch lines; per step from step lines (a step line's
        `running/<metric>` counts too), or from epoch lines at their step when no step line has it."""
        if per == "epoch":
            return [(p.epoch, p.values[metric]) for p in self.epochs() if metric in p.values and p.epoch is not None]
        steps = [p for p in self.points if p.kind == "step"]
        for key in (metric, f"running/{metric}"):
            found = [(p.step, p.values[key]) for p in steps if key in p.values]
            if found:
                return found
        return [(p.step, p.values[metric]) for p in self.epochs() if metric in p.values]


def read_metrics(run: Run) -> Metrics:
    """Every complete line of the run's metrics file; incomplete or damaged lines are counted, not fatal."""
    try:
        rows, skipped = read_lines(run.path / METRICS_NAME)
    except UnreadableFile as exc:
        raise RunsError(f"{run.path / METRICS_NAME}: {exc}") from None
    metrics = Metrics(skipped=skipped)
    for row in rows:
        point = _point(row)
        if point is None:
            metrics.skipped += 1
        else:
            metrics.points.append(point)
    return metrics


def _point(row: Any) -> Point | None:
    if (
        not isinstance(row, dict)
        or row.get("kind") not in ("epoch", "step")
        or not isinstance(row.get("metrics"), dict)
    ):
        return None
    epoch, step, time = row.get("epoch"), row.get("step"), row.get("time")
    if not isinstance(step, int) or not (epoch is None or isinstance(epoch, int)):
        return None
    values = {
        str(k): (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
        for k, v in row["metrics"].items()
    }
    return Point(row["kind"], epoch, step, float(time) if isinstance(time, (int, float)) else None, values)
