"""One writer per save_path: real processes racing for it, a refused second writer, a SIGKILLed holder.

Each writer is a fresh interpreter (tests/checkpoint_writer_child.py) that trains a tiny model and saves
after every epoch; the model's buffers record which writer saved it and after which epoch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from checkpoint_writer_child import Child, Net, Stamp, writer_id

from zae_engine.checkpoint import read_checkpoint
from zae_engine.errors import CheckpointError
from zae_engine.trainer.addons import StateManagerAddon

CHILD = Path(__file__).with_name("checkpoint_writer_child.py")
EPOCHS = 120


def start(save_path: Path, n_epoch: int, work: Path, name: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(save_path), str(n_epoch), str(work), name, *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"writer exited early ({proc.returncode}): {proc.stderr.read().decode()[-3000:]}")
        time.sleep(0.01)


def finish(proc: subprocess.Popen, work: Path, name: str) -> dict:
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode in (0, 143), stderr.decode()[-3000:]
    assert b"Traceback" not in stderr, stderr.decode()[-3000:]
    return json.loads((work / f"{name}.json").read_text())


def listed_checkpoints(save_path: Path) -> list[dict]:
    return json.loads((save_path / "manifest.json").read_text())["checkpoints"]


def assert_consistent(save_path: Path, allow_unlisted: bool = False) -> list[dict]:
    """The manifest lists exactly the complete folders there are, each whole and saved as listed.

    `allow_unlisted`: a writer was SIGKILLed, possibly between renaming a folder into place and listing it.
    """
    manifest = json.loads((save_path / "manifest.json").read_text())
    names = [entry["name"] for entry in manifest["checkpoints"]]
    assert len(names) == len(set(names)), f"a folder is listed twice: {names}"
    assert manifest["latest"] == names[-1]
    assert manifest["best"] is None or manifest["best"] in names
    for entry in manifest["checkpoints"]:
        state, meta = read_checkpoint(save_path / entry["name"])  # raises if missing or not whole
        assert meta["name"] == entry["name"], f"{entry['name']} holds the checkpoint written as {meta['name']}"
        assert meta["epoch"] == entry["epoch"] == int(state["model"]["epochs_done"]), entry
    on_disk = sorted(p.name for p in save_path.iterdir() if (p / "checkpoint.json").is_file())
    assert set(names) <= set(on_disk)
    if not allow_unlisted:
        assert on_disk == sorted(names), f"complete folders the manifest lost: {sorted(set(on_disk) - set(names))}"
    assert [p.name for p in save_path.glob(".tmp-*")] == []
    return manifest["checkpoints"]


def test_two_writers_on_one_save_path_refuse_or_stay_consistent(tmp_path):
    """Two processes start training into one save_path at the same instant, for 120 epochs each."""
    save_path, work = tmp_path / "run", tmp_path / "work"
    work.mkdir()
    procs = {name: start(save_path, EPOCHS, work, name) for name in ("a", "b")}
    for name, proc in procs.items():
        wait_for(work / f"{name}.ready", proc)
    (work / "go").touch()
    reports = {name: finish(proc, work, name) for name, proc in procs.items()}
    outcomes = sorted(r["outcome"] for r in reports.values())
    assert outcomes in (["done", "done"], ["done", "refused"]), reports
    if outcomes == ["done", "refused"]:
        winner = next(r for r in reports.values() if r["outcome"] == "done")
        loser = next(r for r in reports.values() if r["outcome"] == "refused")
        assert str(save_path) in loser["message"]
        assert f"process {winner['pid']} on host {winner['host']}" in loser["message"]
        assert loser["steps"] == 0, "the refused writer trained before it was refused"
        assert winner["steps"] == EPOCHS
    entries = assert_consistent(save_path)
    assert max(e["epoch"] for e in entries) == EPOCHS


def test_a_second_writer_is_refused_before_it_trains(tmp_path):
    """While one run is training, a second run and a manual save_state() on the same save_path are refused."""
    save_path, work = tmp_path / "run", tmp_path / "work"
    work.mkdir()
    holder = start(save_path, 10**6, work, "holder")
    second = start(save_path, EPOCHS, work, "second")
    wait_for(work / "holder.ready", holder)
    wait_for(work / "second.ready", second)
    (work / "holder.go").touch()
    while not (save_path / "manifest.json").exists() or not listed_checkpoints(save_path):
        assert holder.poll() is None, holder.stderr.read().decode()[-3000:]
        time.sleep(0.01)
    (work / "second.go").touch()
    refused = finish(second, work, "second")
    assert refused["outcome"] == "refused" and refused["steps"] == 0
    message = refused["message"]
    assert f"save_path {str(save_path)!r}" in message
    assert f"process {holder.pid} on host {socket.gethostname()}" in message
    assert "another save_path" in message

    with pytest.raises(CheckpointError, match=f"process {holder.pid} on host"):
        in_process_trainer(save_path).save_state()

    holder.send_signal(signal.SIGTERM)
    report = finish(holder, work, "holder")
    assert report["outcome"] == "interrupted"
    entries = assert_consistent(save_path)
    assert entries[-1]["kind"] == "interrupted"
    assert in_process_trainer(save_path).save_state() is not None  # the lock went with the holder


def in_process_trainer(save_path: Path):
    model = Net()
    return Child.add_on(Stamp, StateManagerAddon)(
        model, "cpu", "train", torch.optim.SGD(model.parameters(), lr=0.01), log_bar=False, save_path=str(save_path)
    )


def test_a_sigkilled_writer_does_not_block_the_next(tmp_path):
    """SIGKILL the holder while a process it forked lives on: the next writer gets the lock at once."""
    save_path, work = tmp_path / "run", tmp_path / "work"
    work.mkdir()
    holder = start(save_path, 10**6, work, "holder", "--fork-sleeper")
    wait_for(work / "holder.ready", holder)
    (work / "holder.go").touch()
    while not (save_path / "manifest.json").exists() or not listed_checkpoints(save_path):
        assert holder.poll() is None, holder.stderr.read().decode()[-3000:]
        time.sleep(0.01)
    sleeper = int((work / "holder.sleeper").read_text())
    try:
        with pytest.raises(CheckpointError, match=f"process {holder.pid} on host"):
            in_process_trainer(save_path).save_state()
        holder.kill()
        holder.wait()
        assert holder.returncode == -signal.SIGKILL
        os.kill(sleeper, 0)  # the forked child is still alive, and holds no lock
        trainer = in_process_trainer(save_path)
        trainer.run(2, [(torch.randn(8, 4), torch.randint(0, 2, (8,)))])
        assert trainer.save_state() is not None
    finally:
        os.kill(sleeper, signal.SIGKILL)
    entries = assert_consistent(save_path, allow_unlisted=True)
    state, _ = read_checkpoint(save_path / entries[-1]["name"])
    assert int(state["model"]["writer"]) == 0  # the in-process writer's, not the killed holder's
    assert int(state["model"]["writer"]) != writer_id("holder")


def test_a_second_trainer_in_the_same_process_is_refused(tmp_path):
    first, second = in_process_trainer(tmp_path), in_process_trainer(tmp_path)
    store = first.addon("state_manager").store
    store.acquire()
    try:
        with pytest.raises(CheckpointError, match="another trainer in this process"):
            second.run(1, [(torch.randn(8, 4), torch.randint(0, 2, (8,)))])
        assert second.history == []
    finally:
        store.release()
    second.run(1, [(torch.randn(8, 4), torch.randint(0, 2, (8,)))])
    assert len(second.history) == 1


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    save_path = tmp_path / "run"
    save_path.mkdir()
    (save_path / ".zae-writer.lock").symlink_to(victim)
    with pytest.raises(CheckpointError, match="is a symbolic link") as err:
        in_process_trainer(save_path).save_state()
    assert "precious" not in str(err.value)
    assert victim.read_text() == "precious"
