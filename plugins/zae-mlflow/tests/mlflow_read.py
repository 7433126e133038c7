"""Read what an MLflow run holds back through `MlflowClient`, and keep the user's MLflow settings out of tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENVIRONMENT = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_ALLOW_FILE_STORE",
)


@dataclass
class StoredRun:
    run_id: str
    status: str
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # key -> [(step, value)] by step
    artifacts: list[str] = field(default_factory=list)  # every file path under the run's artifact root

    def steps(self, key: str) -> list[int]:
        return [step for step, _ in self.history.get(key, [])]

    def values(self, key: str) -> list[float]:
        return [value for _, value in self.history.get(key, [])]


def read_run(uri: str, run_id: str, artifacts: bool = True) -> StoredRun:
    """`artifacts=False` for a server's store read without the server (its artifacts are served over HTTP)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    stored = StoredRun(run_id, run.info.status, run.info.run_name, run.data.params, run.data.tags)
    for key in run.data.metrics:
        points = client.get_metric_history(run_id, key)
        stored.history[key] = [(m.step, m.value) for m in sorted(points, key=lambda m: (m.step, m.timestamp))]
    stored.artifacts = _files(client, run_id, None) if artifacts else []
    return stored


def runs_of(uri: str, experiment: str) -> list[StoredRun]:
    """Every run of `experiment`, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    return [read_run(uri, run.info.run_id) for run in runs]


def _files(client: Any, run_id: str, path: str | None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _files(client, run_id, item.path) if item.is_dir else [item.path]
    return out
