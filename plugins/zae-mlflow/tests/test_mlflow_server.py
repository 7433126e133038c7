"""MLflowLoggerAddon against a real `mlflow server` process (SQLite backend, local artifact root), over HTTP.

One server serves the whole module (start-up takes seconds); the test that kills a server starts its own.
Everything is read back through MlflowClient: from the server, or from its SQLite store once it is dead.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from mlflow_read import read_run, runs_of
from mlflow_server import Server, start_server
from test_mlflow_contract import logged
from zae_mlflow import MLflowLoggerAddon

from zae_engine.testing import LoggedRun, SeparableTrainer, TrackerContract, make_loader, make_trainer
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon
from zae_engine.trainer.addons.tracking import TrackerWarning


class TestMLflowServerTrackerContract(TrackerContract):
    @pytest.fixture(autouse=True)
    def _server(self, mlflow_server: Server) -> None:
        self.server = mlflow_server

    def make_addon(self, folder: Path, **options: Any) -> MLflowLoggerAddon:
        return MLflowLoggerAddon(tracking_uri=self.server.uri, experiment=folder.name, **options)

    def read_back(self, folder: Path) -> list[LoggedRun]:
        return [logged(run) for run in runs_of(self.server.uri, folder.name)]


class _FailsAtStep10(SeparableTrainer):
    def train_step(self, batch):
        if self.progress_checker.get_step() == 10 and self.fail:
            raise RuntimeError("boom at step 10")
        return super().train_step(batch)


def test_params_metrics_artifacts_status_and_resume_through_the_server(mlflow_server, tmp_path):
    def trainer(fail: bool):
        made = make_trainer(
            StateManagerAddon(save_path=str(tmp_path / "ckpt"), resume=True, keep_last=1, save_top_k=0),
            MLflowLoggerAddon(tracking_uri=mlflow_server.uri, experiment="served", upload_checkpoints=True),
            trainer_cls=_FailsAtStep10,
            log_interval=2,
        )
        made.fail = fail
        return made

    first = trainer(fail=True)
    with pytest.raises(RuntimeError, match="step 10"):
        first.run(3, make_loader(), make_loader(seed=1))  # epochs 1 and 2 saved and uploaded, then it fails
    run_id = first.addons["mlflow"].mlflow_run_id
    failed = read_run(mlflow_server.uri, run_id)
    assert failed.status == "FAILED" and failed.tags["zae.error"] == "RuntimeError: boom at step 10"
    assert failed.steps("valid/loss") == [4, 8] and failed.steps("running/train/loss") == [2, 4, 6, 8]

    resumed = trainer(fail=False)
    resumed.run(2, make_loader(), make_loader(seed=1))  # resumes from epoch 2's checkpoint: epochs 3 and 4
    (run,) = runs_of(mlflow_server.uri, "served")
    assert run.run_id == run_id == resumed.addons["mlflow"].mlflow_run_id and run.status == "FINISHED"
    assert run.steps("valid/loss") == [4, 8, 12, 16]
    history = first.history[:2] + resumed.history[2:]
    assert run.values("valid/loss") == pytest.approx([h["valid/loss"] for h in history], rel=1e-12)
    assert run.steps("running/train/loss") == [2, 4, 6, 8, 10, 12, 14, 16]
    assert run.params["trainer/log_interval"] == "2" and run.params["addons/mlflow/upload_checkpoints"] == "true"
    uploaded = {path.split("/")[1] for path in run.artifacts if path.startswith("checkpoints/")}
    assert uploaded == {"epoch-0001", "epoch-0002", "epoch-0003", "epoch-0004"}
    assert any((mlflow_server.artifacts).rglob("epoch-0004"))  # stored by the server, under its artifact root


class _KillServerAfterEpoch1(AddOnBase):
    name = "kill_server_after_epoch_1"
    phase = "report"  # attached after the tracker: its epoch-1 metrics are queued when this runs

    def __init__(self, server: Server, tracker: MLflowLoggerAddon) -> None:
        super().__init__()
        self.server, self.tracker, self.flushed = server, tracker, None

    def on_epoch_end(self, epoch, summary):
        if epoch == 1:
            self.flushed = self.tracker.flush(timeout=60)  # epoch 1 has reached the server...
            self.server.kill()  # ...then the server dies, as in a crash


def test_a_server_killed_mid_run_costs_only_what_could_not_be_sent(tmp_path):
    server = start_server(tmp_path / "server")
    try:
        tracker = MLflowLoggerAddon(tracking_uri=server.uri, experiment="doomed", upload_checkpoints=True)
        killer = _KillServerAfterEpoch1(server, tracker)
        state = StateManagerAddon(save_path=str(tmp_path / "ckpt"), keep_last=1, save_top_k=0)
        trainer = make_trainer(state, tracker, killer, log_interval=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.run(3, make_loader(), make_loader(seed=1))
    finally:
        server.stop()
    assert killer.flushed is True
    assert [h["epoch"] for h in trainer.history] == [1, 2, 3]  # training finished
    (message,) = [str(w.message) for w in caught if issubclass(w.category, TrackerWarning)]
    assert message.startswith(f"MLflow: could not reach {server.uri} (")
    # epochs 2 and 3: running means at steps 6, 8, 10, 12 (2 keys each) and two summaries of 6 keys
    assert "20 metric values (steps 6-12)" in message
    assert "the checkpoint upload(s) epoch-0002, epoch-0003 were not sent and are lost" in message
    assert f"run {tracker.mlflow_run_id} could not be marked FINISHED and stays RUNNING there" in message
    run = read_run(server.backend_uri, tracker.mlflow_run_id, artifacts=False)  # the server's store, read directly
    assert run.status == "RUNNING"
    assert run.steps("valid/loss") == [4] and run.steps("running/train/loss") == [2, 4]
