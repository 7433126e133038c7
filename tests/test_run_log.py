"""Every `zae run` leaves a record that `zae runs` reads back: done, failed, interrupted, killed, under DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]

SPEC = """\
trainer: {class_path: TRAINER, init_args: {log_bar: false, log_interval: 2}}
device: DEVICE
model: {class_path: zae_engine.demo.toy.TinyNet, init_args: {hidden: 8}}
optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}
data:
  train: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 64}}, batch_size: 16}
  valid: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 32, seed: 1}}, batch_size: 32}
ADDONS
run: {n_epoch: EPOCHS, seed: 0}
"""

FAILING = """
from zae_engine.demo.toy import ToyTrainer


class FailsInEpochTwo(ToyTrainer):
    def train_step(self, batch):
        if self.progress_checker.get_epoch() == 2:
            raise ValueError("the data went bad in epoch 2")
        return super().train_step(batch)
"""


def env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}


def write_spec(folder: Path, epochs: int = 2, trainer: str = "zae_engine.demo.toy.ToyTrainer", **more: str) -> Path:
    text = SPEC.replace("TRAINER", trainer).replace("EPOCHS", str(epochs))
    text = text.replace("DEVICE", more.get("device", "cpu")).replace("ADDONS", more.get("addons", "addons: []"))
    path = folder / "spec.yaml"
    path.write_text(text)
    return path


def zae(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ZAE, *args], cwd=folder, env=env(), capture_output=True, text=True, timeout=240)


def runs(folder: Path) -> list[dict]:
    result = zae(folder, "runs", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_finished_run_is_recorded_and_no_record_leaves_none(tmp_path):
    spec = write_spec(tmp_path)
    done = zae(tmp_path, "run", str(spec))
    assert done.returncode == 0, done.stderr
    (record,) = runs(tmp_path)
    assert record["status"] == "done" and record["epochs"] == 2 and record["best"]["metric"] == "valid/loss"
    assert f"record: runs/{record['id']} (zae runs show last)" in done.stdout
    shown = json.loads(zae(tmp_path, "runs", "show", "last", "--json").stdout)
    assert shown["record"]["spec"]["run"]["n_epoch"] == 2 and shown["record"]["world_size"] == 1
    assert zae(tmp_path, "run", str(spec), "--no-record").returncode == 0
    assert len(runs(tmp_path)) == 1


def test_a_failed_run_is_recorded_with_its_error(tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)
    failed = zae(tmp_path, "run", str(write_spec(tmp_path, 3, "failing.FailsInEpochTwo")))
    assert failed.returncode == 1
    (record,) = runs(tmp_path)
    assert record["status"] == "failed" and record["epochs"] == 1
    shown = json.loads(zae(tmp_path, "runs", "show", record["id"], "--json").stdout)
    assert shown["record"]["error"] == "ValueError: the data went bad in epoch 2"


def start(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*ZAE, *args], cwd=folder, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_epoch(process: subprocess.Popen) -> None:
    for line in process.stdout:  # the first epoch summary: the record exists and holds an epoch
        if line.startswith("epoch 1/"):
            return
    raise AssertionError(f"no epoch line; stderr: {process.stderr.read()}")


def test_an_interrupted_run_is_recorded_as_interrupted(tmp_path):
    process = start(tmp_path, "run", str(write_spec(tmp_path, 100_000)))
    wait_for_epoch(process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    (record,) = runs(tmp_path)
    assert record["status"] == "interrupted" and record["epochs"] >= 1


def test_a_killed_run_shows_as_crashed_with_its_metrics_kept(tmp_path):
    process = start(tmp_path, "run", str(write_spec(tmp_path, 100_000)))
    wait_for_epoch(process)
    (record,) = runs(tmp_path)
    assert record["status"] == "running"
    process.kill()
    process.wait(timeout=60)
    (record,) = runs(tmp_path)
    assert record["status"] == "crashed" and record["epochs"] >= 1
    metrics = (tmp_path / "runs" / record["id"] / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[0])["kind"] in ("step", "epoch")


def test_two_real_runs_compare_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    spec = write_spec(tmp_path)
    assert zae(tmp_path, "run", str(spec)).returncode == 0
    assert zae(tmp_path, "run", str(spec), "--set", "optimizer.init_args.lr=0.01").returncode == 0
    first, second = sorted(runs(tmp_path), key=lambda r: r["started"])
    compared = json.loads(zae(tmp_path, "runs", "compare", first["id"], second["id"], "--json").stdout)
    assert compared["options"] == {"optimizer.init_args.lr": [0.1, 0.01]}  # the one setting that differs
    plotted = zae(tmp_path, "runs", "plot", first["id"], second["id"], "--out", "curves.svg")
    assert plotted.returncode == 0, plotted.stderr
    svg = (tmp_path / "curves.svg").read_text()
    assert first["name"] in svg and second["name"] in svg


def test_a_ddp_run_writes_one_record(tmp_path):
    pytest.importorskip("zae_mpu")
    spec = write_spec(tmp_path, device="[cpu, cpu]", addons="addons: [{name: mpu}]")
    result = zae(tmp_path, "run", str(spec), "--nproc-per-node", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = runs(tmp_path)
    assert record["status"] == "done"
    shown = json.loads(zae(tmp_path, "runs", "show", "last", "--json").stdout)
    assert shown["record"]["world_size"] == 2
