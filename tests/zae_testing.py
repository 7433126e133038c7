"""Test helpers shared by every test folder (importable as `zae_testing`; tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


class SeparableTrainer:
    """Mixin with the steps every core test uses: cross-entropy on (x, y) batches."""

    def train_step(self, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    def test_step(self, batch):
        x, y = batch
        logits = self.model(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float().mean()}


def make_dataset(n: int = 256, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = (x.sum(dim=1) > 0).long()
    return TensorDataset(x, y)
