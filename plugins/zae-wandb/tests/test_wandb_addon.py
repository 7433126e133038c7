"""What is W&B's own in WandBLoggerAddon, with the real wandb client offline and its `.wandb` files read back.

Key scheme, steps, one W&B run across run() calls, failed runs, a failing client and the run id in checkpoints
are the tracker contract's (test_wandb_contract.py); here: offline fallback, process cleanup, the logged
configuration, error summaries, artifacts, ranks, secrets, specs.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest
from wandb_files import read_wandb_dir
from zae_wandb import WandBLoggerAddon

from zae_engine.errors import ConfigError
from zae_engine.testing import SeparableTrainer, make_loader, make_trainer
from zae_engine.trainer.addons import StateManagerAddon
from zae_engine.trainer.addons import WandBLoggerAddon as ShimmedAddon
from zae_engine.trainer.addons.tracking import TrackerWarning

OFFLINE = {"wandb": {"mode": "offline"}}


def test_wandb_is_registered_and_served_by_the_core_shim():
    (entry,) = importlib.metadata.entry_points(group="zae_engine.addons", name="wandb")
    assert entry.load() is WandBLoggerAddon is ShimmedAddon


def test_wandb_without_credentials_falls_back_to_offline_and_says_how_to_sync(trained):
    assert len(trained.warnings) == 2  # one per run() call, no other tracker warning
    message = str(trained.warnings[0].message)
    assert "no API key found" in message and "offline" in message
    folder = message.rsplit("wandb sync ", 1)[1]
    assert (trained.root / "wandb").is_dir() and folder.startswith(str(trained.root / "wandb" / "offline-run-"))
    assert list((trained.root / "wandb").glob(folder.rsplit("/", 1)[1] + "/run-*.wandb"))


def test_wandb_finishes_each_run_and_leaves_no_process_behind(trained):
    first, second = trained.runs
    assert first.project == second.project == "zae-tests"
    assert first.exit_code == second.exit_code == 0
    assert second.summary["train/loss"] == trained.trainer.history[-1]["train/loss"]
    assert trained.trainer.addons["wandb"].run is None  # closed after each run()
    assert "wandb-core" not in trained.children  # and wandb's service process is gone


def test_wandb_config_holds_trainer_addon_and_spec_settings(trained):
    config = trained.runs[0].config
    assert config["trainer"]["log_interval"] == 2 and config["trainer"]["class"].startswith("SeparableTrainer")
    assert config["addons"]["wandb"]["web_logger"] == {"wandb": {"project": "zae-tests", "dir": str(trained.root)}}
    assert config["addons"]["wandb"]["upload_checkpoints"] is False
    assert config["optimizer"]["class"] == "torch.optim.sgd.SGD" and config["optimizer"]["lr"] == 0.1
    assert config["model"] == {"class": "torch.nn.modules.linear.Linear", "parameters": 22}
    assert config["spec"] == trained.trainer.run_spec
    assert trained.runs[0].path.stat().st_size > 3 * 32 * 1024  # so records crossed block boundaries


def test_wandb_puts_the_error_of_a_failed_run_in_its_summary(wandb_home):
    class Exploding(SeparableTrainer):
        def train_step(self, batch):
            if self.progress_checker.get_step() == 6:
                raise RuntimeError("boom at step 6")
            return super().train_step(batch)

    trainer = make_trainer(WandBLoggerAddon(web_logger=OFFLINE), trainer_cls=Exploding)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run(3, make_loader())
    (run,) = read_wandb_dir(wandb_home)
    assert run.exit_code == 1 and run.summary["error"] == "RuntimeError: boom at step 6"


def test_a_real_wandb_error_is_contained_and_named(wandb_home):
    class PullsTheRug(SeparableTrainer):
        """Finishes the W&B run underneath the add-on at step 3: its next log call raises inside wandb."""

        def train_step(self, batch):
            if self.progress_checker.get_step() == 3:
                self.addons["wandb"].run.finish()
            return super().train_step(batch)

    trainer = make_trainer(WandBLoggerAddon(web_logger=OFFLINE), trainer_cls=PullsTheRug, log_interval=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(3, make_loader())
    assert [h["epoch"] for h in trainer.history] == [1, 2, 3]  # training went on to the end
    tracker = [w for w in caught if issubclass(w.category, TrackerWarning)]
    assert len(tracker) == 1
    assert "W&B: logging" in str(tracker[0].message) and "training continues" in str(tracker[0].message)
    (run,) = read_wandb_dir(wandb_home)
    assert [row["step"] for row in run.rows_with("running/train/loss")] == [2]  # what came before the failure
    assert trainer.addons["wandb"].run is None


def test_wandb_uploads_checkpoints_as_artifact_versions(wandb_home, tmp_path):
    state_manager = StateManagerAddon(save_path=str(tmp_path / "ckpt"), save_format="safetensors")
    trainer = make_trainer(state_manager, WandBLoggerAddon(web_logger=OFFLINE, upload_checkpoints=True))
    trainer.run(2, make_loader())
    (run,) = read_wandb_dir(wandb_home)
    assert [a.type for a in run.artifacts] == ["model", "model"]
    assert {a.name for a in run.artifacts} == {f"checkpoints-{run.run_id}"}
    aliases = [sorted(a.aliases) for a in run.artifacts]
    assert aliases == [["epoch-0001", "latest"], ["epoch-0002", "latest"]]
    files = {entry.path for entry in run.artifacts[-1].manifest.contents}
    assert files and any(name.endswith(".safetensors") for name in files)


def test_wandb_logs_nothing_on_other_ranks(wandb_home, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    trainer = make_trainer(WandBLoggerAddon(web_logger=OFFLINE))
    trainer.run(1, make_loader())
    assert trainer.addons["wandb"].run is None and not (wandb_home / "wandb").exists()


def test_wandb_settings_errors_name_the_fix():
    with pytest.raises(ConfigError, match="web_logger has an entry 'wandbb'.*did you mean 'wandb'"):
        make_trainer(WandBLoggerAddon(web_logger={"wandbb": {}}))
    with pytest.raises(ConfigError, match="upload_checkpoints=True .* state_manager"):
        make_trainer(WandBLoggerAddon(upload_checkpoints=True))
    with pytest.raises(ConfigError, match="'log_steps'"):
        WandBLoggerAddon(log_steps="often")


def test_wandb_keeps_secrets_out_of_the_logged_config():
    trainer = make_trainer(WandBLoggerAddon(web_logger={"wandb": {"api_key": "secret-value", "project": "p"}}))
    config = trainer.addon("wandb").run_configuration()
    assert config["addons"]["wandb"]["web_logger"]["wandb"] == {"api_key": "***", "project": "p"}


SPEC_MODULE = """
import torch
from torch import nn
from torch.utils.data import TensorDataset

