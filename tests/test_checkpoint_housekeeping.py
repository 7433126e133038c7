"""What a killed writer leaves behind, and the best pointer through unscored saves.

- temporary folders and manifests of dead writers are swept when the next writer takes the lock (only ours,
  only in its own save_path, never through a link); complete folders no manifest lists are reported once
  and kept;
- a manual or interrupted save (unscored) keeps the manifest's `best`, so `apply_weights()` still works
  after a resume.
"""

from __future__ import annotations

import json
import os
import signal
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.checkpoint import read_checkpoint
from zae_engine.errors import TrainingInterrupted
from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import StateManagerAddon


class PlainTrainer(SeparableTrainer, Trainer):
    pass


class InterruptingTrainer(SeparableTrainer, Trainer):
    """Sends itself SIGINT during the 2nd training step of the 3rd epoch."""

    def train_step(self, batch):
        if self.progress_checker.get_epoch() == 3 and self.progress_checker.get_step() == 2 * 2 + 2:
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_step(batch)


def make(save_path, cls=PlainTrainer, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    return cls.add_on(StateManagerAddon)(
        model,
        "cpu",
        "train",
        torch.optim.SGD(model.parameters(), lr=0.5),
        log_bar=False,
        save_path=str(save_path),
        **kwargs,
    )


def loader():
    return DataLoader(make_dataset(64), batch_size=32)


def manifest(save_path):
    return json.loads((save_path / "manifest.json").read_text())


# ------------------------------------------------------------------------------------------ housekeeping
def test_temporaries_of_dead_writers_are_swept_when_the_next_writer_takes_the_lock(tmp_path):
    save_path = tmp_path / "run"
    make(save_path).run(1, loader())
    ours = [
        ".tmp-1-deadbeef-epoch-0009",  # pid 1 is alive: a pid check would keep it forever
        f".tmp-{os.getpid()}-cafef00d-epoch-0010",  # this process's own pid, as after a container restart
        f".tmp-{os.getpid()}-0badf00d-old-epoch-0003",
    ]
    for name in ours:
        (save_path / name).mkdir()
        (save_path / name / "state.ckpt").write_bytes(b"half")
    (save_path / ".manifest.json.k2x_9abc.tmp").write_text("{")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    not_ours = [".tmp-notours", ".tmpfoo", ".manifest.json.bak", "notes.txt", ".tmp-2-deadbeef-linked"]
    (save_path / ".tmp-notours").mkdir()
    (save_path / ".tmpfoo").write_text("x")
    (save_path / ".manifest.json.bak").write_text("x")
    (save_path / "notes.txt").write_text("x")
    (save_path / ".tmp-2-deadbeef-linked").symlink_to(outside, target_is_directory=True)
    sibling = tmp_path / "other-run" / ".tmp-1-deadbeef-epoch-0001"
    sibling.mkdir(parents=True)

    make(save_path).save_state()  # a writer: it takes the lock first
    names = set(os.listdir(save_path))
    assert not names & set(ours) and ".manifest.json.k2x_9abc.tmp" not in names
    assert set(not_ours) <= names
    assert (outside / "keep.txt").read_text() == "not ours"  # the link was not followed
    assert sibling.is_dir()  # another save_path is none of its business
    assert [e["name"] for e in manifest(save_path)["checkpoints"]] == ["epoch-0001", "manual-epoch-0000-step-000000"]


def test_complete_folders_no_manifest_lists_are_reported_once_and_kept(tmp_path):
    save_path = tmp_path / "run"
    make(save_path, keep_last=5).run(2, loader())
    data = manifest(save_path)
    data["checkpoints"] = [e for e in data["checkpoints"] if e["name"] != "epoch-0001"]
    (save_path / "manifest.json").write_text(json.dumps(data))  # as if killed between rename and listing

    trainer = make(save_path, keep_last=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(2, loader())
        trainer.save_state()
    reports = [str(w.message) for w in caught if "does not list" in str(w.message)]
    assert len(reports) == 1, reports
    assert str(save_path) in reports[0] and "(epoch-0001)" in reports[0] and "left as they are" in reports[0]
    state, meta = read_checkpoint(save_path / "epoch-0001")  # still there, still whole
    assert meta["epoch"] == 1
    assert "epoch-0001" not in {e["name"] for e in manifest(save_path)["checkpoints"]}


# ------------------------------------------------------------------------------------------ the best pointer
def best_weights(save_path):
    state, _ = read_checkpoint(save_path / manifest(save_path)["best"])
    return state["model"]


def test_a_manual_save_keeps_the_best_and_apply_weights_works_after_a_resume(tmp_path):
    save_path = tmp_path / "run"
    trainer = make(save_path)
    trainer.run(3, loader(), valid_loader=loader())
    best = manifest(save_path)["best"]
    assert best is not None
    trainer.save_state()
    data = manifest(save_path)
    assert data["latest"].startswith("manual-") and data["best"] == best

    again = make(save_path)
    again.load_state()
    assert again.addon("state_manager").best_checkpoint == save_path / best
    again.apply_weights()
    assert torch.equal(again.model.weight, best_weights(save_path)["weight"])


def test_an_interrupted_save_keeps_the_best_and_apply_weights_works_after_a_resume(tmp_path):
    save_path = tmp_path / "run"
    trainer = make(save_path, InterruptingTrainer)
    with pytest.raises(TrainingInterrupted):
        trainer.run(5, loader(), valid_loader=loader())
    data = manifest(save_path)
    assert data["latest"].startswith("interrupted-") and data["best"] is not None

    again = make(save_path)
    again.load_state()
    again.apply_weights()
    assert torch.equal(again.model.weight, best_weights(save_path)["weight"])
    again.run(1, loader(), valid_loader=loader())  # the next scored save ranks with the same monitor and mode
    assert manifest(save_path)["best"] is not None


def test_a_resumed_run_with_max_mode_keeps_ranking_by_it(tmp_path):
    save_path = tmp_path / "run"
    make(save_path, monitor="valid/acc", monitor_mode="max", save_top_k=2).run(2, loader(), valid_loader=loader())
    best = manifest(save_path)["best"]
    again = make(save_path, monitor="valid/acc", monitor_mode="max", save_top_k=2)
    again.load_state()
    again.save_state()
    assert manifest(save_path)["best"] == best
