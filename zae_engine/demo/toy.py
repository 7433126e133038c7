"""The three things a user writes for a run spec: a Trainer subclass, a model and a dataset.

Copy this file next to your spec and change it; `class_path: toy.ToyTrainer` then finds it there.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from zae_engine.trainer import Trainer


class ToyTrainer(Trainer):
    """Classification with cross-entropy; reports accuracy on validation."""

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self.model(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "acc": (logits.argmax(dim=1) == y).float().mean()}


class TinyNet(nn.Sequential):
    """A two-layer perceptron: enough to learn RandomDataset in a few epochs."""

    def __init__(self, in_features: int = 10, hidden: int = 32, classes: int = 2) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class RandomDataset(Dataset):
    """`size` random points in `features` dimensions; the label says on which side of a fixed plane each lies.

    `seed` picks the points; the plane is the same for every seed, so a dataset with another seed validates.
    """

    def __init__(self, size: int = 1000, features: int = 10, seed: int = 0) -> None:
        plane = torch.randn(features, generator=torch.Generator().manual_seed(20240))
        self.x = torch.randn(size, features, generator=torch.Generator().manual_seed(seed))
        self.y = (self.x @ plane > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]
