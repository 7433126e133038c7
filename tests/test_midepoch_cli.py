"""`zae run` stopped by SIGTERM inside an epoch (exit 143) and launched again with resume: equal to the straight run.

The spec uses what the spec builder gives by default: a StatefulDataLoader (torchdata) ordered by EpochSampler,
here with 2 worker processes, gradient accumulation and dropout; the stop lands inside an accumulation group at
a random batch. A second case turns the stateful loader off (`stateful: false`): a DataLoader over EpochSampler,
whose consumed batches are skipped without loading them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]
TRAIN_BATCHES, VALID_BATCHES, ACCUM = 15, 2, 2

MODULE = textwrap.dedent(
    '''
    """The user's own model and a local add-on that pauses the run at a batch until a signal comes."""
    import time

    from torch import nn

    from zae_engine.trainer.addons import AddOnBase
    from zae_engine.trainer.addons.base import AddOnConfig


    class DropNet(nn.Sequential):
        def __init__(self):
            super().__init__(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))


    class PauseConfig(AddOnConfig):
        """Pause after the at-th batch (training and validation batches count) until a signal comes."""

        at: int
        marker: str


    class PauseAt(AddOnBase):
        name = "pause_at"
        Config = PauseConfig

        def __init__(self, config=None, /, **options):
            super().__init__(config, **options)
            self.seen = 0

        def on_batch_end(self, result):
            self.seen += 1
            if self.seen == self.config.at:
                open(self.config.marker, "w").close()
                deadline = time.monotonic() + 120
                while self.trainer._interrupt is None and time.monotonic() < deadline:
                    time.sleep(0.005)
    '''
)

SPEC = textwrap.dedent(
    """
    trainer: {class_path: examples.toy.ToyTrainer, init_args: {log_bar: false, grad_accum_steps: %(accum)d}}
    device: cpu
    model: {class_path: mine.DropNet}
    optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 1.0e-2}}
    scheduler: {class_path: zae_engine.schedulers.CosineAnnealingScheduler, init_args: {total_iters: 3}}
    data:
      train:
        dataset: {class_path: examples.toy.RandomDataset, init_args: {size: 240, seed: 0}}
        batch_size: 16
        shuffle: true
        num_workers: %(workers)d
        stateful: %(stateful)s
      valid:
        dataset: {class_path: examples.toy.RandomDataset, init_args: {size: 400, seed: 1}}
        batch_size: 200
    addons:
      - {name: state_manager, save_path: ckpt, save_format: safetensors, every_n_steps: 5, keep_last: 2}
    %(extra)s
    run: {n_epoch: 3, seed: 7, record: false}
    """
)


def zae(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        [*ZAE, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(proc: subprocess.Popen, expected: int) -> str:
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == expected, f"exit {proc.returncode}, expected {expected}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    return output


def workdir(root: Path, name: str, workers: int, stateful: str) -> Path:
    folder = root / name
    folder.mkdir()
    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "examples", folder / "examples", ignore=shutil.ignore_patterns("runs", "__pycache__"))
    (folder / "mine.py").write_text(MODULE)
    values = {"accum": ACCUM, "workers": workers, "stateful": stateful}
    (folder / "spec.yaml").write_text(SPEC % {**values, "extra": ""})
    return folder


def final_state(folder: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    manifest = json.loads((folder / "ckpt" / "manifest.json").read_text())
    latest = folder / "ckpt" / manifest["latest"]
    assert manifest["latest"] == "epoch-0003", manifest["latest"]
    return load_file(str(latest / "model.safetensors")), json.loads((latest / "state.json").read_text())["history"]


@pytest.mark.parametrize(("workers", "stateful"), [(2, "null"), (0, "false")])
def test_zae_run_stopped_inside_an_epoch_and_relaunched_equals_the_straight_run(tmp_path, workers, stateful):
    straight_dir = workdir(tmp_path, "straight", workers, stateful)
    straight = zae(straight_dir, "run", "spec.yaml")

    seed = random.randrange(2**32)
    epoch = random.Random(seed).randrange(2)  # epoch 1 or 2, inside an accumulation group
    batch = epoch * (TRAIN_BATCHES + VALID_BATCHES) + random.Random(seed).choice(range(1, TRAIN_BATCHES, ACCUM))
    why = f"(stopped after batch {batch} of the run; seed {seed})"
    stopped_dir = workdir(tmp_path, "stopped", workers, stateful)
    pause = f"  - {{class_path: mine.PauseAt, at: {batch}, marker: paused}}"
    values = {"accum": ACCUM, "workers": workers, "stateful": stateful, "extra": pause}
    (stopped_dir / "stop.yaml").write_text(SPEC % values)
    proc = zae(stopped_dir, "run", "stop.yaml")
    deadline = time.monotonic() + 240
    while not (stopped_dir / "paused").exists():
        assert proc.poll() is None, why + proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, why
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    output = finished(proc, 128 + signal.SIGTERM)
    assert "SIGTERM: saved interrupted-epoch-" in output, why + output[-2000:]

    resumed = finished(zae(stopped_dir, "run", "spec.yaml", "--set", "addons.0.resume=true"), 0)
    assert f"epoch {epoch + 1}/3" in resumed and (epoch == 0 or "epoch 1/3" not in resumed), why + resumed[-2000:]
    finished(straight, 0)

    straight_weights, straight_history = final_state(straight_dir)
    resumed_weights, resumed_history = final_state(stopped_dir)
    assert resumed_history == straight_history, why  # each epoch's train/valid loss, accuracy, lr: exactly
    for key, value in straight_weights.items():
        assert torch.equal(value, resumed_weights[key]), f"{key} differs {why}"
