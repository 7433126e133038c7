"""Real processes stopped while they checkpoint: SIGKILL at random moments, and SIGTERM.

The child trains a model whose buffer `epochs_done` records the last finished epoch, so a loaded checkpoint
that mixed two saves would show a buffer that disagrees with its progress counter.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zae_engine.checkpoint import read_checkpoint
from zae_engine.errors import TrainingInterrupted
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon

WIDTH = 384  # about 2 MB of weights and Adam moments per checkpoint: most kills land inside a save

# a fresh interpreter running child_main, for the SIGTERM test (exit code and stderr of a real program)
CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from test_state_manager_crash import child_main
    child_main(sys.argv[1], sys.argv[2])
    """
)


class Net(nn.Module):
    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.body = nn.Linear(width, width)
        self.head = nn.Linear(width, 2)
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class CrashTrainer(Trainer):
    def train_step(self, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    def test_step(self, batch):
        return self.train_step(batch)


class EpochStamp(AddOnBase):
    """Writes the finished epoch into the model just before the state manager saves it."""

    name = "epoch_stamp"  # phase "update" (the default): runs before the state manager's epoch-end save

    def on_epoch_end(self, epoch, summary):
        if self.trainer.mode == "train":
            self.trainer.model.epochs_done.fill_(epoch)


Checkpointed = CrashTrainer.add_on(EpochStamp, StateManagerAddon)


def child_main(save_path: str, save_format: str, width: int = WIDTH) -> None:
    """The child's whole life: resume if there is a checkpoint, then train 'forever', saving every epoch."""
    sys.stdout = open(os.devnull, "w")  # the per-epoch lines are not needed
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, width), torch.randint(0, 2, (16,)))
    model = Net(width)
    trainer = Checkpointed(
        model,
        "cpu",
        "train",
        torch.optim.Adam(model.parameters(), lr=1e-4),
        log_bar=False,
        save_path=save_path,
        save_format=save_format,
        keep_last=2,
        save_top_k=1,
    )
    if (Path(save_path) / "manifest.json").exists():
        trainer.load_state()  # every restart resumes from disk
    Path(save_path + ".ready").touch()
    try:
        trainer.run(100_000, DataLoader(data, batch_size=8))
    except TrainingInterrupted as stop:
        sys.exit(128 + signal.Signals[stop.signal_name].value)  # 143 for SIGTERM, 130 for SIGINT


def wait_ready(save_path: Path, alive, why) -> None:
    ready = Path(str(save_path) + ".ready")
    while not ready.exists():
        if not alive():
            pytest.fail(f"child exited before it was ready: {why()}")
        time.sleep(0.01)
    ready.unlink()


def wait_for_checkpoints(save_path: Path, alive, count: int) -> None:
    manifest = save_path / "manifest.json"
    while not manifest.exists() or len(json.loads(manifest.read_text())["checkpoints"]) < count:
        assert alive(), "child died before saving"
        time.sleep(0.01)


def load_and_check(save_path: Path) -> tuple[dict, int]:
    """Load the latest checkpoint into fresh objects and check it is one consistent save; returns (entry, epoch)."""
    model = Net()
    trainer = Checkpointed(
        model, "cpu", "train", torch.optim.Adam(model.parameters(), lr=1e-4), log_bar=False, save_path=str(save_path)
    )
    loaded = trainer.load_state()
    done = trainer.progress_checker.get_epoch() - 1
    assert int(model.epochs_done) == done, f"{loaded}: weights of epoch {int(model.epochs_done)}, progress {done}"
    manifest = json.loads((save_path / "manifest.json").read_text())
    assert manifest["latest"] == loaded.name
    for entry in manifest["checkpoints"]:  # every listed checkpoint is whole, not just the latest
        state, meta = read_checkpoint(save_path / entry["name"])
        assert meta["epoch"] == entry["epoch"] == int(state["model"]["epochs_done"])
    return manifest["checkpoints"][-1], done


def warm_up(save_path: Path, save_format: str) -> None:
    """Save and load once here, so forked children inherit every lazily imported module instead of each importing."""
    model = Net()
    trainer = Checkpointed(
        model,
        "cpu",
        "train",
        torch.optim.Adam(model.parameters(), lr=1e-4),
        log_bar=False,
        save_path=str(save_path),
        save_format=save_format,
    )
    trainer.run(1, DataLoader(TensorDataset(torch.randn(8, WIDTH), torch.zeros(8, dtype=torch.long)), batch_size=8))
    load_and_check(save_path)


@pytest.mark.parametrize("save_format", ["safetensors", "ckpt"])
def test_state_manager_sigkill_while_saving_leaves_a_loadable_checkpoint(tmp_path, save_format):
    """A forked child (torch already imported: cheap restarts) resumes and saves until SIGKILLed; six times."""
    save_path = tmp_path / "run"
    warm_up(tmp_path / "warm-up", save_format)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    fork = multiprocessing.get_context("fork")
    reached, kills_mid_save = 0, 0
    for kill in range(6):
        child = fork.Process(target=child_main, args=(str(save_path), save_format), daemon=True)
        child.start()
        wait_ready(save_path, child.is_alive, lambda c=child: f"exit code {c.exitcode}")
        wait_for_checkpoints(save_path, child.is_alive, 1)
        delay = rng.uniform(0.0, 0.3)
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        kills_mid_save += any(p.name.split("-")[1] == str(child.pid) for p in save_path.glob(".tmp-*"))
        entry, done = load_and_check(save_path)
        assert done >= reached, (
            f"kill {kill} (seed {seed}, delay {delay:.3f}s) went back from epoch {reached} to {done}"
        )
        reached = done
    stale = [p.name for p in save_path.glob(".tmp-*") if p.name.split("-")[1] != str(child.pid)]
    assert stale == [], "temp folders of killed writers are swept by the next writer"
    print(f"seed {seed}: {kills_mid_save} of 6 kills landed inside a save; reached epoch {reached}")


def test_state_manager_sigterm_saves_and_exits_cleanly(tmp_path):
    """A fresh interpreter running trainer.run() gets SIGTERM: it finishes the step, saves, exits with 143."""
    save_path = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(save_path), "safetensors", str(Path(__file__).parent)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    alive = lambda: proc.poll() is None
    wait_ready(save_path, alive, lambda: proc.stderr.read().decode()[-2000:])
    wait_for_checkpoints(save_path, alive, 1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr
    entry, _ = load_and_check(save_path)
    assert entry["kind"] == "interrupted"
    meta = json.loads((save_path / entry["name"] / "checkpoint.json").read_text())
    assert meta["interrupted"] is True
