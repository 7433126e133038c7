"""A training process for tests/test_checkpoint_lock.py: trains a tiny model into a shared save_path.

usage: python checkpoint_writer_child.py SAVE_PATH N_EPOCH WORK_DIR NAME [--fork-sleeper]

It gets ready (imports, model), touches WORK_DIR/NAME.ready, waits for WORK_DIR/go (or WORK_DIR/NAME.go), then
runs. It writes WORK_DIR/NAME.json: its pid and host, "done" or "refused" (with the message), and how many
training steps it took. The model's buffers record which writer saved it and after which epoch, so a
checkpoint holding another writer's weights, or mixing two saves, is visible. With --fork-sleeper it forks a
child that only sleeps, as a DataLoader worker would, and records that child's pid in WORK_DIR/NAME.sleeper.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import zlib
from pathlib import Path

import torch
from torch import nn

from zae_engine.errors import CheckpointError, TrainingInterrupted
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.register_buffer("writer", torch.zeros((), dtype=torch.long))
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.layer(x)


class Stamp(AddOnBase):
    """Writes the finished epoch into the model just before the state manager saves it."""

    name = "stamp"
    hook_order = -10

    def on_epoch_end(self, epoch, summary):
        if self.trainer.mode == "train":
            self.trainer.model.epochs_done.fill_(epoch)


class Child(Trainer):
    steps = 0
    sleeper_file: Path | None = None

    def train_step(self, batch):
        x, y = batch
        Child.steps += 1
        if self.sleeper_file is not None and Child.steps == 1:
            pid = os.fork()
            if pid == 0:  # the "worker": never touches the trainer, only lives on
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                time.sleep(600)
                os._exit(0)
            self.sleeper_file.write_text(str(pid))
        return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    def test_step(self, batch):
        return self.train_step(batch)


def writer_id(name: str) -> int:
    return zlib.crc32(name.encode()) % 1_000_000 + 1


def main(save_path: str, n_epoch: int, work: Path, name: str, fork_sleeper: bool) -> None:
    sys.stdout = open(os.devnull, "w")
    torch.set_num_threads(1)
    torch.manual_seed(writer_id(name))
    model = Net()
    model.writer.fill_(writer_id(name))
    trainer = Child.add_on(Stamp, StateManagerAddon)(
        model,
        "cpu",
        "train",
        torch.optim.SGD(model.parameters(), lr=0.01),
        log_bar=False,
        save_path=save_path,
        keep_last=2,
        save_top_k=1,
    )
    if fork_sleeper:
        Child.sleeper_file = work / f"{name}.sleeper"
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    (work / f"{name}.ready").touch()
    while not (work / "go").exists() and not (work / f"{name}.go").exists():
        time.sleep(0.005)
    report = {"pid": os.getpid(), "host": socket.gethostname()}
    try:
        trainer.run(n_epoch, batches)
        report["outcome"] = "done"
    except CheckpointError as exc:
        report.update(outcome="refused", message=str(exc))
    except TrainingInterrupted:
        report["outcome"] = "interrupted"
    report["steps"] = Child.steps
    (work / f"{name}.json.tmp").write_text(json.dumps(report))
    os.replace(work / f"{name}.json.tmp", work / f"{name}.json")
    sys.exit(0 if report["outcome"] in ("done", "refused") else 128 + signal.SIGTERM)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], "--fork-sleeper" in sys.argv[5:])
