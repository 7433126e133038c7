"""WandBLoggerAddon keeps the tracker contract every tracker add-on owes, checked in W&B's own offline files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from wandb_files import isolate_wandb, read_wandb_dir
from zae_wandb import WandBLoggerAddon

from zae_engine.testing import LoggedRun, TrackerContract


class TestWandBTrackerContract(TrackerContract):
    @pytest.fixture(autouse=True)
    def _offline_wandb(self, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
        isolate_wandb(monkeypatch, tmp_path_factory.mktemp("wandb-home"))

    def make_addon(self, folder: Path, **options: Any) -> WandBLoggerAddon:
        settings = {"project": "contract", "mode": "offline", "dir": str(folder)}
        return WandBLoggerAddon(web_logger={"wandb": settings}, **options)

    def read_back(self, folder: Path) -> list[LoggedRun]:
        runs = read_wandb_dir(folder)
        return [LoggedRun(run.run_id, run.history, run.config, failed=_failed(run.exit_code)) for run in runs]


def _failed(exit_code: int | None) -> bool | None:
    return None if exit_code is None else exit_code != 0  # no exit record: the process died before finishing
