"""What the training-feature tests (precision, accumulation, NaN guard, early stopping, EMA, DDP) add to the kit.

The task, the trainer, `make_trainer` and `assert_same_weights` come from `zae_engine.testing`; here are scripted
validation metrics, fixed batches, an unsized loader and the hand-written SGD loop the trainer must reproduce.
Importable as `features_testing` (tests/ is on pytest's pythonpath, and spawned DDP workers inherit sys.path).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.testing import SeparableTrainer, make_dataset, make_model


class ScriptedValidTrainer(SeparableTrainer):
    """Validation returns `script[epoch - 1]` as its loss and `1 - that` as 'acc': epoch metrics chosen by the test."""

    script: list[float] = []

    def test_step(self, batch):
        value = self.script[self.progress_checker.get_epoch() - 1]
        return {"loss": torch.tensor(value), "acc": torch.tensor(1.0 - value)}


class Unsized:
    """An iterable of batches with no len(): the loop cannot know where the epoch ends."""

    def __init__(self, batches: Iterable) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator:
        return iter(self.batches)


def batches(n: int = 80, batch_size: int = 8, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The dataset cut into fixed batches, in order."""
    return list(DataLoader(make_dataset(n, seed), batch_size=batch_size, shuffle=False))


def merged(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def reference_sgd(big_batches, lr: float = 0.1, clip: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A hand-written SGD loop, one step per batch: what the trainer must reproduce (start: `make_model(seed)`)."""
    model = make_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for x, y in big_batches:
        nn.functional.cross_entropy(model(x), y).backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad()
    return model.state_dict()
