"""`zae validate` checks what can be checked without training; `--dry-run` sends one batch of each kind through
everything and writes nothing; `--print-config` shows the spec as it will run. All through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]

SPEC = """\
trainer: {class_path: zae_engine.demo.toy.ToyTrainer, init_args: {log_bar: false}}
model: {class_path: zae_engine.demo.toy.TinyNet, init_args: {hidden: 8}}
optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.01}}
data:
  train: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 64}}, batch_size: 16}
  valid: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 32, seed: 1}}, batch_size: 32}
addons:
  - {name: state_manager, save_path: runs/ckpt, monitor: valid/acc, monitor_mode: max}
  - {name: wandb, web_logger: {wandb: {mode: offline, api_key: "${ZAE_TEST_SECRET:-s3cret}"}}}
run: {n_epoch: 1}
"""

BROKEN_DATASET = """
from zae_engine.demo.toy import RandomDataset


class Unreadable(RandomDataset):
    def __init__(self, size: int = 10):
        raise FileNotFoundError("no such file: data/train.bin")
"""


def zae(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "WANDB_MODE": "offline"}
    return subprocess.run([*ZAE, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    pytest.importorskip("zae_wandb")
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "broken.py").write_text(BROKEN_DATASET)
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "optimizer.init_args.lr=-1.0",
            "spec.yaml:3: optimizer: building torch.optim.Adam(lr=-1.0) failed: ValueError: Invalid learning rate",
        ),
        ("optimizer.init_args.lr=fast", "--set optimizer.init_args.lr: Adam: Input should be a valid number"),
        ("optimizer.init_args.betas=3", "--set optimizer.init_args.betas: Adam: Input should be a valid tuple (got 3)"),
        ("model.init_args.hidden=abc", "--set model.init_args.hidden: TinyNet: Input should be a valid integer"),
        ("device=cuda", "--set device: 'device' 'cuda' asks for CUDA, which this machine lacks; use 'cpu'"),
        (
            "data.train.dataset.class_path=broken.Unreadable",
            "spec.yaml:5: data.train.dataset: building broken.Unreadable(size=64) failed: FileNotFoundError: no such file",
        ),
        (
            "addons.0.save_path=/proc/zae-x",
            "add-on 'state_manager': save_path '/proc/zae-x' cannot be created",
        ),
        ("addons.0.save_path=a_file", "add-on 'state_manager': save_path 'a_file' is a file, not a folder"),
        (
            "addons.1.web_logger.wandb.projct=x",
            "add-on 'wandb': web_logger['wandb'] has 'projct', which the W&B client does not take (did you mean 'project'?)",
        ),
    ],
)
def test_validate_finds_what_run_would_fail_on(folder, override, expected):
    result = zae(folder, "validate", "spec.yaml", "--set", override)
    assert result.returncode == 1
    assert expected in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr
    assert not (folder / "runs").exists()  # the checks created nothing


def test_a_valid_spec_is_valid(folder):
    result = zae(folder, "validate", "spec.yaml")
    assert result.returncode == 0, result.stderr
    assert "valid:" in result.stdout and not (folder / "runs").exists()


def test_dry_run_checks_every_monitor_against_what_the_steps_produce_and_writes_nothing(folder):
    bad = zae(folder, "validate", "spec.yaml", "--dry-run", "--set", "addons.0.monitor=valid/accuracy")
    assert bad.returncode == 1
    assert (
        "spec.yaml:8: addons[0]: add-on 'state_manager': monitor 'valid/accuracy' is not in what the steps produce "
        "(did you mean 'valid/acc'?)" in bad.stderr.replace("\n", " ")
    )
    good = zae(folder, "run", "spec.yaml", "--dry-run")
    assert good.returncode == 0, good.stderr
    assert "dry run: one training and one validation batch went through" in good.stdout
    assert "valid/acc" in good.stdout
    leftovers = [p.name for p in folder.iterdir() if p.name not in ("spec.yaml", "broken.py", "a_file", "__pycache__")]
    assert leftovers == []  # no checkpoint, no run record, no tracker folder


def test_print_config_shows_the_spec_as_it_will_run_with_secrets_masked(folder):
    result = zae(folder, "run", "spec.yaml", "--print-config", "--set", "run.n_epoch=7")
    assert result.returncode == 0, result.stderr
    assert "n_epoch: 7" in result.stdout and "record: true" in result.stdout
    assert "s3cret" not in result.stdout and "api_key: '***'" in result.stdout
    assert not (folder / "runs").exists()
