"""Shared fixtures: a tiny separable problem and a trainer for it."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from zae_engine.testing import make_dataset

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow's client reports usage unless told not to
torch.set_num_threads(1)


@pytest.fixture
def dataset() -> TensorDataset:
    return make_dataset()


@pytest.fixture
def loader(dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=32, shuffle=False)
