"""Fixtures for zae-mlflow tests: no MLflow settings from the environment, and a real `mlflow server` per module.

`mlflow_read` and `mlflow_server` (helpers) are importable from the test modules: this folder goes on sys.path,
since conftest itself is not importable under --import-mode=importlib.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
torch.set_num_threads(1)
# MLflow's client reports usage to its makers unless told not to; set before anything imports mlflow
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from mlflow_read import ENVIRONMENT  # noqa: E402
from mlflow_server import Server, start_server  # noqa: E402


@pytest.fixture(autouse=True)
def no_mlflow_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MLflow settings from the environment; local stores and ./mlruns land in the test's own folder."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One `mlflow server` for the whole test module (it takes seconds to start)."""
    server = start_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


__all__ = ["Server"]
