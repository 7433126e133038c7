"""Fixtures for zae-neptune tests: an isolated working folder and one shared offline run.

The task, the trainer and the data come from `zae_engine.testing`; the offline-run reader lives in
`neptune_offline` (this folder goes on sys.path so test modules can import it: conftest itself is not importable
under --import-mode=importlib).
"""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
torch.set_num_threads(1)

from neptune_offline import isolate_neptune, read_offline_runs  # noqa: E402

from zae_engine.testing import SeparableTrainer, make_loader, make_model  # noqa: E402


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working folder with no Neptune credentials: offline runs land in ./.neptune here."""
    isolate_neptune(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> SimpleNamespace:
    """One real offline Neptune run, made the seeds' way: run(2 epochs), then run(1 epoch) on the same trainer.

    No mode and no token are given, so the add-on must fall back to offline by itself. (What every tracker owes,
    keys, steps and run identity, is checked by the TrackerContract in test_neptune_contract.py.)
    """
    from zae_neptune import NeptuneLoggerAddon

    root = tmp_path_factory.mktemp("neptune-shared")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        isolate_neptune(mp, root)
        model = make_model()
        trainer = SeparableTrainer.add_on(NeptuneLoggerAddon)(
            model,
            "cpu",
            "train",
            torch.optim.SGD(model.parameters(), lr=0.1),
            log_bar=False,
            log_interval=2,
            web_logger={"neptune": {"name": "shared", "tags": ["zae", "test"]}},
        )
        trainer.run_spec = {"trainer": {"class_path": "tests.TinyTrainer"}, "run": {"n_epoch": 2, "seed": 0}}
        trainer.run(2, make_loader(), make_loader())
        trainer.run(1, make_loader(), make_loader())
        threads = [t.name for t in threading.enumerate()]
    return SimpleNamespace(
        trainer=trainer,
        root=root,
        runs=read_offline_runs(root),
        warnings=[w for w in caught if w.category.__name__ == "TrackerWarning"],
        threads=threads,
    )