from zae_engine.trainer import Trainer


class SpecTrainer(Trainer):
    def train_step(self, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    def test_step(self, batch):
        return self.train_step(batch)


def dataset(n):
    x = torch.randn(n, 10, generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, (x.sum(dim=1) > 0).long())
"""

SPEC = """
trainer: {class_path: zae_wandb_spec_parts.SpecTrainer, init_args: {log_bar: false}}
device: cpu
model: {class_path: torch.nn.Linear, init_args: {in_features: 10, out_features: 2}}
optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.05}}
data:
  train: {dataset: {class_path: zae_wandb_spec_parts.dataset, init_args: {n: 32}}, batch_size: 16}
addons:
  - {name: wandb, web_logger: {wandb: {project: spec-demo, mode: offline}}}
run: {n_epoch: 1, seed: 0}
"""


def test_wandb_run_from_a_spec_logs_the_whole_spec(wandb_home, monkeypatch):
    from typer.testing import CliRunner

    from zae_engine.cli.app import app

    (wandb_home / "zae_wandb_spec_parts.py").write_text(SPEC_MODULE)
    (wandb_home / "spec.yaml").write_text(SPEC)
    monkeypatch.chdir(wandb_home)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))  # the CLI adds the spec folder to it
    result = CliRunner().invoke(app, ["run", "spec.yaml", "--set", "optimizer.init_args.lr=0.1"])
    assert result.exit_code == 0, result.output
    (run,) = read_wandb_dir(wandb_home)
    spec = run.config["spec"]
    assert spec["model"]["class_path"] == "torch.nn.Linear" and spec["optimizer"]["init_args"]["lr"] == 0.1
    assert spec["addons"][0]["name"] == "wandb" and run.project == "spec-demo"
    assert [row["epoch"] for row in run.rows_with("epoch")] == [1]


def test_wandb_under_ddp_logs_from_rank_zero_only(wandb_home):
    from zae_mpu import MultiGPUAddon

    wandb = WandBLoggerAddon(web_logger={"wandb": {"mode": "offline", "dir": str(wandb_home)}})
    trainer = make_trainer(MultiGPUAddon(), wandb, log_interval=1, device=["cpu", "cpu"])
    trainer.run(1, make_loader())  # two spawned gloo workers, 2 optimizer steps each
    (run,) = read_wandb_dir(wandb_home)  # one W&B run: rank 1 opened nothing
    assert run.run_id == wandb.tracker_run_id  # the id made in this process reached rank 0
    assert [row["step"] for row in run.rows_with("running/train/loss")] == [1, 2]
    (epoch,) = run.rows_with("epoch")
    assert epoch["train/loss"] == trainer.history[0]["train/loss"] and run.exit_code == 0


def test_wandb_unreachable_server_falls_back_to_offline(wandb_home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    settings = {"project": "p", "settings": {"init_timeout": 2}}
    trainer = make_trainer(WandBLoggerAddon(web_logger={"wandb": settings}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(1, make_loader())
    (warning,) = [w for w in caught if issubclass(w.category, TrackerWarning)]
    assert "W&B could not start an online run" in str(warning.message) and "wandb sync" in str(warning.message)
    (run,) = read_wandb_dir(wandb_home)
    assert run.rows_with("epoch")[0]["train/loss"] == trainer.history[0]["train/loss"]
