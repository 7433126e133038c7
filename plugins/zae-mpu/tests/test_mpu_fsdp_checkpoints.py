"""Sharded checkpoints under strategy='fsdp': written by both ranks, listed only when complete, resumed on 1 or 2.

The reference is one process training 4 epochs with batch 2B; 2 ranks x batch B train the same (no shuffling),
so a run of 2 epochs on one side, resumed for 2 more on the other, must end where the reference does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from zae_mpu import RankFailedError
from zae_mpu_testkit import (
    DDPTrainer,
    KillDuringSave,
    SaveModelEachEpoch,
    SignalParentAtStep,
    make_mlp,
    make_wide_mlp,
)

from zae_engine.checkpoint.manifest import read_manifest
from zae_engine.errors import ConfigError, TrainingInterrupted
from zae_engine.testing import SeparableTrainer, assert_same_weights, make_dataset
from zae_engine.trainer.addons import StateManagerAddon

B = 8
TWO = ["cpu", "cpu"]
_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]


def zae(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([*ZAE, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


def trainer_on(device, save_path: Path, model_fn=make_mlp, addons=(), saving=None, **options):
    model = model_fn(seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    saving = {"save_top_k": 0, "keep_last": 2, **(saving or {})}
    manager = StateManagerAddon(save_path=str(save_path), resume=True, **saving)
    if device == TWO:
        cls, options = DDPTrainer, {"strategy": "fsdp", "threads_per_worker": 1, **options}
    else:
        cls = SeparableTrainer
    return cls(model, device, "train", optimizer, log_bar=False, addons=[manager, *addons], **options)


def run(trainer, epochs: int) -> None:
    batch = B if trainer.devices == [torch.device("cpu")] * 2 else 2 * B
    trainer.run(epochs, DataLoader(make_dataset(128), batch_size=batch, shuffle=False), total=True)


@pytest.fixture(scope="module")
def straight():
    """One process, 4 epochs, batch 2B: where every resumed run must end."""
    model = make_mlp(seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    trainer = SeparableTrainer(model, "cpu", "train", optimizer, log_bar=False)
    trainer.run(4, DataLoader(make_dataset(128), batch_size=2 * B, shuffle=False))
    return trainer


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, straight):
    """A save_path whose checkpoints two FSDP ranks wrote after epochs 1 and 2."""
    save_path = tmp_path_factory.mktemp("sharded") / "ckpt"
    trainer = trainer_on(TWO, save_path)
    run(trainer, 2)
    return save_path, trainer


def assert_ends_like(trainer, straight) -> None:
    assert_same_weights(trainer.model, straight.model, atol=1e-6, rtol=1e-5)
    for index, state in straight.optimizer.state_dict()["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            mine = trainer.optimizer.state_dict()["state"][index][key]
            torch.testing.assert_close(mine, state[key], atol=1e-6, rtol=1e-5)
    assert [h["epoch"] for h in trainer.history] == [1, 2, 3, 4]  # the first two came from the checkpoint
    assert [h["step"] for h in trainer.history] == [h["step"] for h in straight.history]


def copy_of(save_path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(save_path, target)
    return target


def test_both_ranks_write_one_folder_listed_as_sharded(sharded):
    save_path, _ = sharded
    manifest = read_manifest(save_path)
    assert [(e.name, e.save_format) for e in manifest.checkpoints] == [
        ("epoch-0001", "sharded"),
        ("epoch-0002", "sharded"),
    ]
    folder = save_path / "epoch-0002"
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.json",
        "shard-00000.safetensors",  # rank 0's shards (and the values every rank holds whole)
        "shard-00001.safetensors",  # rank 1's shards
        "shards.json",
        "state.json",
    ]
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert sorted(meta["files"]) == sorted(p.name for p in folder.iterdir() if p.name != "checkpoint.json")
    for path in folder.iterdir():  # no pickle anywhere: DCP's .metadata is replaced by shards.json
        assert not path.read_bytes().startswith(b"\x80"), path.name
    assert not [p for p in save_path.iterdir() if p.name.startswith(".tmp-")]
    verified = zae("checkpoint", "verify", save_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "2 of 2 checkpoint(s) intact" in verified.stdout
    listed = zae("checkpoint", "ls", save_path, "--json")
    assert [row["format"] for row in json.loads(listed.stdout)["checkpoints"]] == ["sharded", "sharded"]


@pytest.mark.timeout(120)
def test_a_sharded_checkpoint_of_two_ranks_resumes_in_one_process(sharded, straight, tmp_path):
    resumed = trainer_on("cpu", copy_of(sharded[0], tmp_path))
    run(resumed, 4)
    assert_ends_like(resumed, straight)


@pytest.mark.timeout(120)
def test_a_sharded_checkpoint_of_two_ranks_resumes_on_two_ranks(sharded, straight, tmp_path):
    resumed = trainer_on(TWO, copy_of(sharded[0], tmp_path))
    run(resumed, 4)
    assert_ends_like(resumed, straight)
    assert read_manifest(tmp_path / "ckpt").checkpoints[-1].save_format == "sharded"


@pytest.mark.timeout(120)
def test_a_whole_checkpoint_of_one_process_resumes_on_two_fsdp_ranks(straight, tmp_path):
    save_path = tmp_path / "ckpt"
    run(trainer_on("cpu", save_path), 2)
    assert read_manifest(save_path).checkpoints[-1].save_format == "ckpt"
    resumed = trainer_on(TWO, save_path)
    run(resumed, 4)
    assert_ends_like(resumed, straight)


@pytest.mark.timeout(120)
def test_export_and_save_model_give_whole_weights_usable_without_torch_distributed(sharded, tmp_path):
    save_path, trainer = sharded
    out = tmp_path / "model.safetensors"
    done = zae("checkpoint", "export", save_path, "--out", out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same_weights(load_file(str(out)), trainer.model)  # assembled from both ranks' files, offline

    weights = tmp_path / "weights"
    saver = trainer_on(TWO, tmp_path / "other", addons=[SaveModelEachEpoch(folder=str(weights))])
    run(saver, 2)
    assert sorted(p.name for p in weights.iterdir()) == ["epoch-1.safetensors", "epoch-2.safetensors"]
    assert_same_weights(load_file(str(weights / "epoch-2.safetensors")), saver.model)  # gathered on rank 0
    plain = trainer_on("cpu", tmp_path / "plain")
    plain.apply_weights(str(weights / "epoch-2.safetensors"))
    assert_same_weights(plain.model, saver.model)


@pytest.mark.timeout(120)
def test_a_planted_dcp_metadata_pickle_is_never_read(sharded, straight, tmp_path):
    save_path = copy_of(sharded[0], tmp_path)
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    (save_path / "epoch-0002" / ".metadata").write_bytes(pickle.dumps(Payload()))
    verified = zae("checkpoint", "verify", save_path / "epoch-0002")
    assert verified.returncode == 1  # named, so nobody mistakes it for part of the checkpoint
    assert "does not list, which are never read: .metadata" in verified.stdout
    resumed = trainer_on("cpu", save_path)
    run(resumed, 4)
    assert_ends_like(resumed, straight)
    assert not marker.exists()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("rank", [1, 0])
def test_a_rank_killed_during_a_sharded_save_leaves_no_listed_incomplete_checkpoint(tmp_path, rank):
    save_path = tmp_path / "ckpt"
    trainer = trainer_on(TWO, save_path, make_wide_mlp, addons=[KillDuringSave(save_path=str(save_path), rank=rank)])
    with pytest.raises(RankFailedError, match=f"rank {rank} of 2 was killed by SIGKILL"):
        run(trainer, 3)

    # the kill came after epoch 2's save began (the watcher waits for its temp folder) and before it was listed
    assert [e.name for e in read_manifest(save_path).checkpoints] == ["epoch-0001"]
    assert not (save_path / "epoch-0002").exists()
    left = [p for p in save_path.iterdir() if p.name.startswith(".tmp-")]
    if rank == 0:  # the writer died: its temp folder stays, unlisted, with no checkpoint.json
        assert len(left) == 1 and left[0].name.endswith("-epoch-0002")
        assert not (left[0] / "checkpoint.json").exists()
    else:  # rank 0 saw the collective break and removed its temp folder itself
        assert left == []
    verified = zae("checkpoint", "verify", save_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    resumed = trainer_on("cpu", save_path, make_wide_mlp)
    run(resumed, 2)  # resumes from epoch 1; its first save sweeps the dead writer's temp folder
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert not [p for p in save_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.timeout(240)
def test_step_checkpoints_and_a_sigterm_inside_an_epoch_save_every_ranks_shards_and_resume_exactly(tmp_path, straight):
    save_path = tmp_path / "ckpt"
    saving = {"every_n_steps": 5, "keep_last": 20}
    preempted = trainer_on(TWO, save_path, addons=[SignalParentAtStep(step=19, pid=os.getpid())], saving=saving)
    with pytest.raises(TrainingInterrupted):
        run(preempted, 4)  # the ranks agree on the stop at a step both reach, inside epoch 3
    listed = read_manifest(save_path).checkpoints
    assert {e.save_format for e in listed} == {"sharded"}
    assert [e.step for e in listed if e.kind == "step"][:3] == [5, 10, 15]
    assert listed[-1].kind == "interrupted" and 19 < listed[-1].step < 32  # saved inside an epoch, by both ranks
    assert zae("checkpoint", "verify", save_path).returncode == 0

    resumed = trainer_on(TWO, save_path, saving=saving)
    run(resumed, 4)  # the rest of the interrupted epoch, then the fourth
    assert_ends_like(resumed, straight)


def test_async_saves_under_fsdp_are_refused_before_any_worker_starts(tmp_path):
    trainer = trainer_on(TWO, tmp_path / "ckpt", saving={"async_save": True})
    with pytest.raises(ConfigError, match="async_save=True"):
        run(trainer, 1)
    assert not (tmp_path / "ckpt").exists() or not read_manifest(tmp_path / "ckpt").checkpoints


SPEC = """
trainer: {class_path: zae_engine.testing.SeparableTrainer, init_args: {log_bar: false}}
device: [cpu, cpu]
model: {class_path: torch.nn.Linear, init_args: {in_features: 10, out_features: 2}}
optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.01}}
data:
  train: {dataset: {class_path: zae_engine.testing.make_dataset, init_args: {n: 128}}, batch_size: 8}
addons:
  - {name: mpu, strategy: fsdp, threads_per_worker: 1MPU_EXTRA}
  - {name: state_manager, save_path: SAVE_PATH, keep_last: 1, save_top_k: 0}
run: {n_epoch: 2, seed: 0}
"""


@pytest.mark.timeout(180)
def test_zae_run_of_a_spec_with_strategy_fsdp_writes_a_sharded_checkpoint(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("SAVE_PATH", str(tmp_path / "ckpt")).replace("MPU_EXTRA", ""))
    done = zae("run", spec, "--no-record")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert [(e.name, e.save_format) for e in read_manifest(tmp_path / "ckpt").checkpoints] == [
        ("epoch-0002", "sharded")
    ]
    assert zae("checkpoint", "verify", tmp_path / "ckpt").returncode == 0


def test_zae_validate_names_an_option_of_the_other_strategy(tmp_path):
    spec = tmp_path / "spec.yaml"
    extra = ", find_unused_parameters: true"
    spec.write_text(SPEC.replace("SAVE_PATH", str(tmp_path / "ckpt")).replace("MPU_EXTRA", extra))
    done = zae("validate", spec)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "find_unused_parameters applies only to strategy='ddp'" in done.stderr, done.stderr
