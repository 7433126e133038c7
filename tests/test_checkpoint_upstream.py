"""`zae checkpoint import-upstream`: upstream 0.7 save folders become checkpoints that `load_state()` resumes.

The upstream folders are made here the way upstream's StateManagerAddon makes them (torch.save of the model's
state dict, pickle.dump of the optimizer's and scheduler's), never by importing upstream. Hostile files must
be refused with our own message, and the code they carry must not run: each plants a marker-file command.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.schedulers import CosineAnnealingScheduler
from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import StateManagerAddon

_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]


def zae(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([*ZAE, *map(str, args)], env=env, capture_output=True, text=True, timeout=120, check=False)


def refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert "weights_only" not in result.stderr and "Weights only load failed" not in result.stderr  # ours, not torch's
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


class Classifier(SeparableTrainer, Trainer):
    pass


def parts():
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    return model, optimizer, CosineAnnealingScheduler(optimizer, total_iters=20)


@pytest.fixture
def upstream(tmp_path) -> tuple[Path, nn.Module, torch.optim.Optimizer, CosineAnnealingScheduler]:
    """An upstream save folder after 5 training steps: model.ckpt, optimizer.zae, scheduler.zae."""
    model, optimizer, scheduler = parts()
    for x, y in DataLoader(make_dataset(), batch_size=64):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    folder = tmp_path / "upstream"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "model.ckpt")
    with open(folder / "optimizer.zae", "wb") as handle:
        pickle.dump(optimizer.state_dict(), handle)
    with open(folder / "scheduler.zae", "wb") as handle:
        pickle.dump(scheduler.state_dict(), handle)
    return folder, model, optimizer, scheduler


def resumed_trainer(save_path: Path) -> Classifier:
    model, optimizer, scheduler = parts()
    torch.manual_seed(123)
    nn.init.normal_(model.weight)  # different from the upstream weights, so loading them shows
    return Classifier.add_on(StateManagerAddon)(
        model, "cpu", "train", optimizer, scheduler, log_bar=False, save_path=str(save_path)
    )


def same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    return a == b


def test_default_import_carries_the_weights_and_says_why_the_pickles_stay(upstream, tmp_path):
    folder, model, _, _ = upstream
    new = tmp_path / "new"
    result = zae("checkpoint", "import-upstream", folder, new)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    optimizer_line = next(line for line in lines if "optimizer.zae" in line)
    scheduler_line = next(line for line in lines if "scheduler.zae" in line)
    for line in (optimizer_line, scheduler_line):
        assert "not carried" in line and "pickle" in line and "--trust-pickle" in line
    assert "epoch 1" in result.stdout

    trainer = resumed_trainer(new)
    loaded = trainer.load_state()
    assert loaded == new / "imported-epoch-0000"
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert trainer.optimizer.state_dict()["state"] == {}  # starts fresh, as announced
    assert trainer.progress_checker.get_epoch() == 1
    loader = DataLoader(make_dataset(), batch_size=64)
    trainer.run(1, loader, loader)
    assert [summary["epoch"] for summary in trainer.history] == [1]


@pytest.mark.parametrize("save_format", ["safetensors", "ckpt"])
def test_trust_pickle_carries_optimizer_and_scheduler_and_resumes(upstream, tmp_path, save_format):
    folder, model, optimizer, scheduler = upstream
    new = tmp_path / "new"
    result = zae(
        "checkpoint", "import-upstream", folder, new, "--trust-pickle", "--epoch", "4", "--save-format", save_format,
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["next_epoch"] == 4 and report["format"] == save_format
    assert {part["file"]: part["carried"] for part in report["parts"]} == {
        "model.ckpt": True,
        "optimizer.zae": True,
        "scheduler.zae": True,
    }
    assert zae("checkpoint", "verify", new).returncode == 0

    trainer = resumed_trainer(new)
    trainer.load_state()
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert same_tensors(trainer.optimizer.state_dict(), optimizer.state_dict())
    assert trainer.scheduler.last_epoch == scheduler.last_epoch == 4
    assert trainer.scheduler.get_last_lr() == scheduler.get_last_lr()
    assert trainer.progress_checker.get_epoch() == 4
    loader = DataLoader(make_dataset(), batch_size=64)
    trainer.run(1, loader, loader)
    assert [summary["epoch"] for summary in trainer.history] == [4]


def test_upstream_safetensor_weights_and_wrapped_names_are_read(tmp_path):
    from safetensors.torch import save_file

    model, _, _ = parts()
    folder = tmp_path / "upstream"
    folder.mkdir()
    save_file({f"module.{k}": v for k, v in model.state_dict().items()}, str(folder / "model.safetensor"))
    result = zae("checkpoint", "import-upstream", folder, tmp_path / "new")
    assert result.returncode == 0, result.stderr
    assert "'module.' prefix" in result.stdout
    assert "optimizer.zae: not found" in result.stdout
    trainer = resumed_trainer(tmp_path / "new")
    trainer.load_state()
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------- hostile files
class PlantsMarker:
    """What an attacker pickles: unpickling it would run a shell command that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_optimizer_pickle_runs_no_code(upstream, tmp_path):
    folder, *_ = upstream
    marker = tmp_path / "pwned"
    state = {"state": {}, "param_groups": [{"params": [0, 1], "lr": 0.1}], "hook": PlantsMarker(marker)}
    with open(folder / "optimizer.zae", "wb") as handle:
        pickle.dump(state, handle)
    assert b"system" in (folder / "optimizer.zae").read_bytes()  # the payload is really in there
    result = zae("checkpoint", "import-upstream", folder, tmp_path / "new", "--trust-pickle")
    refused(result, "optimizer.zae", "was refused", "system", "nothing from the file was run")
    assert not marker.exists()
    assert not (tmp_path / "new").exists()  # nothing written
    # without --trust-pickle the file is never opened: the weights come over, exit 0, still no marker
    assert zae("checkpoint", "import-upstream", folder, tmp_path / "new").returncode == 0
    assert not marker.exists()


