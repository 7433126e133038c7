"""MLflowLoggerAddon keeps the tracker contract every tracker add-on owes, read back through MlflowClient.

Here into a local SQLite store (no server); test_mlflow_server.py runs it again against a real `mlflow server`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow_read import StoredRun, runs_of
from zae_mlflow import MLflowLoggerAddon

from zae_engine.testing import LoggedRun, TrackerContract


class TestMLflowSQLiteTrackerContract(TrackerContract):
    def make_addon(self, folder: Path, **options: Any) -> MLflowLoggerAddon:
        return MLflowLoggerAddon(tracking_uri=f"sqlite:///{folder}/mlflow.db", experiment="contract", **options)

    def read_back(self, folder: Path) -> list[LoggedRun]:
        return [logged(run) for run in runs_of(f"sqlite:///{folder}/mlflow.db", "contract")]


def logged(run: StoredRun) -> LoggedRun:
    """MLflow keeps one history per key; a log call is every value at one step of one kind (running or epoch)."""
    rows: dict[tuple[int, bool], dict[str, Any]] = {}
    for key, points in run.history.items():
        for step, value in points:
            rows.setdefault((step, key.startswith("running/")), {"step": step})[key] = value
    return LoggedRun(
        run_id=run.tags.get("zae.tracker_run_id", ""),
        rows=sorted(rows.values(), key=lambda row: row["step"]),
        config=run.params,
        failed=run.status == "FAILED",
    )
