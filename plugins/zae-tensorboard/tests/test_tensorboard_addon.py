"""What is TensorBoard's own in TensorBoardLoggerAddon, read back with TensorBoard's EventAccumulator.

Key scheme, steps, one tracker run across run() calls, failed runs, a failing writer and the run id in checkpoints
are the tracker contract's (test_tensorboard_contract.py); here: every epoch and the hparams, the folder (in the run
record under run_log, in log_dir otherwise), resume into the same folder, a killed process, ranks, settings.
"""

from __future__ import annotations

import importlib.metadata
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tb_events import read_run, read_runs
from zae_tensorboard import TensorBoardLoggerAddon

from zae_engine.errors import ConfigError
from zae_engine.testing import SeparableTrainer, make_loader, make_trainer
from zae_engine.trainer.addons import RunLogAddon, StateManagerAddon
from zae_engine.trainer.addons import TensorBoardLoggerAddon as ShimmedAddon

HERE = Path(__file__).resolve().parent
EPOCH_KEYS = ("train/loss", "valid/loss", "valid/acc", "lr/group0", "epoch", "step")


def test_tensorboard_is_registered_and_served_by_the_core_shim():
    (entry,) = importlib.metadata.entry_points(group="zae_engine.addons", name="tensorboard")
    assert entry.load() is TensorBoardLoggerAddon is ShimmedAddon


def test_every_epoch_and_the_hparams_are_in_the_event_files(tmp_path):
    addon = TensorBoardLoggerAddon(log_dir=str(tmp_path))
    trainer = make_trainer(addon, log_interval=2)
    trainer.run_spec = {"trainer": {"class_path": "tests.TinyTrainer"}, "run": {"n_epoch": 3, "seed": 0}}
    trainer.run(3, make_loader(), make_loader(seed=1))
    (run,) = read_runs(tmp_path)
    assert run.folder == addon.path and run.folder.parent == tmp_path
    assert run.folder.name.endswith(addon.tracker_run_id[:8])
    for key in EPOCH_KEYS:
        assert run.steps(key) == [4, 8, 12], key
        assert run.values(key) == pytest.approx([h[key] for h in trainer.history], rel=1e-6), key
    assert run.steps("running/train/loss") == [2, 4, 6, 8, 10, 12]
    hparams = run.hparams
    assert hparams["tracker_run_id"] == addon.tracker_run_id
    assert hparams["trainer/log_interval"] == 2 and hparams["trainer/gradient_clip"] == 0
    assert hparams["optimizer/lr"] == pytest.approx(0.1) and hparams["optimizer/class"] == "torch.optim.sgd.SGD"
    assert hparams["addons/tensorboard/log_dir"] == str(tmp_path) and hparams["addons/tensorboard/log_steps"] is True
    assert hparams["spec/run/n_epoch"] == 3 and hparams["model/parameters"] == 22
    assert "addons/tensorboard/web_logger" not in hparams  # None is left out: TensorBoard has no null
    assert run.status == "STATUS_SUCCESS"


def test_lists_become_json_text_and_long_text_is_clipped(tmp_path):
    trainer = make_trainer(TensorBoardLoggerAddon(log_dir=str(tmp_path)))
    trainer.run_spec = {"tags": ["a", "b"], "notes": "x" * 5000}
    trainer.run(1, make_loader())
    (run,) = read_runs(tmp_path)
    assert json.loads(run.hparams["spec/tags"]) == ["a", "b"]
    assert len(run.hparams["spec/notes"]) == 1000 and run.hparams["spec/notes"].endswith("…")


