"""Data order that a resume reproduces: the order of an epoch is a function of a seed and the epoch number.

A DataLoader with `shuffle=True` draws its order from a random generator whose state at the start of an epoch
depends on everything drawn before, which a checkpoint does not capture when the generator is the loader's own.
`EpochSampler` instead draws epoch e's order from (seed, e) alone, and re-seeds the loader's generator (which
seeds the worker processes) from (seed, e) too; the Trainer calls `set_epoch` on a loader's sampler before every
pass, as for torch's DistributedSampler. So epoch 3 sees the same batches, in the same order, with the same
worker seeds, whether the run went straight through or was stopped and resumed.

Because it knows its order, it can also start a pass part-way (`start_next_pass_at`): a run resumed inside an
epoch skips the batches it already trained on without loading them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

_MASK = (1 << 63) - 1


class EpochSampler(Sampler[int]):
    """Indices 0..size-1, shuffled (or not) by a function of `seed` and the epoch set by `set_epoch`."""

    def __init__(self, size: int, shuffle: bool, seed: int, generator: torch.Generator | None = None) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.generator = generator  # the DataLoader's: it seeds the loader's worker processes
        self.epoch = 1
        self._skip = 0  # samples the next pass leaves out at its start (a resume inside an epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.generator is not None:
            self.generator.manual_seed(derive(self.seed, epoch, 1))

    def start_next_pass_at(self, sample: int) -> None:
        """Make the next pass (only that one) begin at its `sample`-th index, as if those before were drawn."""
        self._skip = max(0, int(sample))

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        if not self.shuffle:
            return iter(range(min(skip, self.size), self.size))
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(derive(self.seed, self.epoch, 0)))
        return iter(order[skip:].tolist())

    def __len__(self) -> int:
        return self.size


def derive(seed: int, epoch: int, salt: int) -> int:
    """A 63-bit seed for (seed, epoch, what for); different inputs give unrelated streams."""
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + salt * 0x94D049BB133111EB) & _MASK
    value ^= value >> 31
    return (value * 0xD6E8FEB86659FD93) & _MASK


def set_loader_epoch(loader: object, epoch: int) -> None:
    """Tell a loader's sampler which epoch begins (EpochSampler, DistributedSampler, or anything with set_epoch)."""
    set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