class StorageHidingAPayload:
    """A 'tensor storage' whose bytes are a torch.save of the payload: torch's own loader would unpickle it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        from torch.storage import _load_from_bytes

        inner = io.BytesIO()
        torch.save(PlantsMarker(self.marker), inner, _use_new_zipfile_serialization=False)
        return (_load_from_bytes, (inner.getvalue(),))


def test_a_payload_hidden_in_tensor_storage_bytes_runs_no_code(upstream, tmp_path):
    folder, *_ = upstream
    marker = tmp_path / "pwned"
    with open(folder / "scheduler.zae", "wb") as handle:
        pickle.dump({"last_epoch": 3, "base_lrs": [StorageHidingAPayload(marker)]}, handle)
    result = zae("checkpoint", "import-upstream", folder, tmp_path / "new", "--trust-pickle")
    refused(result, "scheduler.zae", "tensor storage")
    assert not marker.exists()


def test_a_malicious_model_ckpt_runs_no_code(upstream, tmp_path):
    folder, *_ = upstream
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(2, 10), "bias": PlantsMarker(marker)}, folder / "model.ckpt")
    result = zae("checkpoint", "import-upstream", folder, tmp_path / "new")
    refused(result, "model.ckpt", "was refused", "Nothing from it was run")
    assert not marker.exists()
    assert not (tmp_path / "new").exists()


class Rebuilds:
    """A tensor rebuilt from hand-picked arguments (what a crafted file can ask for)."""

    def __init__(self, *args) -> None:
        self.args = args

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


@pytest.mark.parametrize(
    ("size", "stride", "why"),
    [
        ((10**12,), (0,), "more elements than its storage"),  # a 4 TB tensor from 16 bytes: refused, not allocated
        ((2,), (4,), "past the end of its storage"),  # element 4 of a 4-element storage
    ],
)
def test_crafted_tensors_are_refused_before_they_are_built(upstream, tmp_path, size, stride, why):
    folder, *_ = upstream
    storage = torch.zeros(4).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    crafted = Rebuilds(typed, 0, size, stride, False, OrderedDict())
    with open(folder / "optimizer.zae", "wb") as handle:
        pickle.dump({"state": {0: {"exp_avg": crafted}}, "param_groups": []}, handle)
    refused(zae("checkpoint", "import-upstream", folder, tmp_path / "new", "--trust-pickle"), why)


def test_objects_a_state_dict_never_holds_are_refused(upstream, tmp_path):
    from fractions import Fraction

    folder, *_ = upstream
    with open(folder / "scheduler.zae", "wb") as handle:  # e.g. upstream's SchedulerChain pickles whole objects
        pickle.dump({"last_epoch": 1, "schedulers": (Fraction(1, 3),)}, handle)
    refused(zae("checkpoint", "import-upstream", folder, tmp_path / "new", "--trust-pickle"), "fractions.Fraction")
    with open(folder / "scheduler.zae", "wb") as handle:
        pickle.dump({"last_epoch": 1, "seen": {1, 2}}, handle)  # a set needs no global, and is still refused
    refused(zae("checkpoint", "import-upstream", folder, tmp_path / "new", "--trust-pickle"), "builtins.set")
    with open(folder / "optimizer.zae", "wb") as handle:
        pickle.dump([1, 2, 3], handle)
    (folder / "scheduler.zae").unlink()
    refused(
        zae("checkpoint", "import-upstream", folder, tmp_path / "new", "--trust-pickle"),
        "does not hold an optimizer state dict",
    )


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_message_and_writes_nothing(upstream, tmp_path):
    folder, *_ = upstream
    refused(zae("checkpoint", "import-upstream", tmp_path / "nope", tmp_path / "new"), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(zae("checkpoint", "import-upstream", empty, tmp_path / "new"), "holds no model.ckpt")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    refused(zae("checkpoint", "import-upstream", folder, taken), "not an empty folder")
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    refused(zae("checkpoint", "import-upstream", folder, tmp_path / "new", "--save-format", "pkl"), "--save-format")
    result = zae("checkpoint", "import-upstream", folder, tmp_path / "new", "--epoch", "0")
    assert result.returncode != 0 and "Traceback" not in result.stderr and "--epoch" in result.stderr

    ours = tmp_path / "ours"
    assert zae("checkpoint", "import-upstream", folder, ours).returncode == 0
    refused(zae("checkpoint", "import-upstream", ours, tmp_path / "again"), "already holds a zae-engine checkpoint")

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    data = (broken / "model.ckpt").read_bytes()
    (broken / "model.ckpt").write_bytes(data[: len(data) // 2])
    refused(zae("checkpoint", "import-upstream", broken, tmp_path / "new"), "model.ckpt", "not a readable weights file")
    (broken / "model.ckpt").write_bytes(b"")
    refused(zae("checkpoint", "import-upstream", broken, tmp_path / "new"), "not a readable weights file")
    torch.save([torch.ones(1)], broken / "model.ckpt")
    refused(zae("checkpoint", "import-upstream", broken, tmp_path / "new"), "does not hold a model state dict")
    assert not (tmp_path / "new").exists()
