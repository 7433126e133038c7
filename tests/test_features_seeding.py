"""Determinism: seed_everything makes whole runs repeat exactly; seed_worker gives each loader worker its own stream."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zae_engine.seeding import loader_generator, seed_everything, seed_worker
from zae_engine.testing import make_dataset, make_trainer


class NoisyDataset(Dataset):
    """Augments with numpy and python `random`, the way user datasets do."""

    def __init__(self) -> None:
        self.base = make_dataset(64)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        x, y = self.base[index]
        noise = torch.from_numpy(np.random.normal(size=x.shape).astype("float32")) * random.random()
        return x + noise, y


@pytest.fixture
def restore_determinism():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1], saved[2]


def seeded_run(seed: int, deterministic: bool = False, workers: int = 0) -> dict[str, torch.Tensor]:
    seed_everything(seed, deterministic)
    model = nn.Sequential(nn.Linear(10, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 2))  # init + dropout draw
    loader = DataLoader(
        NoisyDataset(),
        batch_size=8,
        shuffle=True,
        num_workers=workers,
        worker_init_fn=seed_worker if workers else None,
        generator=loader_generator(seed),
    )
    trainer = make_trainer(model=model)
    trainer.run(2, loader)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_same_seed_repeats_a_run_exactly_and_another_seed_does_not():
    first, again, other = seeded_run(3), seeded_run(3), seeded_run(4)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["0.weight"], other["0.weight"])


def test_runs_with_loader_workers_repeat_exactly():
    first, again = seeded_run(5, workers=2), seeded_run(5, workers=2)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_seed_worker_ties_numpy_and_python_to_torchs_worker_seed():
    torch.manual_seed(123)
    seed_worker(0)
    drawn = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    assert drawn == (np.random.rand(), random.random())


def test_deterministic_mode_is_switched_on_and_repeats_runs(restore_determinism):
    first = seeded_run(1, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.isnan(torch.empty(8)).all()  # uninitialised memory is poisoned, so reading it cannot go unnoticed
    again = seeded_run(1, deterministic=True)
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_a_bad_seed_is_refused(seed):
    with pytest.raises(ValueError, match="'seed' must be a whole number"):
        seed_everything(seed)
