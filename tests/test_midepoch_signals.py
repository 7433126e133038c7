"""A run stopped by SIGTERM from outside at a random batch, then resumed, equals the straight run bit for bit.

Every run is a process of its own (tests/midepoch_child.py, forked): the straight one, the stopped one (exit
143) and the resumed one, which starts from other random streams. Their final states are compared whole: weights, Adam's
moments, the scheduler, progress, every epoch's losses and accuracy, and the random streams they end with.
Positions: inside an accumulation group, on a group boundary, during validation; loaders replayed (plain
DataLoader, one with its own generator), skipped (EpochSampler) and restored (StatefulDataLoader, with 0 and 2
worker processes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from midepoch_child import forked, train

from zae_engine.checkpoint import read_checkpoint

TRAIN_BATCHES, VALID_BATCHES, ACCUM = 13, 4, 3
PER_EPOCH = TRAIN_BATCHES + VALID_BATCHES


class Child:
    """A training run in a forked process (torch is imported already here: it starts at once)."""

    def __init__(self, out: Path, kind: str, workers: int, stop_at: int = 0, seed: int = 0) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.output = out / f"output-{time.monotonic_ns()}.txt"
        self.process = forked(train, out, kind, workers, ACCUM, stop_at, seed, output=self.output)

    def alive(self) -> bool:
        return self.process.is_alive()

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def finish(self, expected: int = 0) -> str:
        self.process.join(240)
        assert self.process.exitcode == expected, (
            f"exit {self.process.exitcode}, expected {expected}:\n{self.text()[-3000:]}"
        )
        text = self.text()
        assert "Traceback" not in text, text[-3000:]
        return text


def stop_at(out: Path, kind: str, workers: int, batch: int) -> str:
    """Run until `batch` batches are done, SIGTERM it from here, and wait for its exit (143)."""
    child = Child(out, kind, workers, stop_at=batch)
    marker = out / "paused"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert child.alive(), f"the child ended before batch {batch}: {child.text()[-3000:]}"
        assert time.monotonic() < deadline, "the child never reached the batch"
        time.sleep(0.01)
    marker.unlink()
    os.kill(child.process.pid, signal.SIGTERM)
    return child.finish(128 + signal.SIGTERM)


def assert_same_final_state(straight: Path, resumed: Path) -> None:
    a, _ = read_checkpoint(straight / "final")
    b, _ = read_checkpoint(resumed / "final")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"weight {key} differs"
    for index, moments in a["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), f"Adam {name} of parameter {index}"
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["scheduler"] == b["scheduler"]
    assert a["progress"] == b["progress"]
    assert a["history"] == b["history"]  # every epoch's train/loss, valid/loss, valid/acc, lr, step: exactly
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # and the streams end where the straight run's end
    assert a["rng"]["numpy"] == b["rng"]["numpy"] and a["rng"]["python"] == b["rng"]["python"]


# (loader, workers, where the stop lands); each position is drawn at random within its kind
CASES = [
    ("plain", 0, "inside_group"),
    ("generator", 0, "boundary"),
    ("epoch_sampler", 0, "inside_group"),
    ("epoch_sampler", 2, "inside_group"),
    ("stateful", 0, "inside_group"),
    ("stateful", 2, "inside_group"),
    ("stateful", 2, "validation"),
    ("plain", 0, "validation"),
]


def draw_position(rng: random.Random, where: str) -> int:
    """A batch count (training and validation batches, from the start of the run) to stop after."""
    epoch = rng.randrange(3)
    if where == "validation":
        return epoch * PER_EPOCH + TRAIN_BATCHES + rng.randrange(1, VALID_BATCHES)
    if where == "boundary":
        return epoch * PER_EPOCH + ACCUM * rng.randrange(1, TRAIN_BATCHES // ACCUM + 1)
    inside = [i for i in range(1, TRAIN_BATCHES) if i % ACCUM]
    return epoch * PER_EPOCH + rng.choice(inside)


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory) -> dict[tuple[str, int], Path]:
    """One straight run per loader kind and worker count, shared by the cases."""
    runs = {}
    for kind, workers in sorted({(kind, workers) for kind, workers, _ in CASES}):
        out = tmp_path_factory.mktemp(f"straight-{kind}-{workers}")
        Child(out, kind, workers).finish()
        runs[(kind, workers)] = out
    return runs


@pytest.mark.parametrize(("kind", "workers", "where"), CASES)
def test_sigterm_at_a_random_batch_then_resume_equals_the_straight_run(tmp_path, straight_runs, kind, workers, where):
    seed = random.randrange(2**32)
    batch = draw_position(random.Random(seed), where)
    why = f"(stopped after batch {batch} of the run; seed {seed})"
    stderr = stop_at(tmp_path, kind, workers, batch)
    assert "SIGTERM: saved interrupted-epoch-" in stderr, why + stderr[-2000:]
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    latest = manifest["checkpoints"][-1]
    assert latest["kind"] == "interrupted", why
    state, _ = read_checkpoint(tmp_path / "ckpt" / latest["name"])
    position = state["position"]
    assert position["epoch"] == batch // PER_EPOCH + 1, why
    if where == "validation":
        assert position["phase"] == "valid", why
    else:
        assert (position["phase"], position["drawn"]) == ("train", batch % PER_EPOCH), why
        assert position["micro"] == (0 if where == "boundary" else batch % PER_EPOCH % ACCUM), why
        assert (position["grads"] is None) == (where == "boundary"), why

    Child(tmp_path, kind, workers, seed=1).finish()  # another process, other streams: all from the checkpoint
    assert_same_final_state(straight_runs[(kind, workers)], tmp_path)


def test_two_stops_in_one_epoch_then_resume_equals_the_straight_run(tmp_path, straight_runs):
    """Stopped twice, the second time before it reached another step checkpoint: the resumes chain exactly."""
    stop_at(tmp_path, "stateful", 2, PER_EPOCH + 2)  # epoch 2, inside the first group
    stop_at(tmp_path, "stateful", 2, 3)  # counted from the resume: 3 batches later, in the same epoch
    Child(tmp_path, "stateful", 2, seed=1).finish()
    assert_same_final_state(straight_runs[("stateful", 2)], tmp_path)
