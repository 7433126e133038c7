"""`RunRecorder`: the writing side of a run record (what the `run_log` add-on drives).

    recorder = RunRecorder("runs")
    recorder.start(name="baseline", options={"lr": 0.1}, world_size=1, devices=["cpu"])
    recorder.log({"train/loss": 0.7, "valid/loss": 0.6}, step=32, epoch=1)
    recorder.finish("done")

or `with RunRecorder("runs").start(...) as recorder:` which finishes as `done`, `interrupted` (Ctrl-C) or
`failed` (with the error's first line) by itself. Under DDP only rank 0 may hold a recorder.

Costs: `start` asks git (bounded) and reads package metadata once; `log(kind="step")` is one write() of one
line; `log(kind="epoch")` also fsyncs the metrics file, and rewrites `run.json` (temp file, fsync, rename) when
`save_every` seconds have passed since it was last written — the first epoch's line and the end always write it.
Epochs of a few hundred milliseconds would otherwise pay a rewrite each (about 1% of such a run); a reader that
needs the newest epoch of a running or killed run finds it in `metrics.jsonl`, which is never behind.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from zae_engine.redact import masked
from zae_engine.runs import environment
from zae_engine.runs.files import LineAppender, dumps, json_ready, write_atomic
from zae_engine.runs.liveness import WriterLock
from zae_engine.runs.names import default_name, new_run_id
from zae_engine.runs.record import FINAL_STATUSES, LOCK_NAME, METRICS_NAME, RECORD_NAME, Best, RunRecord

MAX_ERROR_CHARS = 300
SAVE_EVERY_SECONDS = 2.0
_ID_ATTEMPTS = 50


def error_summary(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for a table cell."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


class RunRecorder:
    """Records one run into `<root>/<id>/`: `run.json`, `metrics.jsonl` and the writer's lock."""

    def __init__(self, root: str | os.PathLike = "runs", save_every: float = SAVE_EVERY_SECONDS) -> None:
        self.root = Path(root)
        self.save_every = save_every  # seconds between rewrites of run.json while the run goes on
        self.record: RunRecord | None = None
        self.path: Path | None = None
        self._metrics: LineAppender | None = None
        self._lock: WriterLock | None = None
        self._finished = False
        self._saved_at: float | None = None  # monotonic time of the last run.json written after an epoch

    @property
    def id(self) -> str:
        if self.record is None:
            raise RuntimeError("RunRecorder.start() has not been called")
        return self.record.id

    def start(
        self,
        name: str | None = None,
        options: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
        world_size: int = 1,
        devices: list[str] | tuple[str, ...] = (),
        tags: dict[str, str] | None = None,
    ) -> RunRecorder:
        """Claim a new run folder under the root and write `run.json` with status `running`."""
        if self.record is not None:
            raise RuntimeError(f"this RunRecorder already records run {self.record.id}; make one per run")
        started = datetime.now(timezone.utc)
        self.root.mkdir(parents=True, exist_ok=True)
        run_id, self.path = self._claim_folder(started)
        self._lock = WriterLock(self.path / LOCK_NAME)  # before run.json says `running`: readers rely on it
        self.record = RunRecord(
            id=run_id,
            name=name or default_name(),
            started=started,
            updated=started,
            host=environment.host(),
            pid=os.getpid(),
            cwd=os.getcwd(),
            argv=list(sys.argv),
            world_size=world_size,
            devices=[str(d) for d in devices],
            versions=environment.versions(),
            git=environment.git_state(),
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            spec=masked(json_ready(spec)) if spec is not None else None,
            options=masked(json_ready(options or {})),
        )
        self._metrics = LineAppender(self.path / METRICS_NAME)
        self._save()
        return self

    def _claim_folder(self, started: datetime) -> tuple[str, Path]:
        for _ in range(_ID_ATTEMPTS):
            run_id = new_run_id(started)
            path = self.root / run_id
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return run_id, path
        raise RuntimeError(f"could not find a free run id under {self.root} after {_ID_ATTEMPTS} attempts")

    def log(
        self,
        metrics: dict[str, float],
        step: int,
        epoch: int | None = None,
        kind: Literal["epoch", "step"] = "epoch",
    ) -> None:
        """Append one line of metrics. An `epoch` line is the epoch's summary and updates `run.json`.

        Step lines carry running means under the same keys as epoch lines (`train/loss`), so one metric name
        finds both. Values are floats (tensors and numpy scalars are converted); NaN and Inf become null.
        """
        if self.record is None or self._metrics is None:
            raise RuntimeError("RunRecorder.log() before start() or after finish()")
        if kind not in ("epoch", "step"):
            raise ValueError(f"RunRecorder.log: kind must be 'epoch' or 'step', not {kind!r}")
        values: dict[str, float | None] = {}
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"RunRecorder.log: metric {key!r} is not a number ({type(value).__name__})") from None
            values[str(key)] = number if math.isfinite(number) else None
        stamp = time.time()
        epoch = None if epoch is None else int(epoch)
        line = {"kind": kind, "epoch": epoch, "step": int(step), "time": round(stamp, 3), "metrics": values}
        self._metrics.write_line(json.dumps(line, separators=(",", ":"), allow_nan=False))  # values are clean
        if kind == "step":
            return
        self._metrics.sync()
        record = self.record
        record.step = int(step)
        record.updated = datetime.fromtimestamp(stamp, timezone.utc)
        if epoch is not None:
            record.epochs = max(record.epochs, epoch)
        record.final = values
        self._track_best(values, epoch)
        moment = time.monotonic()
        if self._saved_at is None or moment - self._saved_at >= self.save_every:
            self._save()
            self._saved_at = moment

    def _track_best(self, values: dict[str, float | None], epoch: int | None) -> None:
        """The Trainer's own rule (lowest valid/loss, else train/loss) until `finish(best=...)` says otherwise."""
        record = self.record
        assert record is not None
        metric = record.best.metric if record.best else ("valid/loss" if "valid/loss" in values else "train/loss")
        value = values.get(metric)
        if value is None:  # absent, or NaN/Inf (written as null)
            return
        if record.best is None:
            record.best = Best(metric=metric)
        if record.best.better(value):
            record.best.value, record.best.epoch = value, epoch

    def finish(
        self,
        status: Literal["done", "failed", "interrupted", "stopped_early"] = "done",
        error_summary: str | None = None,
        best: dict[str, Any] | Best | None = None,
    ) -> None:
        """Write the final status and release the folder. `best`: {metric, value, epoch[, mode]} to record."""
        if self.record is None:
            raise RuntimeError("RunRecorder.finish() before start()")
        if self._finished:
            raise RuntimeError(f"run {self.record.id} is already finished ({self.record.status})")
        if status not in FINAL_STATUSES:
            raise ValueError(f"RunRecorder.finish: status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        record = self.record
        record.status = status
        record.error = error_summary.strip().splitlines()[0][:MAX_ERROR_CHARS] if error_summary else None
        if best is not None:
            record.best = best if isinstance(best, Best) else Best.model_validate(json_ready(best))
        record.ended = record.updated = datetime.now(timezone.utc)
        try:
            if self._metrics is not None:
                self._metrics.sync()
                self._metrics.close()
            self._save()
        finally:
            self._metrics = None
            self._finished = True
            if self._lock is not None:
                self._lock.release()  # after the final status is on disk: readers never see a dead `running`

    def _save(self) -> None:
        assert self.record is not None and self.path is not None
        write_atomic(self.path / RECORD_NAME, dumps(self.record.model_dump(mode="json"), indent=2) + "\n")

    def __enter__(self) -> RunRecorder:
        if self.record is None:
            raise RuntimeError("use `with RunRecorder(root).start(...) as recorder:`")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._finished:
            return
        if exc is None or (isinstance(exc, SystemExit) and not exc.code):
            self.finish("done")
        elif isinstance(exc, KeyboardInterrupt):
            self.finish("interrupted", error_summary(exc) if str(exc) else None)
        else:
            self.finish("failed", error_summary(exc))
