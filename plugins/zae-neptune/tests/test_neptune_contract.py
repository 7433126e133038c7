"""NeptuneLoggerAddon keeps the tracker contract every tracker add-on owes, checked in Neptune's offline runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from neptune_offline import QUIET, OfflineRun, isolate_neptune, read_offline_runs
from zae_neptune import NeptuneLoggerAddon

from zae_engine.testing import LoggedRun, TrackerContract


class TestNeptuneTrackerContract(TrackerContract):
    @pytest.fixture(autouse=True)
    def _offline_neptune(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        # neptune writes under ./.neptune and has no setting for another folder; the contract hands make_addon
        # and read_back the test's tmp_path, so that is where the test runs
        isolate_neptune(monkeypatch, tmp_path)

    def make_addon(self, folder: Path, **options: Any) -> NeptuneLoggerAddon:
        assert Path.cwd() == folder.resolve(), "neptune logs into the working folder"
        return NeptuneLoggerAddon(web_logger={"neptune": {"mode": "offline", **QUIET}}, **options)

    def read_back(self, folder: Path) -> list[LoggedRun]:
        return [_logged(run) for run in read_offline_runs(folder)]


def _logged(run: OfflineRun) -> LoggedRun:
    """Neptune stores one series per key; a log call is the points one call appended, all at one step.

    Each call logs either running means (`running/...`) or an epoch summary, so (step, kind) tells them apart.
    """
    rows: dict[tuple[Any, bool], dict[str, Any]] = {}
    for key, step, value in run.points:
        if key.startswith(("config/", "checkpoints/")):
            continue
        rows.setdefault((step, key.startswith("running/")), {"step": step})[key] = value
    config = {k.removeprefix("config/"): v for k, v in run.fields.items() if k.startswith("config/")}
    return LoggedRun(
        run_id=str(run.fields.get("config/tracker_run_id", "")),
        rows=sorted(rows.values(), key=lambda row: row["step"]),  # neptune may merge calls on one field
        config=config,
        failed=bool(run.fields.get("sys/failed", False)),
    )
