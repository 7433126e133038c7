"""What the zae-mpu tests add to `zae_engine.testing`, in a module spawned workers and scripts import by name.

The task, its data and the single-process trainer come from the kit (`SeparableTrainer`, `make_dataset`); here
are only the DDP trainers (workers unpickle them by module and name) and a model with a hidden layer, so that
gradient averaging has more than one layer to get right.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from zae_mpu import MultiGPUAddon

from zae_engine.distributed import get_rank
from zae_engine.testing import SeparableTrainer


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 2))


class DDPTrainer(SeparableTrainer.add_on(MultiGPUAddon)):
    """The kit's trainer under MultiGPUAddon."""


class FailingDDPTrainer(DDPTrainer):
    """Rank 1 raises at its third optimizer step, while rank 0 waits for it in a collective."""

    def train_step(self, batch):
        if get_rank() == 1 and self.progress_checker.get_step() == 3:
            raise ValueError("boom on rank 1 at step 3")
        return super().train_step(batch)


class LateReportingDDPTrainer(DDPTrainer):
    """Rank 1 fails at its third step in the order that used to hide its error, every time: it leaves the process
    group first (dropping the DDP wrapper and the group closes its gloo connections), so rank 0's gradient
    all-reduce breaks with "Connection closed by peer" and rank 0 exits reporting that; only once rank 0 is gone
    does rank 1 raise its own error."""

    def train_step(self, batch):
        if not hasattr(self, "peer_pids"):  # first step, on both ranks: learn each other's process id
            self.peer_pids = [None] * dist.get_world_size()
            dist.all_gather_object(self.peer_pids, os.getpid())
        if get_rank() == 1 and self.progress_checker.get_step() == 3:
            self.model = self.model.module
            dist.destroy_process_group()
            gc.collect()
            wait_until_exited(self.peer_pids[0])
            raise ValueError("boom on rank 1 at step 3")
        return super().train_step(batch)


class MeetingDDPTrainer(DDPTrainer):
    """Two runs of this trainer overlap for sure: at its first step, rank 0 of each says it is training (a file in
    `meeting_folder`) and waits, at most two minutes, until the other run says so too."""

    meeting_folder: str = ""
    meeting_runs = 2

    def train_step(self, batch):
        if get_rank() == 0 and not hasattr(self, "met"):
            folder = Path(self.meeting_folder)
            (folder / str(os.getpid())).touch()
            deadline = time.monotonic() + 120
            while len(list(folder.iterdir())) < self.meeting_runs and time.monotonic() < deadline:
                time.sleep(0.01)
            self.met = True
        return super().train_step(batch)


def wait_until_exited(pid: int) -> None:
    """Block until process `pid` has exited (gone, or a zombie nobody has reaped yet)."""
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
