"""Trainer and data for the zae-wandb tests, in a module that spawned DDP workers can import by name."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zae_engine.trainer import Trainer


class TinyTrainer(Trainer):
    """Cross-entropy on (x, y) batches; validation also reports accuracy."""

    def train_step(self, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    def test_step(self, batch):
        x, y = batch
        logits = self.model(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float().mean()}


def tiny_loader(n: int = 64, batch_size: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 10, generator=g)
    return DataLoader(TensorDataset(x, (x.sum(dim=1) > 0).long()), batch_size=batch_size)


def tiny_parts(lr: float = 0.1) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    return model, torch.optim.SGD(model.parameters(), lr=lr)
