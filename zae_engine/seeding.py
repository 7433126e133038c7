"""One call that seeds every random source a training run touches.

Python: `seed_everything(seed)` before building the model and the DataLoader, and give shuffling loaders
`DataLoader(..., generator=loader_generator(seed))`. A run spec says
`run: {seed: 0, deterministic: true}` and `zae run` makes the same calls.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); `deterministic=True` also asks torch for deterministic kernels.

    Deterministic mode is process-wide: ops without a deterministic kernel raise instead of running, cuDNN stops
    auto-tuning, and uninitialised memory (torch.empty) is filled with NaN so that reading it is noticed.
    `deterministic=False` leaves whatever mode is already set alone.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed_everything: 'seed' must be a whole number >= 0, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses; this interpreter's hash seed is already fixed
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it before its first call
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def seed_worker(worker_id: int) -> None:
    """`DataLoader(worker_init_fn=seed_worker)`: a worker's numpy/random follow torch's per-worker seed.

    torch >= 1.9 already does this for its own DataLoader workers; this stays for code that starts workers
    some other way, and for the upstream API. What makes worker runs repeat is `generator=loader_generator(seed)`.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def loader_generator(seed: int) -> torch.Generator:
    """A generator for `DataLoader(generator=...)`: shuffling and worker seeds independent of the global RNG."""
    return torch.Generator().manual_seed(seed)
