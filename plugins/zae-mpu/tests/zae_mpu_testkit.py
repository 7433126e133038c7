"""What the zae-mpu tests add to `zae_engine.testing`, in a module spawned workers and scripts import by name.

The task, its data and the single-process trainer come from the kit (`SeparableTrainer`, `make_dataset`); here
are only the DDP trainers (workers unpickle them by module and name) and a model with a hidden layer, so that
gradient averaging has more than one layer to get right.
"""

from __future__ import annotations

import torch
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
