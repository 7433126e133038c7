"""Which checkpoints are written and kept: config, best k, latest, every n epochs, monitor, interrupt, manual saves."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.errors import ConfigError, TrainingInterrupted
from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import StateManagerAddon
from zae_engine.trainer.addons.state_manager import StateManagerConfig

SCORES = [0.5, 0.3, 0.4, 0.2, 0.6, 0.35]


class ScriptedTrainer(SeparableTrainer, Trainer):
    """Reports a scripted 'score' per epoch, so which checkpoints are best is known in advance."""

    def metric_on_epoch_end(self):
        return {"score": SCORES[self.progress_checker.get_epoch() - 1]}


Checkpointed = ScriptedTrainer.add_on(StateManagerAddon)


def make(save_path, **kwargs):
    model = nn.Linear(10, 2)
    return Checkpointed(
        model,
        "cpu",
        "train",
        torch.optim.SGD(model.parameters(), lr=0.1),
        log_bar=False,
        save_path=str(save_path),
        **kwargs,
    )


def loader():
    return DataLoader(make_dataset(64), batch_size=32)


def manifest(save_path):
    return json.loads((save_path / "manifest.json").read_text())


def folders(save_path):
    return sorted(p.name for p in save_path.iterdir() if p.is_dir())


def test_state_manager_config_is_seed_compatible_and_self_describing():
    assert StateManagerConfig(save_format="safetensor").save_format == "safetensors"
    assert StateManagerConfig(save_format=" CKPT ").save_format == "ckpt"
    assert StateManagerConfig().save_format == "ckpt"
    for field in StateManagerConfig.model_fields.values():
        assert field.description, "zae addons show prints every field's description"
    with pytest.raises(ConfigError, match="save_format"):
        make("x", save_format="pickle")
    with pytest.raises(ConfigError, match="monitor_mode='max' needs a monitor"):
        make("x", monitor_mode="max")
    with pytest.raises(ConfigError, match="save_top_k"):
        make("x", save_top_k=-2)
    with pytest.raises(ConfigError, match="did you mean 'save_path'"):
        make("x", save_pth="y")


def test_state_manager_keeps_best_k_and_latest(tmp_path):
    trainer = make(tmp_path, monitor="train/score", save_top_k=2, keep_last=1)
    trainer.run(5, loader())
    # scores 0.5 0.3 0.4 0.2 0.6: best two are epochs 4 and 2, the latest is 5
    assert folders(tmp_path) == ["epoch-0002", "epoch-0004", "epoch-0005"]
    data = manifest(tmp_path)
    assert [c["name"] for c in data["checkpoints"]] == ["epoch-0002", "epoch-0004", "epoch-0005"]
    assert data["best"] == "epoch-0004" and data["latest"] == "epoch-0005"
    addon = trainer.addon("state_manager")
    assert addon.last_checkpoint == tmp_path / "epoch-0005"
    assert addon.best_checkpoint == tmp_path / "epoch-0004"


def test_state_manager_default_saves_when_the_loss_improves(tmp_path):
    trainer = make(tmp_path, keep_last=0)  # monitor: the trainer's best metric, train/loss here
    trainer.run(3, loader())
    data = manifest(tmp_path)
    assert data["checkpoints"][-1]["monitor"] == "train/loss"
    assert data["best"] == f"epoch-{trainer.best['epoch']:04d}"
    assert folders(tmp_path) == [data["best"]]


def test_state_manager_only_improvements_when_keep_last_is_zero(tmp_path):
    trainer = make(tmp_path, monitor="train/score", save_top_k=1, keep_last=0)
    written = []
    for _ in SCORES[:5]:
        trainer.run(1, loader())
        written.append(trainer.addon("state_manager").last_checkpoint.name)
    assert written == ["epoch-0001", "epoch-0002", "epoch-0002", "epoch-0004", "epoch-0004"]
    assert folders(tmp_path) == ["epoch-0004"]


def test_state_manager_max_mode(tmp_path):
    trainer = make(tmp_path, monitor="train/score", monitor_mode="max", save_top_k=1, keep_last=0)
    trainer.run(5, loader())
    assert folders(tmp_path) == ["epoch-0005"]  # 0.6 is the highest


def test_state_manager_every_n_epochs_and_final_save(tmp_path):
    trainer = make(tmp_path, every_n_epochs=2, keep_last=5, save_top_k=0)
    trainer.run(5, loader())
    assert folders(tmp_path) == ["epoch-0002", "epoch-0004", "epoch-0005"]  # epoch 5: the run's end


def test_state_manager_unknown_monitor_names_the_keys(tmp_path):
    trainer = make(tmp_path, monitor="valid/score")
    with pytest.raises(ConfigError, match="'valid/score' is not in the epoch summary.*did you mean 'train/score'"):
        trainer.run(1, loader())


def test_state_manager_manual_saves_are_never_pruned(tmp_path):
    trainer = make(tmp_path, keep_last=1, save_top_k=0)
    manual = trainer.save_state()
    assert manual == tmp_path / "manual-epoch-0000-step-000000"
    trainer.run(3, loader())
    assert folders(tmp_path) == ["epoch-0003", manual.name]
    elsewhere = trainer.save_state(tmp_path / "export" / "final")
    assert (elsewhere / "checkpoint.json").is_file()
    assert "final" not in json.dumps(manifest(tmp_path))  # an explicit path is not listed or pruned
    assert trainer.save_state(elsewhere) == elsewhere  # replacing a checkpoint folder is allowed
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(Exception, match="not a checkpoint folder"):
        trainer.save_state(tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


class InterruptingTrainer(SeparableTrainer, Trainer):
    """Sends itself SIGINT during the 3rd training step of the 2nd epoch."""

    def train_step(self, batch):
        if self.progress_checker.get_epoch() == 2 and self.progress_checker.get_step() == 2 + 3:
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_step(batch)


def test_state_manager_saves_on_interrupt_and_resumes_the_epoch(tmp_path):
    cls = InterruptingTrainer.add_on(StateManagerAddon)
    model = nn.Linear(10, 2)
    trainer = cls(
        model, "cpu", "train", torch.optim.SGD(model.parameters(), lr=0.1), log_bar=False, save_path=str(tmp_path)
    )
    with pytest.raises(TrainingInterrupted):
        trainer.run(3, DataLoader(make_dataset(128), batch_size=32))
    data = manifest(tmp_path)
    last = data["checkpoints"][-1]
    assert last["kind"] == "interrupted" and last["epoch"] == 1 and last["step"] == 2 + 3
    assert data["latest"] == "interrupted-epoch-0001-step-000005"
    meta = json.loads((tmp_path / data["latest"] / "checkpoint.json").read_text())
    assert meta["interrupted"] is True

    model2 = nn.Linear(10, 2)
    again = Checkpointed(
        model2, "cpu", "train", torch.optim.SGD(model2.parameters(), lr=0.1), log_bar=False, save_path=str(tmp_path)
    )
    again.load_state()
    assert again.progress_checker.get_epoch() == 2  # the interrupted epoch runs again from its start
    assert again.progress_checker.get_step() == 6  # with the weights and steps it had reached
    assert torch.equal(model2.weight, model.weight)
    again.run(1, loader())
    assert folders(tmp_path) == ["epoch-0002"]  # newer and better: the interrupted one is pruned (keep_last=1)
    assert manifest(tmp_path)["latest"] == "epoch-0002"


def test_state_manager_no_save_on_interrupt_when_disabled(tmp_path):
    cls = InterruptingTrainer.add_on(StateManagerAddon)
    model = nn.Linear(10, 2)
    trainer = cls(
        model,
        "cpu",
        "train",
        torch.optim.SGD(model.parameters(), lr=0.1),
        log_bar=False,
        save_path=str(tmp_path),
        save_on_interrupt=False,
        keep_last=3,
    )
    with pytest.raises(TrainingInterrupted):
        trainer.run(3, DataLoader(make_dataset(128), batch_size=32))
    assert [c["kind"] for c in manifest(tmp_path)["checkpoints"]] == ["epoch"]


def test_state_manager_test_mode_writes_nothing(tmp_path):
    model = nn.Linear(10, 2)
    trainer = Checkpointed(model, "cpu", "test", log_bar=False, save_path=str(tmp_path / "run"))
    trainer.run(1, loader())
    assert not (tmp_path / "run").exists()


def test_state_manager_resume_keyword_starts_fresh_when_there_is_nothing(tmp_path):
    trainer = make(tmp_path / "run", resume=True, monitor="valid/nothing", save_top_k=0)  # unranked: no monitor needed
    trainer.run(2, loader())
    assert manifest(tmp_path / "run")["latest"] == "epoch-0002"
    again = make(tmp_path / "run", resume=True)
    again.run(1, loader())
    assert again.progress_checker.get_epoch() == 4  # resumed after epoch 2, then trained epoch 3
