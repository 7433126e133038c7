"""Fixtures for zae-neptune tests: a tiny trainer, an isolated working folder, and a reader for offline runs.

neptune 1.x in mode="offline" writes each run to `.neptune/offline/run__<uuid>__<pid>__<random>/` in the
working directory: `metadata.json` (container id, created-at) and `data-<n>.log`, one JSON operation per line
({"obj": {"type": "LogFloats" | "AssignInt" | "UploadFile" | ..., "path": [...], ...}, "version": n}), with
uploaded file copies under `upload_path/`. That is what `neptune sync` replays, and what these tests read.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zae_engine.trainer import Trainer

torch.set_num_threads(1)

# keep neptune's own background monitoring out of the tests' way; the add-on passes these through unchanged
QUIET = {"capture_hardware_metrics": False, "capture_stdout": False, "capture_stderr": False, "git_ref": False}


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


@dataclass
class OfflineRun:
    """One offline neptune container, decoded from its operation log."""

    folder: Path
    metadata: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)

    def steps(self, key: str) -> list[Any]:
        return [step for step, _ in self.series.get(key, [])]

    def values(self, key: str) -> list[Any]:
        return [value for _, value in self.series.get(key, [])]


def read_offline_run(folder: Path) -> OfflineRun:
    run = OfflineRun(folder=folder, metadata=json.loads((folder / "metadata.json").read_text()))
    operations = []
    for log in sorted(folder.glob("data-*.log"), key=lambda p: int(p.stem.split("-")[1])):
        operations += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    for entry in sorted(operations, key=lambda e: e["version"]):
        op = entry["obj"]
        key = "/".join(op["path"])
        if op["type"].startswith("Assign"):
            run.fields[key] = op["value"]
        elif op["type"].startswith("Log"):
            run.series.setdefault(key, []).extend((v["step"], v["value"]) for v in op["values"])
        elif op["type"] == "UploadFile":
            run.uploads[key] = op
    return run


def read_offline_runs(workdir: Path) -> list[OfflineRun]:
    """Every offline container under `workdir/.neptune`, oldest first."""
    runs = [read_offline_run(p) for p in (workdir / ".neptune" / "offline").glob("run__*")]
    return sorted(runs, key=lambda r: r.metadata["createdAt"])


def isolate_neptune(monkeypatch, workdir: Path) -> None:
    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_MODE", "NEPTUNE_PROJECT", "NEPTUNE_CUSTOM_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(workdir)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working folder with no Neptune credentials: offline runs land in ./.neptune here."""
    isolate_neptune(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def nep() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable under --import-mode=importlib)."""
    return SimpleNamespace(
        Trainer=TinyTrainer, loader=tiny_loader, parts=tiny_parts, read=read_offline_runs, quiet=QUIET
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> SimpleNamespace:
    """One real offline Neptune run shared by the read-back tests: run(2 epochs), then run(1 epoch), same trainer.

    64 samples in batches of 16 -> 4 optimizer steps per epoch; log_interval=2 -> running logs at steps 2, 4, ...
    No mode and no token are given, so the add-on must fall back to offline by itself.
    """
    import threading

    from zae_neptune import NeptuneLoggerAddon

    root = tmp_path_factory.mktemp("neptune-shared")
    loader = tiny_loader()
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        isolate_neptune(mp, root)
        model, optimizer = tiny_parts()
        trainer = TinyTrainer.add_on(NeptuneLoggerAddon)(
            model,
            "cpu",
            "train",
            optimizer,
            log_bar=False,
            log_interval=2,
            web_logger={"neptune": {"name": "shared", "tags": ["zae", "test"]}},
        )
        trainer.run_spec = {"trainer": {"class_path": "tests.TinyTrainer"}, "run": {"n_epoch": 2, "seed": 0}}
        trainer.run(2, loader, loader)
        history_after_first = [dict(h) for h in trainer.history]
        trainer.run(1, loader, loader)
        threads = [t.name for t in threading.enumerate()]
    return SimpleNamespace(
        trainer=trainer,
        root=root,
        runs=read_offline_runs(root),
        warnings=[w for w in caught if w.category.__name__ == "TrackerWarning"],
        first_history=history_after_first,
        threads=threads,
    )
