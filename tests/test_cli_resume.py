"""Relaunching `zae run`: a spec's run.n_epoch is the run's total, a resumed run equals the straight one, and the
settings on the command line win over the checkpoint's for hyper-parameters (the checkpoint wins for progress)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "specs" / "validation_checkpoints.yaml"
_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]


def zae(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([*ZAE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def run_spec(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    sets = [item for override in ("trainer.init_args.log_bar=false", *overrides) for item in ("--set", override)]
    result = zae(cwd, "run", str(cwd / "spec.yaml"), *sets)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def latest(save_path: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    manifest = json.loads((save_path / "manifest.json").read_text())
    folder = save_path / manifest["latest"]
    history = json.loads((folder / "state.json").read_text())["history"]
    return load_file(str(folder / "model.safetensors")), history


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(SPEC, tmp_path / "spec.yaml")
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("runs", "__pycache__"))
    return tmp_path


def test_a_spec_run_stopped_and_relaunched_equals_the_straight_run(workdir: Path):
    straight = run_spec(workdir, "run.n_epoch=4", "scheduler.init_args.total_iters=4", "addons.0.save_path=straight")
    run_spec(workdir, "run.n_epoch=2", "scheduler.init_args.total_iters=4", "addons.0.save_path=resumed")
    relaunch = ("run.n_epoch=4", "scheduler.init_args.total_iters=4", "addons.0.save_path=resumed")
    resumed = run_spec(workdir, *relaunch, "addons.0.resume=true")
    assert "epoch 3/4" in resumed.stdout and "epoch 1/4" not in resumed.stdout  # continued, not restarted
    straight_weights, straight_history = latest(workdir / "straight")
    resumed_weights, resumed_history = latest(workdir / "resumed")
    assert straight_history == resumed_history  # every epoch's losses, accuracy and learning rate, exactly
    for key in straight_weights:
        assert torch.equal(straight_weights[key], resumed_weights[key]), key
    assert "epoch 4/4" in straight.stdout


def test_relaunching_a_complete_run_says_so_and_a_longer_schedule_on_the_command_line_wins(workdir: Path):
    run_spec(workdir, "run.n_epoch=2", "scheduler.init_args.total_iters=2")
    again = run_spec(workdir, "run.n_epoch=2", "scheduler.init_args.total_iters=2", "addons.0.resume=true")
    assert "already complete: 2 epoch(s) done" in again.stdout and "epoch 1/" not in again.stdout
    longer = run_spec(workdir, "run.n_epoch=4", "scheduler.init_args.total_iters=4", "addons.0.resume=true")
    assert "yours apply: scheduler total_iters 2 -> 4" in longer.stdout.replace("\n", " ")
    assert "epoch 3/4" in longer.stdout and "epoch 4/4" in longer.stdout
    _, history = latest(workdir / "runs" / "toy")
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert "best valid/acc" in longer.stdout  # the summary follows the state manager's monitor
