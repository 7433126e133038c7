"""What is MLflow's own in MLflowLoggerAddon, in a local SQLite store (no server), read back through MlflowClient.

Key scheme, steps, one tracker run across run() calls, failed runs, a failing client and the run id in checkpoints
are the tracker contract's (test_mlflow_contract.py); the same things against a real server, and a server that
dies mid-run, are in test_mlflow_server.py. Here: params and their limits, metric histories, artifacts, statuses,
resume into the same run, where things go by default, settings refused up front, and stores that cannot be reached.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from mlflow_read import read_run, runs_of
from zae_mlflow import MLflowLoggerAddon

from zae_engine.errors import ConfigError, TrainingInterrupted
from zae_engine.testing import SeparableTrainer, make_loader, make_trainer
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon
from zae_engine.trainer.addons import MLflowLoggerAddon as ShimmedAddon
from zae_engine.trainer.addons.tracking import TrackerWarning

EPOCH_KEYS = ("train/loss", "valid/loss", "valid/acc", "lr/group0", "epoch", "step")


def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def tracker_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, TrackerWarning)]


def test_mlflow_is_registered_and_served_by_the_core_shim():
    (entry,) = importlib.metadata.entry_points(group="zae_engine.addons", name="mlflow")
    assert entry.load() is MLflowLoggerAddon is ShimmedAddon


def test_params_metrics_tags_and_status_reach_the_store(tmp_path):
    addon = MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="exp", run_name="baseline", tags={"team": "v"})
    trainer = make_trainer(addon, log_interval=2)
    trainer.run_spec = {"trainer": {"class_path": "tests.TinyTrainer"}, "run": {"n_epoch": 3, "seed": 0}}
    trainer.run(3, make_loader(), make_loader(seed=1))
    (run,) = runs_of(store(tmp_path), "exp")
    assert run.run_id == addon.mlflow_run_id and run.status == "FINISHED" and run.name == "baseline"
    assert run.tags["team"] == "v" and run.tags["zae.tracker_run_id"] == addon.tracker_run_id
    for key in EPOCH_KEYS:
        assert run.steps(key) == [4, 8, 12], key
        assert run.values(key) == pytest.approx([h[key] for h in trainer.history], rel=1e-12), key
    assert run.steps("running/train/loss") == [2, 4, 6, 8, 10, 12]
    params = run.params
    assert params["trainer/log_interval"] == "2" and params["trainer/gradient_clip"] == "0.0"
    assert params["optimizer/lr"] == "0.1" and params["optimizer/class"] == "torch.optim.sgd.SGD"
    assert params["addons/mlflow/experiment"] == "exp" and params["addons/mlflow/tags/team"] == "v"
    assert params["addons/mlflow/web_logger"] == "null" and params["spec/run/n_epoch"] == "3"
    assert params["tracker_run_id"] == addon.tracker_run_id


class _OddNames(SeparableTrainer):
    def test_step(self, batch):
        return {**super().test_step(batch), "acc@1": torch.tensor(1.0)}


def test_names_and_values_are_made_to_fit_mlflows_limits(tmp_path):
    addon = MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="exp")
    trainer = make_trainer(addon, trainer_cls=_OddNames)
    long_key = "k" * 300
    trainer.run_spec = {"notes": "x" * 7000, long_key: 1, "tags": ["a", "b"]}
    trainer.run(1, make_loader(), make_loader())
    run = read_run(store(tmp_path), addon.mlflow_run_id)
    assert run.values("valid/acc_1") == [1.0]  # 'acc@1' is not a name MLflow takes: one bad name would lose the batch
    notes = run.params["spec/notes"]
    assert len(notes) == 6000 and notes.endswith("…")
    (hashed,) = [key for key in run.params if key.startswith("spec/kkk")]
    assert len(hashed) == 250 and hashed.endswith(hashlib.sha1(f"spec/{long_key}".encode()).hexdigest()[:10])
    assert run.params["spec/tags"] == '["a", "b"]'


def test_checkpoints_become_artifacts(tmp_path):
    saved = tmp_path / "ckpt"
    addon = MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="exp", upload_checkpoints=True)
    make_trainer(StateManagerAddon(save_path=str(saved), keep_last=1, save_top_k=0), addon).run(
        2, make_loader(), make_loader()
    )
    run = read_run(store(tmp_path), addon.mlflow_run_id)
    assert {path.split("/")[1] for path in run.artifacts} == {"epoch-0001", "epoch-0002"}  # epoch 1: pruned locally
    kept = {p.relative_to(saved).as_posix() for p in (saved / "epoch-0002").rglob("*") if p.is_file()}
    assert kept and {f"checkpoints/{p}" for p in kept} == {a for a in run.artifacts if "epoch-0002" in a}


class _FailsAtStep6(SeparableTrainer):
    def train_step(self, batch):
        if self.progress_checker.get_step() == 6:
            raise RuntimeError("boom at step 6")
        return super().train_step(batch)


def test_a_failed_run_is_failed_with_its_error(tmp_path):
    addon = MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="exp")
    with pytest.raises(RuntimeError):
        make_trainer(addon, trainer_cls=_FailsAtStep6, log_interval=1).run(3, make_loader())
    run = read_run(store(tmp_path), addon.mlflow_run_id)
    assert run.status == "FAILED" and run.tags["zae.error"] == "RuntimeError: boom at step 6"
    assert run.steps("running/train/loss") == [1, 2, 3, 4, 5] and run.steps("train/loss") == [4]


class _SigintAfterEpoch1(AddOnBase):
    name = "sigint_after_epoch_1"

    def on_epoch_end(self, epoch, summary):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the trainer's handler: stop after the current step


def test_an_interrupted_run_is_killed(tmp_path):
    addon = MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="exp")
    trainer = make_trainer(_SigintAfterEpoch1(), addon, log_interval=1)
    with pytest.raises(TrainingInterrupted):
        trainer.run(3, make_loader())
    run = read_run(store(tmp_path), addon.mlflow_run_id)
    assert run.status == "KILLED" and run.tags["zae.error"].startswith(
        "TrainingInterrupted: training stopped by SIGINT"
    )
    assert run.steps("train/loss") == [4]


def test_a_resumed_run_appends_to_the_same_mlflow_run(tmp_path):
    def trainer(cls=SeparableTrainer, **options):
        return make_trainer(
            StateManagerAddon(save_path=str(tmp_path / "ckpt"), resume=True),
            MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="exp"),
            trainer_cls=cls,
            log_interval=2,
            **options,
        )

    first = trainer(_FailsAtStep10)
    with pytest.raises(RuntimeError):
        first.run(3, make_loader(), make_loader())  # checkpoints after epochs 1 and 2
    run_id = first.addons["mlflow"].mlflow_run_id
    assert read_run(store(tmp_path), run_id).status == "FAILED"
    resumed = trainer(gradient_clip=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.run(2, make_loader(), make_loader())  # the checkpoint of epoch 2 (step 8): epochs 3 and 4
    assert resumed.addons["mlflow"].mlflow_run_id == run_id
    (run,) = runs_of(store(tmp_path), "exp")
    assert run.run_id == run_id and run.status == "FINISHED"
    assert run.steps("valid/loss") == [4, 8, 12, 16]
    assert run.values("valid/loss")[2:] == pytest.approx([h["valid/loss"] for h in resumed.history[2:]], rel=1e-12)
    assert run.params["trainer/gradient_clip"] == "0.0"  # params cannot change in MLflow: the first value stays
    (note,) = tracker_warnings(caught)
    assert "2 setting(s) changed" in note and "(trainer/class, trainer/gradient_clip)" in note


class _FailsAtStep10(SeparableTrainer):
    def train_step(self, batch):
        if self.progress_checker.get_step() == 10:
            raise RuntimeError("boom at step 10")
        return super().train_step(batch)


def test_the_mlflow_run_id_travels_in_checkpoint_state(tmp_path):
    first = MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="exp")
    make_trainer(first).run(1, make_loader())
    second = MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="exp")
    trainer = make_trainer(second)
    second.load_state_dict(first.state_dict())
    trainer.run(1, make_loader())
    assert second.mlflow_run_id == first.mlflow_run_id and len(runs_of(store(tmp_path), "exp")) == 1


def test_a_run_id_the_store_does_not_have_starts_a_new_run_with_a_note(tmp_path):
    addon = MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="exp")
    trainer = make_trainer(addon)
    addon.load_state_dict({"tracker_run_id": "abc", "mlflow_run_id": "0123456789abcdef0123456789abcdef"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(1, make_loader())
    (note,) = tracker_warnings(caught)
    assert "run 0123456789abcdef0123456789abcdef is not in" in note and "starting a new MLflow run" in note
    assert read_run(store(tmp_path), addon.mlflow_run_id).status == "FINISHED"


def test_by_default_runs_go_to_a_sqlite_file_under_runs(tmp_path):
    addon = MLflowLoggerAddon()
    make_trainer(addon).run(1, make_loader())  # the working folder is tmp_path (conftest)
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    (run,) = runs_of(f"sqlite:///{tmp_path}/runs/mlflow.db", "Default")
    assert run.run_id == addon.mlflow_run_id and run.status == "FINISHED"


def test_the_environment_names_the_store_and_the_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store(tmp_path))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    addon = MLflowLoggerAddon()
    make_trainer(addon).run(1, make_loader())
    (run,) = runs_of(store(tmp_path), "from-env")
    assert run.run_id == addon.mlflow_run_id


def test_the_file_store_works_where_mlflow_allows_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    uri = (tmp_path / "mlruns").as_uri()
    addon = MLflowLoggerAddon(tracking_uri=uri, experiment="exp")
    make_trainer(addon, log_interval=2).run(2, make_loader(), make_loader())
    (run,) = runs_of(uri, "exp")
    assert run.steps("valid/loss") == [4, 8] and run.status == "FINISHED"


def test_credentials_in_the_uri_are_refused_with_the_environment_variables_to_use():
    with pytest.raises(ConfigError, match=r"mlflow.*tracking_uri.*MLFLOW_TRACKING_USERNAME"):
        MLflowLoggerAddon(tracking_uri="https://me:secret@mlflow.example.com")
    with pytest.raises(ConfigError, match=r"MLFLOW_TRACKING_TOKEN"):
        MLflowLoggerAddon(tracking_uri="https://mlflow.example.com/?token=abc")


def test_web_logger_settings_for_mlflow_are_refused_up_front():
    with pytest.raises(ConfigError, match=r"web_logger\['mlflow'\] is not used.*tracking_uri="):
        make_trainer(MLflowLoggerAddon(web_logger={"mlflow": {"tracking_uri": "x"}}))


def test_tags_and_names_past_mlflows_limits_are_refused():
    with pytest.raises(ConfigError, match=r"tags.*longer than MLflow's 8000"):
        MLflowLoggerAddon(tags={"notes": "x" * 8001})
    with pytest.raises(ConfigError, match=r"'experiment'.*at most 500 characters"):
        MLflowLoggerAddon(experiment="x" * 501)


def test_a_bad_uri_is_a_warning_and_training_goes_on(tmp_path):
    trainer = make_trainer(MLflowLoggerAddon(tracking_uri="htp://127.0.0.1:1"), log_interval=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(2, make_loader())
    (message,) = tracker_warnings(caught)
    assert message.startswith("MLflow: starting the run failed") and "htp" in message
    assert "training continues" in message and [h["epoch"] for h in trainer.history] == [1, 2]


def test_a_refused_connection_is_a_warning_and_training_goes_on():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    trainer = make_trainer(MLflowLoggerAddon(tracking_uri=f"http://127.0.0.1:{port}"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(1, make_loader())
    (message,) = tracker_warnings(caught)
    assert "starting the run failed" in message and f"127.0.0.1:{port}" in message
    assert trainer.history[0]["epoch"] == 1
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the bounds are put back


class _AlwaysUnavailable(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []
    authorization: list[str | None] = []

    def _answer(self):
        type(self).requests.append(self.path)
        type(self).authorization.append(self.headers.get("Authorization"))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args):
        pass


def unavailable_server() -> http.server.ThreadingHTTPServer:
    _AlwaysUnavailable.requests, _AlwaysUnavailable.authorization = [], []
    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysUnavailable)


def test_retries_against_an_unavailable_server_are_bounded():
    """MLflow's own defaults retry 7 times with exponential backoff (about four minutes); the add-on allows 3 tries."""
    server = unavailable_server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        trainer = make_trainer(MLflowLoggerAddon(tracking_uri=f"http://127.0.0.1:{server.server_port}"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.run(1, make_loader())
    finally:
        server.shutdown()
        server.server_close()
    (message,) = tracker_warnings(caught)
    assert "starting the run failed" in message and "training continues" in message
    assert len(_AlwaysUnavailable.requests) == 3  # the first request and two retries, then it gave up
    assert trainer.history[0]["epoch"] == 1


def zae(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zae_engine.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_zae_lists_shows_and_puts_it_in_the_schema():
    (row,) = [row for row in json.loads(zae("addons", "list", "--json").stdout) if row["name"] == "mlflow"]
    assert row["status"] == "ok" and row["distribution"] == "zae-mlflow" and row["version"] == "0.2.0"
    assert row["description"].startswith("MLflow tracking")
    shown = json.loads(zae("addons", "show", "mlflow", "--json").stdout)
    assert {"tracking_uri", "experiment", "run_name", "tags", "upload_checkpoints", "log_steps"} <= set(
        shown["properties"]
    )
    schema = zae("schema").stdout
    assert '"tracking_uri"' in schema and "MLflow tracking" in schema


def test_zae_validate_refuses_a_password_in_the_uri_without_a_traceback(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "trainer: {class_path: zae_engine.testing.SeparableTrainer}\n"
        "model: {class_path: torch.nn.Linear, init_args: {in_features: 10, out_features: 2}}\n"
        "optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}\n"
        "data:\n  train: {dataset: {class_path: zae_engine.testing.make_dataset}, batch_size: 16}\n"
        "addons:\n  - {name: mlflow, tracking_uri: 'https://me:secret@mlflow.example.com'}\n"
        "run: {n_epoch: 1}\n"
    )
    done = zae("validate", str(spec), cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert (
        "addons[0].tracking_uri" in output and "export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in output
    )


def test_under_mlflow_run_the_given_run_is_continued(tmp_path, monkeypatch):
    """`mlflow run` creates the run and passes its id in MLFLOW_RUN_ID."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store(tmp_path))
    given = client.create_run(client.create_experiment("projects")).info.run_id
    client.log_param(given, "alpha", "0.5")
    monkeypatch.setenv("MLFLOW_RUN_ID", given)
    addon = MLflowLoggerAddon(tracking_uri=store(tmp_path))
    make_trainer(addon).run(1, make_loader())
    run = read_run(store(tmp_path), given)
    assert addon.mlflow_run_id == given and run.status == "FINISHED"
    assert (
        run.params["alpha"] == "0.5" and run.params["trainer/log_interval"] == "50" and run.steps("train/loss") == [4]
    )


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_under_ddp_or_fsdp_only_rank_zero_logs_and_the_run_id_comes_back(tmp_path, strategy):
    from zae_mpu import MultiGPUAddon

    addon = MLflowLoggerAddon(tracking_uri=store(tmp_path), experiment="ddp")
    trainer = make_trainer(MultiGPUAddon(strategy=strategy), addon, log_interval=1, device=["cpu", "cpu"])
    trainer.run(1, make_loader())  # two spawned gloo workers, 2 optimizer steps each
    assert addon.mlflow_run_id is not None  # made by rank 0 in its worker, handed back with the add-on's state
    trainer.run(1, make_loader())  # new workers: the same MLflow run goes on
    (run,) = runs_of(store(tmp_path), "ddp")
    assert run.run_id == addon.mlflow_run_id and run.status == "FINISHED"
    assert run.steps("running/train/loss") == [1, 2, 3, 4] and run.steps("train/loss") == [2, 4]


def test_the_retry_bounds_stay_while_any_run_is_open_and_go_with_the_last():
    from zae_mlflow.connection import BOUNDED_HTTP, bound_http_retries

    first, second = bound_http_retries(), bound_http_retries()
    first()
    first()  # twice is once
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == BOUNDED_HTTP["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    second()
    assert not any(name in os.environ for name in BOUNDED_HTTP)


def test_retry_bounds_the_user_set_are_kept(monkeypatch):
    from zae_mlflow.connection import bound_http_retries

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    restore = bound_http_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300" and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    restore()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300" and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


@pytest.mark.parametrize(
    "environment, header",
    [
        ({"MLFLOW_TRACKING_TOKEN": "t0ken"}, "Bearer t0ken"),
        ({"MLFLOW_TRACKING_USERNAME": "me", "MLFLOW_TRACKING_PASSWORD": "pw"}, "Basic bWU6cHc="),
    ],
    ids=["token", "basic-auth"],
)
def test_credentials_from_the_environment_reach_the_server(monkeypatch, environment, header):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    server = unavailable_server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        trainer = make_trainer(MLflowLoggerAddon(tracking_uri=f"http://127.0.0.1:{server.server_port}"))
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            trainer.run(1, make_loader())
    finally:
        server.shutdown()
        server.server_close()
    assert _AlwaysUnavailable.authorization and set(_AlwaysUnavailable.authorization) == {header}
