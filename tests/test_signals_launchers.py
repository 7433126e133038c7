"""Signals under the launchers, with real processes: `zae run --nproc-per-node 2` (torchrun) and the spawned
`mpu` launcher. SIGINT/SIGTERM reach every rank, which stop at the same step and write the interrupted checkpoint
that a relaunch resumes from; nothing of the process tree survives, not even after SIGKILL of `zae`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("zae_mpu")

_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]

SPEC = """\
trainer: {class_path: zae_engine.demo.toy.ToyTrainer, init_args: {log_bar: false}}
device: [cpu, cpu]
model: {class_path: zae_engine.demo.toy.TinyNet, init_args: {hidden: 8}}
optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.05}}
data:
  train: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 256}}, batch_size: 8}
addons:
  - {name: mpu, threads_per_worker: 1}
  - {name: state_manager, save_path: ckpt}
run: {n_epoch: EPOCHS, seed: 0, record: false}
"""


def write_spec(folder: Path, epochs: int) -> Path:
    path = folder / "spec.yaml"
    path.write_text(SPEC.replace("EPOCHS", str(epochs)))
    return path


def start(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        [*ZAE, *args], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            living.add(pid)
    return living


def wait_for_training(process: subprocess.Popen, ranks: int = 2) -> set[int]:
    """Until the first epoch is reported; then every process of the run (launcher, torchrun, workers)."""
    for line in process.stdout:
        if line.startswith("epoch 1/"):
            break
    else:
        raise AssertionError(f"training never started: {process.stderr.read()}")
    tree = descendants(process.pid)
    assert len(tree) >= ranks, tree
    return tree | {process.pid}


def stopped_cleanly(process: subprocess.Popen, tree: set[int], code: int) -> str:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stdout + stderr
    deadline = time.monotonic() + 20
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(tree), f"survivors: {alive(tree)}"
    return stderr


def interrupted_checkpoint(folder: Path) -> dict:
    manifest = json.loads((folder / "ckpt" / "manifest.json").read_text())
    latest = manifest["checkpoints"][-1]
    assert latest["kind"] == "interrupted", manifest
    return latest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("launcher", ["torchrun", "spawned"])
def test_a_signal_stops_every_rank_at_one_step_with_a_checkpoint_that_resumes(tmp_path, launcher, sig):
    spec = write_spec(tmp_path, 100_000)
    extra = ["--nproc-per-node", "2"] if launcher == "torchrun" else []
    process = start(tmp_path, "run", str(spec), *extra)
    tree = wait_for_training(process)
    os.kill(process.pid, sig)
    stderr = stopped_cleanly(process, tree, 143 if sig == signal.SIGTERM else 130)
    assert "Traceback" not in stderr and "SignalException" not in stderr
    if launcher == "torchrun":
        assert f"stopped by {signal.Signals(sig).name}" in stderr
    checkpoint = interrupted_checkpoint(tmp_path)
    done = checkpoint["epoch"]
    resumed = start(tmp_path, "run", str(write_spec(tmp_path, done + 1)), "--set", "addons.1.resume=true", *extra)
    stdout, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stdout + stderr
    assert f"epoch {done + 1}/{done + 1}" in stdout and "epoch 1/" not in stdout


@pytest.mark.parametrize("launcher", ["torchrun", "spawned"])
def test_killing_the_launcher_takes_every_process_with_it(tmp_path, launcher):
    spec = write_spec(tmp_path, 100_000)
    extra = ["--nproc-per-node", "2"] if launcher == "torchrun" else []
    process = start(tmp_path, "run", str(spec), *extra)
    tree = wait_for_training(process)
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(tree), f"orphans: {alive(tree)}"
