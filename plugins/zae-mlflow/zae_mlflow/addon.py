"""MLflowLoggerAddon: the shared tracker behaviour (zae_engine.trainer.addons.tracking) spoken to MLflow.

One trainer is one MLflow run. The first `run()` creates it (tagged `zae.tracker_run_id`); a later `run()`, or a
trainer resumed from a checkpoint (the add-on's state holds `mlflow_run_id`), sets the same run back to RUNNING
and appends to it. When `run()` ends the run is FINISHED, FAILED (an error) or KILLED (Ctrl-C, SIGTERM).

Talking to the store never holds the training loop up: params are logged once at the start (bounded retries,
see `connection`), metrics are buffered and sent by a background thread (`sender`), and an unreachable store
is a `TrackerWarning` that says what was lost, never an error.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zae_engine.errors import ConfigError
from zae_engine.trainer.addons.tracking import TrackerAddonBase, first_line
from zae_mlflow.config import MLflowLoggerConfig
from zae_mlflow.connection import bound_http_retries, tracking_uri
from zae_mlflow.sender import MetricSender
from zae_mlflow.values import metric_key, params

#: how long closing a run may wait for the last metrics to go out
CLOSE_TIMEOUT_S = 20.0
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch
TRACKER_RUN_TAG = "zae.tracker_run_id"
ERROR_TAG = "zae.error"


@dataclass
class _OpenRun:
    """The client side of one `run()`: the client, the MLflow run id, and the thread that sends metrics."""

    client: Any
    run_id: str
    uri: str
    sender: MetricSender
    restore_env: Any
    lock: threading.Lock
    continued: bool
    lost_uploads: list[str] = field(default_factory=list)
    upload_error: str = ""


class MLflowLoggerAddon(TrackerAddonBase):
    """Log params, epoch summaries, running step metrics and (optionally) checkpoints to an MLflow run."""

    name = "mlflow"
    display_name = "MLflow"
    Config = MLflowLoggerConfig
    config: MLflowLoggerConfig

    def __init__(self, config: MLflowLoggerConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        #: the MLflow run's id: made by the store at the first run(), then kept (and in checkpoints)
        self.mlflow_run_id: str | None = None

    # ------------------------------------------------------------------ the tracker base's calls
    def _check_own_settings(self) -> None:
        if (self.config.web_logger or {}).get(self.name):
            raise ConfigError(
                f"{self.label()}: web_logger['mlflow'] is not used; this add-on's options are its own keywords "
                "(tracking_uri=..., experiment=..., run_name=..., tags=...)"
            )

    def _client_open(self, settings: dict[str, Any], continuing: bool) -> _OpenRun:
        from mlflow.tracking import MlflowClient

        restore_env = bound_http_retries()
        try:
            uri = tracking_uri(self.config.tracking_uri)
            client = MlflowClient(tracking_uri=uri)
            reopened = self._continue(client)
            run_id = reopened or self._create(client)
        except BaseException:
            restore_env()
            raise
        self.mlflow_run_id = run_id
        lock = threading.Lock()
        sender = MetricSender(lambda batch: client.log_batch(run_id, metrics=batch), lock)
        return _OpenRun(client, run_id, uri, sender, restore_env, lock, continued=reopened is not None)

    def _client_log_config(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        run = self.run
        wanted = params(config)
        logged = run.client.get_run(run.run_id).data.params if run.continued else {}
        changed = sorted(key for key, value in wanted.items() if key in logged and logged[key] != value)
        new = [Param(key, value) for key, value in wanted.items() if key not in logged]
        for start in range(0, len(new), MAX_PARAMS_PER_BATCH):
            run.client.log_batch(run.run_id, params=new[start : start + MAX_PARAMS_PER_BATCH])
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            self.notify(
                f"{len(changed)} setting(s) changed since MLflow run {run.run_id} started ({shown}); MLflow params "
                "cannot change, so the run keeps the first values"
            )

    def _client_log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.run.sender.add([Metric(metric_key(key), float(value), now, step) for key, value in values.items()])

    def _client_upload(self, path: Path) -> None:
        run: _OpenRun = self.run
        if run.sender.down:  # the store is unreachable: do not hold the loop up for an upload that will fail
            run.lost_uploads.append(path.name)
            return
        try:
            with run.lock:
                if path.is_dir():
                    run.client.log_artifacts(run.run_id, str(path), artifact_path=f"checkpoints/{path.name}")
                else:
                    run.client.log_artifact(run.run_id, str(path), artifact_path="checkpoints")
        except Exception as exc:
            run.lost_uploads.append(path.name)
            run.upload_error = f"{type(exc).__name__}: {first_line(exc)}"

    def _client_close(self, error: BaseException | None) -> None:
        run: _OpenRun = self.run
        try:
            loss = run.sender.close(CLOSE_TIMEOUT_S)
            status = _status(error)
            ended = ""
            try:
                with run.lock:
                    if error is not None:
                        run.client.set_tag(run.run_id, ERROR_TAG, f"{type(error).__name__}: {error}"[:5000])
                    run.client.set_terminated(run.run_id, status)
            except Exception as exc:
                ended = f"{type(exc).__name__}: {first_line(exc)}"
            if loss.metrics or run.lost_uploads or ended:
                self.notify(_loss_message(run, loss, ended, status))
        finally:
            run.restore_env()

    # ------------------------------------------------------------------ hooks and state
    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        super().on_epoch_end(epoch, summary)
        if self.run is not None:
            self.run.sender.wake()  # the epoch's metrics go out now, in the background

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every metric logged so far has reached MLflow; False if the store did not take them in time."""
        return True if self.run is None else self.run.sender.flush(timeout)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.mlflow_run_id is not None:
            state["mlflow_run_id"] = self.mlflow_run_id
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        run_id = state.get("mlflow_run_id")
        if isinstance(run_id, str) and run_id.isalnum() and len(run_id) <= 64:
            self.mlflow_run_id = run_id

    # ------------------------------------------------------------------ pieces
    def _continue(self, client: Any) -> str | None:
        """Reopen this trainer's MLflow run (or MLFLOW_RUN_ID's, as `mlflow run` sets it), if the store has it."""
        from mlflow.exceptions import MlflowException

        run_id = self.mlflow_run_id or os.environ.get("MLFLOW_RUN_ID")
        if not run_id:
            return None
        try:
            found = client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            found = None
        if found is None or found.info.lifecycle_stage != "active":
            self.notify(f"run {run_id} is not in {client.tracking_uri} (or was deleted); starting a new MLflow run")
            self.mlflow_run_id = None
            return None
        client.update_run(run_id, status="RUNNING")
        return run_id

    def _create(self, client: Any) -> str:
        tags = {**self.config.tags, TRACKER_RUN_TAG: self.tracker_run_id}
        run = client.create_run(self._experiment_id(client), tags=tags, run_name=self.config.run_name)
        return run.info.run_id

    def _experiment_id(self, client: Any) -> str:
        from mlflow.exceptions import MlflowException

        name = self.config.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name)
            except MlflowException as exc:  # made meanwhile by another process
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)
        if experiment.lifecycle_stage != "active":
            raise ConfigError(
                f"MLflow experiment '{name}' is deleted; restore it (mlflow experiments restore) or pick another name"
            )
        return experiment.experiment_id


def _status(error: BaseException | None) -> str:
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


def _loss_message(run: _OpenRun, loss: Any, ended: str, status: str) -> str:
    lost = []
    if loss.metrics:
        lost.append(loss.describe())
    if run.lost_uploads:
        lost.append(f"the checkpoint upload(s) {', '.join(run.lost_uploads)}")
    why = loss.error or run.upload_error or ended
    message = f"could not reach {run.uri} ({why})"
    if lost:
        message += f": {' and '.join(lost)} were not sent and are lost"
    if ended:
        message += f"; run {run.run_id} could not be marked {status} and stays RUNNING there"
    return message + ". Training was not affected"
