"""Fixtures for zae-wandb tests: an isolated offline W&B environment and one shared offline run.

The task, the trainer and the data come from `zae_engine.testing`; the `.wandb` reader lives in `wandb_files`
(this folder goes on sys.path so test modules can import it: conftest itself is not importable under
--import-mode=importlib).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
torch.set_num_threads(1)

from wandb_files import isolate_wandb, read_wandb_dir  # noqa: E402

from zae_engine.testing import SeparableTrainer, make_loader, make_model  # noqa: E402


@pytest.fixture
def wandb_home(tmp_path_factory, monkeypatch) -> Path:
    """A W&B environment with no credentials and every folder wandb writes to under one temp dir."""
    root = tmp_path_factory.mktemp("wandb-home")
    isolate_wandb(monkeypatch, root)
    return root


def child_processes() -> list[str]:
    """Names of this process's live children, from /proc (wandb's service would be one: 'wandb-core')."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm_end = text.rindex(")")
        fields = text[comm_end + 2 :].split()
        if fields[0] != "Z" and int(fields[1]) == os.getpid():
            names.append(text[text.index("(") + 1 : comm_end])
    return names


# the long note makes the config record span several 32 KiB blocks: FIRST/MIDDLE/LAST chunks get read too
SPEC = {"trainer": {"class_path": "tests.TinyTrainer"}, "run": {"n_epoch": 2, "seed": 0}, "notes": "spec " * 20_000}


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> SimpleNamespace:
    """One real offline W&B run, made the seeds' way: run(2 epochs), then run(1 epoch) on the same trainer.

    No mode and no credentials are given, so the add-on must fall back to offline by itself. (What every tracker
    owes, keys, steps and run identity, is checked by the TrackerContract in test_wandb_contract.py.)
    """
    from zae_wandb import WandBLoggerAddon

    root = tmp_path_factory.mktemp("wandb-shared")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        isolate_wandb(mp, root)
        model = make_model()
        trainer = SeparableTrainer.add_on(WandBLoggerAddon)(
            model,
            "cpu",
            "train",
            torch.optim.SGD(model.parameters(), lr=0.1),
            log_bar=False,
            log_interval=2,
            web_logger={"wandb": {"project": "zae-tests", "dir": str(root)}},
        )
        trainer.run_spec = SPEC
        trainer.run(2, make_loader(), make_loader())
        trainer.run(1, make_loader(), make_loader())
        children = child_processes()
    return SimpleNamespace(
        trainer=trainer,
        root=root,
        runs=read_wandb_dir(root),
        warnings=[w for w in caught if w.category.__name__ == "TrackerWarning"],
        children=children,
    )
