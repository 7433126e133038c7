"""Child programs for the mid-epoch tests: a training run that a test stops with real signals from outside.

    python midepoch_child.py train OUT LOADER WORKERS ACCUM STOP_AT SEED   (STOP_AT 0: never pause)
    python midepoch_child.py async-forever SAVE_PATH

The tests fork them (`forked`) from a process that has torch imported already, so a child starts at once.

`train` resumes from OUT/ckpt when there is a checkpoint there, trains to 3 epochs in total and writes its final
state into OUT/final (a checkpoint folder: weights, optimizer, scheduler, progress, history, random streams).
With STOP_AT > 0 it pauses after its STOP_AT-th batch (training and validation batches count) and waits for a
signal: the test sends SIGTERM once OUT/paused exists, and the run stops exactly there, exits 143.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zae_engine.data import EpochSampler
from zae_engine.errors import TrainingInterrupted
from zae_engine.seeding import seed_everything
from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon

EPOCHS = 3
TRAIN_SIZE, VALID_SIZE, BATCH = 200, 64, 16  # 13 training batches (the last one short), 4 validation batches
WIDTH = 1024  # async-forever: about 12 MB per checkpoint (weights and Adam moments), so kills land inside writes


class NoisyTrainer(SeparableTrainer):
    """Draws from every global stream each step: dropout in the model, torch, numpy and python noise."""

    def train_step(self, batch):
        x, y = batch
        jitter = torch.randn_like(x) * 0.01 + float(np.random.rand()) * 0.01 + random.random() * 0.01
        return {"loss": nn.functional.cross_entropy(self.model(x + jitter), y)}


class PauseAt(AddOnBase):
    """After the n-th batch, says so (a file) and waits for the signal the test sends."""

    name = "pause_at"

    def __init__(self, at: int, marker: Path) -> None:
        super().__init__()
        self.at, self.marker, self.seen = at, marker, 0

    def on_batch_end(self, result) -> None:
        self.seen += 1
        if self.seen != self.at:
            return
        self.marker.touch()
        deadline = time.monotonic() + 120
        while self.trainer._interrupt is None and time.monotonic() < deadline:
            time.sleep(0.005)  # the signal handler runs in between


def loaders(kind: str, workers: int):
    train_set, valid_set = make_dataset(TRAIN_SIZE, seed=0), make_dataset(VALID_SIZE, seed=1)
    valid = DataLoader(valid_set, batch_size=BATCH, shuffle=True)  # shuffled from the global stream
    options = {"batch_size": BATCH, "num_workers": workers}
    if kind == "plain":  # shuffled from the global stream: replayed on resume
        return DataLoader(train_set, shuffle=True, **options), valid
    if kind == "generator":  # shuffled from the loader's own generator: replayed on resume
        return DataLoader(train_set, shuffle=True, generator=torch.Generator().manual_seed(3), **options), valid
    if kind == "epoch_sampler":  # skipped without loading on resume
        generator = torch.Generator().manual_seed(5)
        sampler = EpochSampler(TRAIN_SIZE, shuffle=True, seed=5, generator=generator)
        return DataLoader(train_set, sampler=sampler, generator=generator, **options), valid
    if kind == "stateful":  # torchdata restores it; its own generator is the case torchdata 0.11 gets wrong alone
        from torchdata.stateful_dataloader import StatefulDataLoader

        generator = torch.Generator().manual_seed(3)
        return StatefulDataLoader(train_set, shuffle=True, generator=generator, **options), valid
    raise SystemExit(f"unknown loader kind {kind!r}")


def train(out: Path, kind: str, workers: int, accum: int, stop_at: int, seed: int) -> None:
    torch.set_num_threads(1)
    seed_everything(seed)  # a resumed run starts from other streams: everything must come from the checkpoint
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    # no periodic checkpoints: the one written on SIGTERM is what the resume must continue from
    addons = [StateManagerAddon(save_path=str(out / "ckpt"), resume=True, keep_last=0, save_top_k=0)]
    if stop_at:
        addons.append(PauseAt(stop_at, out / "paused"))
    trainer = NoisyTrainer(
        model, "cpu", "train", optimizer, scheduler, log_bar=False, grad_accum_steps=accum, addons=addons
    )
    try:
        trainer.run(EPOCHS, *loaders(kind, workers), total=True)
    except TrainingInterrupted as stop:
        sys.exit(128 + signal.Signals[stop.signal_name].value)
    trainer.save_state(out / "final")


class StepStamp(AddOnBase):
    """Writes the optimizer step count into the model right after each step, before the state manager saves."""

    name = "step_stamp"

    def on_optimizer_step(self) -> None:
        self.trainer.model.steps_done.fill_(self.trainer.progress_checker.get_step() - 1)


class StampedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, 2)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def stamped_trainer(save_path: str, **options) -> NoisyTrainer:
    model = StampedNet()
    return NoisyTrainer(
        model,
        "cpu",
        "train",
        torch.optim.Adam(model.parameters(), lr=1e-5),
        log_bar=False,
        addons=[StepStamp(), StateManagerAddon(save_path=save_path, **options)],
    )


def async_forever(save_path: str) -> None:
    """Resume if there is a checkpoint, then train 'forever', an asynchronous checkpoint after every step."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    trainer = stamped_trainer(save_path, every_n_steps=1, async_save=True, keep_last=2, resume=True)
    data = TensorDataset(torch.randn(32, WIDTH), torch.randint(0, 2, (32,)))
    Path(save_path + ".ready").touch()
    trainer.run(100_000, DataLoader(data, batch_size=8))


def forked(target: Callable[..., None], *args: object, output: Path) -> multiprocessing.Process:
    """Start `target(*args)` in a forked process whose stdout and stderr go to `output`."""

    def main() -> None:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        target(*args)
        sys.stdout.flush()
        sys.stderr.flush()

    process = multiprocessing.get_context("fork").Process(target=main, daemon=False)
    process.start()
    return process


if __name__ == "__main__":
    if sys.argv[1] == "train":
        out, kind, workers, accum, stop_at, seed = sys.argv[2:8]
        train(Path(out), kind, int(workers), int(accum), int(stop_at), int(seed))
    elif sys.argv[1] == "async-forever":
        async_forever(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
