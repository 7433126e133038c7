"""Exact resume: N epochs, a fresh trainer, load_state(), M more == N+M straight (bit for bit on CPU)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.schedulers import CosineAnnealingScheduler
from zae_engine.seeding import seed_everything
from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import StateManagerAddon

N_FIRST, N_MORE, BATCHES = 2, 2, 8


class NoisyTrainer(SeparableTrainer, Trainer):
    """Draws from every global stream each step (dropout in the model, torch, numpy and python noise)."""

    def train_step(self, batch):
        x, y = batch
        jitter = torch.randn_like(x) * 0.01 + float(np.random.rand()) * 0.01 + random.random() * 0.01
        return {"loss": nn.functional.cross_entropy(self.model(x + jitter), y)}


CheckpointedTrainer = NoisyTrainer.add_on(StateManagerAddon)


def build(cls, seed: int, step_on_batch: bool, **kwargs):
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    total = (N_FIRST + N_MORE) * (BATCHES if step_on_batch else 1)
    scheduler = CosineAnnealingScheduler(optimizer, total_iters=total, eta_min=1e-4)
    return cls(
        model, "cpu", "train", optimizer, scheduler, log_bar=False, scheduler_step_on_batch=step_on_batch, **kwargs
    )


def loaders():
    # no generator=: the shuffling follows torch's global stream, which the checkpoint restores
    train = DataLoader(make_dataset(256), batch_size=32, shuffle=True)
    valid = DataLoader(make_dataset(64, seed=1), batch_size=32)
    return train, valid


@pytest.mark.parametrize(
    ("save_format", "step_on_batch", "how"),
    [("ckpt", False, "load_state"), ("safetensor", True, "resume_keyword"), ("safetensors", False, "load_state")],
)
def test_state_manager_resume_equals_straight_run(tmp_path, save_format, step_on_batch, how):
    straight = build(NoisyTrainer, 0, step_on_batch)
    straight.run(N_FIRST + N_MORE, *loaders())

    first = build(CheckpointedTrainer, 0, step_on_batch, save_path=str(tmp_path), save_format=save_format)
    first.run(N_FIRST, *loaders())

    # fresh objects, different seed, streams disturbed: everything must come from the checkpoint
    resume = how == "resume_keyword"
    second = build(
        CheckpointedTrainer, 123, step_on_batch, save_path=str(tmp_path), save_format=save_format, resume=resume
    )
    torch.rand(7), np.random.rand(3), random.random()
    if not resume:
        loaded = second.load_state()
        assert loaded == tmp_path / f"epoch-{N_FIRST:04d}"
    second.run(N_MORE, *loaders())

    for (name, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    for a, b in zip(straight.optimizer.state_dict()["state"].values(), second.optimizer.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]
    assert [h["train/loss"] for h in straight.history] == [h["train/loss"] for h in second.history]
    assert straight.best == second.best
    assert second.progress_checker.state_dict() == straight.progress_checker.state_dict()


def test_state_manager_resume_restores_best_weights_and_history(tmp_path):
    first = build(CheckpointedTrainer, 0, False, save_path=str(tmp_path), save_format="safetensors")
    first.run(N_FIRST, *loaders())
    second = build(CheckpointedTrainer, 5, False, save_path=str(tmp_path), save_format="safetensors")
    second.load_state()
    assert second.history == first.history
    second.apply_weights()  # the best-weights buffer is refilled from the best checkpoint
    best_epoch = first.best["epoch"]
    assert second.addon("state_manager").best_checkpoint == tmp_path / f"epoch-{best_epoch:04d}"
    for a, b in zip(first._best_weights.values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    # the model file of a safetensors checkpoint is plain weights: apply_weights reads it directly
    second.apply_weights(tmp_path / f"epoch-{best_epoch:04d}" / "model.safetensors")


def test_state_manager_load_state_given_a_path_or_a_save_path(tmp_path):
    first = build(CheckpointedTrainer, 0, False, save_path=str(tmp_path / "run"), keep_last=2, save_top_k=0)
    first.run(N_FIRST, *loaders())
    for path in (tmp_path / "run", tmp_path / "run" / "epoch-0001", tmp_path / "run" / "epoch-0001" / "state.ckpt"):
        other = build(CheckpointedTrainer, 1, False, save_path=str(tmp_path / "elsewhere"))
        loaded = other.load_state(path)
        expected = 2 if path == tmp_path / "run" else 1
        assert other.progress_checker.get_epoch() == expected + 1, path
        assert other.addon("state_manager").last_checkpoint == loaded
