"""Every failure to write or read a checkpoint is one CheckpointError: it names the file, says what to do
(and "free space" only when the disk is full), keeps the original error as its cause, and loses nothing.

A really full disk and a really read-only file system come from a small tmpfs mounted in a private mount
namespace (`unshare -rm`); where that is not allowed those two tests are skipped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.errors import CheckpointError
from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import StateManagerAddon

TESTS = Path(__file__).parent


class PlainTrainer(SeparableTrainer, Trainer):
    pass


Checkpointed = PlainTrainer.add_on(StateManagerAddon)


def make(save_path, save_format="ckpt", **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    return Checkpointed(
        model,
        "cpu",
        "train",
        torch.optim.Adam(model.parameters(), lr=1e-2),
        log_bar=False,
        save_path=str(save_path),
        save_format=save_format,
        **kwargs,
    )


def loader():
    return DataLoader(make_dataset(64), batch_size=32)


# --------------------------------------------------------------------------------- a save_path that cannot be
def test_a_save_path_that_is_a_file_is_named_so_before_training(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    for save_path in (tmp_path / "taken", tmp_path / "taken" / "run"):
        trainer = make(save_path)
        with pytest.raises(CheckpointError, match="is a file, not a folder") as err:
            trainer.run(1, loader())
        assert trainer.history == []  # refused when the run started, not after an epoch
        assert "Free space" not in str(err.value) and str(save_path) in str(err.value)
        assert isinstance(err.value.__cause__, OSError) or save_path == tmp_path / "taken"
    assert (tmp_path / "taken").read_text() == "a file, not a folder"


def test_a_save_path_that_cannot_be_created_says_so(tmp_path):
    trainer = make("/proc/zae-engine-test/run")
    with pytest.raises(CheckpointError, match="cannot create save_path '/proc/zae-engine-test/run'") as err:
        trainer.run(1, loader())
    assert "Free space" not in str(err.value)
    assert isinstance(err.value.__cause__, OSError)
    assert trainer.history == []


def test_a_name_too_long_is_a_checkpoint_error_with_its_cause(tmp_path):
    trainer = make(tmp_path / "run")
    trainer.run(1, loader())
    long_name = tmp_path / ("x" * 300)
    with pytest.raises(CheckpointError, match="too long") as err:
        trainer.save_state(long_name)
    assert err.value.__cause__ is not None and errno.ENAMETOOLONG == getattr(err.value.__cause__, "errno", None)
    assert "Free space" not in str(err.value)
    with pytest.raises(CheckpointError, match="too long"):
        trainer.save_model(str(long_name) + ".safetensors")
    for load in (trainer.load_state, trainer.apply_weights):
        with pytest.raises(CheckpointError, match="too long"):
            load(tmp_path / ("y" * 5000))
    assert make(tmp_path / "run").load_state() == tmp_path / "run" / "epoch-0001"  # nothing was lost


# --------------------------------------------------------------------------------- wrong types inside a checkpoint
@pytest.mark.parametrize(
    ("part", "value"), [("addons", []), ("best", [1]), ("history", {}), ("rng", {"torch": [], "numpy": []})]
)
def test_a_wrong_typed_part_is_a_checkpoint_error(tmp_path, part, value):
    make(tmp_path / "run", "safetensors").run(1, loader())
    path = tmp_path / "run" / "epoch-0001" / "state.json"
    skeleton = json.loads(path.read_text())
    skeleton[part] = value
    path.write_text(json.dumps(skeleton))
    meta_path = path.parent / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["state.json"] = {
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        make(tmp_path / "run").load_state()
    message = str(err.value)
    assert str(path.parent) in message
    assert part in message or (part == "rng" and "random-number states" in message)


# --------------------------------------------------------------------------------- a full disk, a read-only disk
CHILD = textwrap.dedent(
    """
    import json, subprocess, sys
    sys.path.insert(0, sys.argv[4])
    from test_checkpoint_errors import child_scenario
    print(json.dumps(child_scenario(sys.argv[1], sys.argv[2], sys.argv[3])))
    """
)


def child_scenario(mount: str, scenario: str, save_format: str) -> dict:
    """Inside the private mount namespace: one checkpoint saved, then the disk fills up or turns read-only."""
    import io
    import os

    sys.stdout, real_stdout = io.StringIO(), sys.stdout
    save_path = Path(mount) / "run"
    torch.manual_seed(0)
    model = nn.Linear(512, 512)  # 1 MiB of weights, 3 MiB with Adam's moments: one checkpoint fits in 4 MiB
    trainer = Checkpointed(
        model,
        "cpu",
        "train",
        torch.optim.Adam(model.parameters(), lr=1e-3),
        log_bar=False,
        save_path=str(save_path),
        save_format=save_format,
    )
    batches = [(torch.randn(4, 512), torch.randint(0, 2, (4,)))]
    trainer.run(1, batches)
    if scenario == "readonly":
        subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
    report: dict = {}
    try:
        trainer.run(1, batches)
    except CheckpointError as exc:
        cause = exc.__cause__
        report = {"message": str(exc), "cause": type(cause).__name__ if cause else None}
    report["names"] = sorted(os.listdir(save_path))
    model = nn.Linear(512, 512)
    checker = Checkpointed(model, "cpu", "train", torch.optim.Adam(model.parameters()), save_path=str(save_path))
    report["loaded"] = checker.load_state().name  # the first checkpoint is still whole
    sys.stdout = real_stdout
    return report


def run_in_small_disk(tmp_path: Path, scenario: str, save_format: str) -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small private file system")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not allowed here: {probe.stderr.decode().strip()}")
    mount = tmp_path / "disk"
    mount.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            'mount -t tmpfs -o size=5m tmpfs "$0" && exec "$@"',
            str(mount),
            sys.executable,
            str(script),
            str(mount),
            scenario,
            save_format,
            str(TESTS),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("save_format", ["ckpt", "safetensors"])
def test_a_full_disk_says_free_space_and_keeps_the_previous_checkpoint(tmp_path, save_format):
    report = run_in_small_disk(tmp_path, "full", save_format)
    message = report.get("message", "")
    assert "could not write checkpoint" in message and "epoch-0002" in message, report
    assert "the disk is full. Free space or choose another save_path" in message
    assert "earlier checkpoints are untouched" in message
    assert report["cause"] in ("OSError", "RuntimeError", "SafetensorError"), report
    assert report["loaded"] == "epoch-0001"
    assert [n for n in report["names"] if n.startswith(".tmp-")] == []


def test_a_read_only_disk_says_so_not_free_space(tmp_path):
    report = run_in_small_disk(tmp_path, "readonly", "ckpt")
    message = report.get("message", "")
    assert "read-only" in message, report
    assert "Free space" not in message
    assert report["cause"] == "OSError"
    assert report["loaded"] == "epoch-0001"
