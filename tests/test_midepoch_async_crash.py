"""SIGKILL while a background thread writes a checkpoint: the previous one stays whole, listed and loadable.

The child (tests/midepoch_child.py `async_forever`, forked) resumes from its save_path and trains with an
asynchronous checkpoint after every optimizer step, each about 12 MB; a model buffer holds the step count each
checkpoint belongs to, so a checkpoint that mixed two steps, or a half-written one that got listed, shows up.
The test kills it as soon as a temporary folder of its own shows a write in flight, five times over.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from midepoch_child import async_forever, forked, stamped_trainer

from zae_engine.checkpoint import read_checkpoint


def wait_for(condition, child, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert child.is_alive(), f"the child died while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def latest_step(save_path: Path) -> int:
    manifest = save_path / "manifest.json"
    return json.loads(manifest.read_text())["checkpoints"][-1]["step"] if manifest.exists() else -1


def writing(save_path: Path, prefix: str) -> bool:
    return any(p.name.startswith(prefix) for p in save_path.iterdir())


def load_and_check(save_path: Path) -> int:
    """Load the latest checkpoint into fresh objects; every listed one must be whole. Returns its step count."""
    trainer = stamped_trainer(str(save_path))
    loaded = trainer.load_state()
    steps = trainer.progress_checker.get_step() - 1
    assert int(trainer.model.steps_done) == steps, f"{loaded.name}: weights of step {int(trainer.model.steps_done)}"
    manifest = json.loads((save_path / "manifest.json").read_text())
    assert manifest["latest"] == loaded.name
    for entry in manifest["checkpoints"]:
        state, meta = read_checkpoint(save_path / entry["name"])
        assert meta["step"] == entry["step"] == int(state["model"]["steps_done"])
    return steps


def test_sigkill_during_an_async_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    save_path = tmp_path / "run"
    reached, inside = 0, 0
    for kill in range(5):
        child = forked(async_forever, str(save_path), output=tmp_path / f"child-{kill}.txt")
        ready = Path(f"{save_path}.ready")
        wait_for(ready.exists, child, "the child to start")
        ready.unlink()
        wait_for(lambda at=reached: latest_step(save_path) > at, child, "a checkpoint of this child")
        own = f".tmp-{child.pid}-"
        wait_for(lambda own=own: writing(save_path, own), child, "a write in flight")
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        inside += writing(save_path, own)
        steps = load_and_check(save_path)
        assert steps > reached, f"kill {kill}: back from step {reached} to {steps}"
        reached = steps
    print(f"{inside} of 5 kills left a half-written checkpoint behind; reached step {reached}")
