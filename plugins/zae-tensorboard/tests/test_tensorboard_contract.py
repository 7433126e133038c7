"""TensorBoardLoggerAddon keeps the tracker contract every tracker add-on owes, read back with TensorBoard's reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tb_events import TBRun, read_runs
from zae_tensorboard import TensorBoardLoggerAddon

from zae_engine.testing import LoggedRun, TrackerContract


class TestTensorBoardTrackerContract(TrackerContract):
    def make_addon(self, folder: Path, **options: Any) -> TensorBoardLoggerAddon:
        return TensorBoardLoggerAddon(log_dir=str(folder), **options)

    def read_back(self, folder: Path) -> list[LoggedRun]:
        return [_logged(run) for run in read_runs(folder)]


def _logged(run: TBRun) -> LoggedRun:
    """TensorBoard keeps one series per tag; a log call is every value at one step of one kind (running or epoch)."""
    rows: dict[tuple[int, bool], dict[str, Any]] = {}
    for tag, points in run.scalars.items():
        for step, value in points:
            rows.setdefault((step, tag.startswith("running/")), {"step": step})[tag] = value
    return LoggedRun(
        run_id=str(run.hparams.get("tracker_run_id", "")),
        rows=sorted(rows.values(), key=lambda row: row["step"]),
        config=run.hparams,
        failed=None if run.status is None else run.status != "STATUS_SUCCESS",
    )