def test_tensorboards_hparams_dashboard_lists_the_settings_and_finds_the_metrics(tmp_path):
    """TensorBoard's own hparams backend, over its own data provider: what the HPARAMS tab would show."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.context import RequestContext
    from tensorboard.plugins.base_plugin import TBContext
    from tensorboard.plugins.hparams import backend_context

    make_trainer(TensorBoardLoggerAddon(log_dir=str(tmp_path)), log_interval=2).run(2, make_loader(), make_loader())
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(tmp_path))
    context, request = backend_context.Context(TBContext(data_provider=provider)), RequestContext()
    experiment = context.experiment_from_metadata(request, "", True, context.hparams_metadata(request, ""), [])
    names = {info.name for info in experiment.hparam_infos}
    assert {"trainer/log_interval", "optimizer/lr", "tracker_run_id"} <= names
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"train/loss", "valid/loss", "valid/acc", "lr/group0", "running/train/loss"} <= metrics


@pytest.mark.parametrize("run_log_first", [True, False], ids=["run_log-first", "run_log-last"])
def test_under_run_log_the_events_go_into_the_run_record(tmp_path, run_log_first):
    """`zae run` attaches run_log last; the record folder exists only after every on_run_start, in either order."""
    tensorboard = TensorBoardLoggerAddon(log_dir=str(tmp_path / "unused"))
    record = RunLogAddon(dir=str(tmp_path / "runs"))
    addons = (record, tensorboard) if run_log_first else (tensorboard, record)
    trainer = make_trainer(*addons, log_interval=2)
    trainer.run(2, make_loader(), make_loader())
    assert tensorboard.path == record.path / "tensorboard"
    run = read_run(tensorboard.path)
    assert run.steps("valid/loss") == [4, 8] and run.status == "STATUS_SUCCESS"
    assert not (tmp_path / "unused").exists()
    trainer.run(1, make_loader(), make_loader())  # one record per run(): its own event folder, the steps go on
    assert tensorboard.path == record.path / "tensorboard"
    assert read_run(tensorboard.path).steps("valid/loss") == [12]


def test_zae_run_writes_the_events_into_the_run_record(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "trainer: {class_path: zae_engine.testing.SeparableTrainer, init_args: {log_bar: false, log_interval: 2}}\n"
        "model: {class_path: torch.nn.Linear, init_args: {in_features: 10, out_features: 2}}\n"
        "optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}\n"
        "data:\n"
        "  train: {dataset: {class_path: zae_engine.testing.make_dataset, init_args: {n: 64}}, batch_size: 16}\n"
        "addons:\n  - {name: tensorboard}\n"
        "run: {n_epoch: 2, seed: 0}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "zae_engine.cli", "run", str(spec)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = read_runs(tmp_path / "runs")
    assert run.folder.name == "tensorboard" and (run.folder.parent / "run.json").is_file()
    assert run.steps("train/loss") == [4, 8] and run.hparams["spec/run/n_epoch"] == 2


def test_a_resumed_run_writes_into_the_same_folder_and_hides_the_crashed_attempts_steps(tmp_path):
    def trainer(cls=SeparableTrainer):
        return make_trainer(
            StateManagerAddon(save_path=str(tmp_path / "ckpt"), resume=True),
            TensorBoardLoggerAddon(log_dir=str(tmp_path / "tb")),
            trainer_cls=cls,
            log_interval=1,
        )

    with pytest.raises(RuntimeError, match="step 10"):
        trainer(_FailsAtStep10).run(3, make_loader(), make_loader())  # checkpoints after epochs 1 and 2 (step 8)
    resumed = trainer()
    resumed.run(2, make_loader(), make_loader())  # loads epoch 2's checkpoint: epochs 3 and 4
    (run,) = read_runs(tmp_path / "tb")
    assert len(list(run.folder.glob("events.out.tfevents.*"))) == 2
    assert run.steps("valid/loss") == [4, 8, 12, 16]
    assert run.steps("running/train/loss") == list(range(1, 17))  # the crashed run's step 9 is hidden: no repeats
    assert run.values("valid/loss")[2:] == pytest.approx([h["valid/loss"] for h in resumed.history[2:]], rel=1e-6)
    assert run.status == "STATUS_SUCCESS"  # the crashed run() wrote no end: TensorBoard would keep the first one


class _FailsAtStep10(SeparableTrainer):
    def train_step(self, batch):
        if self.progress_checker.get_step() == 10:
            raise RuntimeError("boom at step 10")
        return super().train_step(batch)


def test_a_killed_process_leaves_every_finished_epoch_readable(tmp_path):
    done = subprocess.run(
        [sys.executable, str(HERE / "scripts" / "killed_run.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    logged = json.loads(done.stdout.split("history", 1)[1].strip().replace("'", '"'))
    (run,) = read_runs(tmp_path)
    assert run.steps("valid/loss") == [4, 8] and run.values("valid/loss") == pytest.approx(logged, rel=1e-6)
    assert run.steps("running/train/loss") == [2, 4, 6, 8]
    assert run.hparams["trainer/log_interval"] == 2
    assert run.status is None  # killed: no session end was written


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_under_ddp_or_fsdp_only_rank_zero_writes(tmp_path, strategy):
    from zae_mpu import MultiGPUAddon

    addon = TensorBoardLoggerAddon(log_dir=str(tmp_path))
    trainer = make_trainer(MultiGPUAddon(strategy=strategy), addon, log_interval=1, device=["cpu", "cpu"])
    trainer.run(1, make_loader())  # two spawned gloo workers, 2 optimizer steps each
    (run,) = read_runs(tmp_path)
    assert len(list(run.folder.glob("events.out.tfevents.*"))) == 1
    assert run.steps("running/train/loss") == [1, 2] and run.steps("train/loss") == [2]
    assert run.values("train/loss") == pytest.approx([trainer.history[0]["train/loss"]], rel=1e-6)


def test_web_logger_settings_for_tensorboard_are_refused_up_front():
    with pytest.raises(ConfigError, match=r"web_logger\['tensorboard'\] is not used.*log_dir="):
        make_trainer(TensorBoardLoggerAddon(web_logger={"tensorboard": {"flush_secs": 5}}))


def test_a_checkpoint_cannot_point_the_folder_outside_log_dir(tmp_path):
    addon = TensorBoardLoggerAddon(log_dir=str(tmp_path / "tb"))
    trainer = make_trainer(addon)
    addon.load_state_dict({"tracker_run_id": "abc", "tensorboard_folder": "../../elsewhere"})
    trainer.run(1, make_loader())
    assert addon.path.parent == tmp_path / "tb" and addon.path.name.endswith("-abc")


def test_the_folder_name_travels_in_checkpoint_state(tmp_path):
    first = TensorBoardLoggerAddon(log_dir=str(tmp_path))
    make_trainer(first).run(1, make_loader())
    second = TensorBoardLoggerAddon(log_dir=str(tmp_path))
    trainer = make_trainer(second)
    second.load_state_dict(first.state_dict())
    trainer.run(1, make_loader())
    assert second.path == first.path
    # only the add-on's state was loaded, so this trainer started again at step 0: TensorBoard shows the new points
    assert read_run(first.path).steps("train/loss") == [4]


def zae(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zae_engine.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_zae_lists_shows_and_puts_it_in_the_schema():
    (row,) = [row for row in json.loads(zae("addons", "list", "--json").stdout) if row["name"] == "tensorboard"]
    assert row["status"] == "ok" and row["distribution"] == "zae-tensorboard" and row["version"] == "0.2.0"
    assert row["description"].startswith("TensorBoard event files")
    shown = json.loads(zae("addons", "show", "tensorboard", "--json").stdout)
    assert shown["properties"]["log_dir"]["default"] == "runs/tensorboard"
    schema = zae("schema").stdout
    assert '"log_dir"' in schema and "TensorBoard event files" in schema
