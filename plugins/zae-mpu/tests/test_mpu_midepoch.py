"""Time-based mid-epoch checkpoints under DDP: rank 0's clock decides for every rank, shared every few steps."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from zae_mpu_testkit import DDPTrainer, make_mlp

from zae_engine.checkpoint import read_manifest
from zae_engine.testing import assert_same_weights, make_dataset
from zae_engine.trainer.addons import StateManagerAddon
from zae_engine.trainer.addons.save_schedule import MIN_SPACING


@pytest.mark.timeout(180)
def test_every_n_minutes_is_decided_on_rank_zero_and_shared_at_known_steps_only(tmp_path):
    model = make_mlp()
    trainer = DDPTrainer.add_on(StateManagerAddon)(
        model,
        ["cpu", "cpu"],
        "train",
        torch.optim.SGD(model.parameters(), lr=0.1),
        log_bar=False,
        threads_per_worker=1,
        save_path=str(tmp_path),
        every_n_minutes=1e-9,  # always due by rank 0's clock: a save at every step that shares the decision
        keep_last=100,
    )
    trainer.run(2, DataLoader(make_dataset(256), batch_size=8))  # 16 optimizer steps an epoch on each rank
    steps = [entry.step for entry in read_manifest(tmp_path).checkpoints if entry.kind == "step"]
    # the decision travels with one broadcast every MIN_SPACING steps (never one per step); both ranks saved
    # or went on together at each, or the next collective would have hung
    assert steps == list(range(MIN_SPACING, 33, MIN_SPACING))


def ddp_trainer(save_path, seed: int) -> DDPTrainer:
    torch.manual_seed(seed)  # the launcher seeds the DistributedSampler from this process's torch seed
    model = make_mlp(seed=3)
    return DDPTrainer.add_on(StateManagerAddon)(
        model,
        ["cpu", "cpu"],
        "train",
        torch.optim.Adam(model.parameters(), lr=0.01),
        log_bar=False,
        threads_per_worker=1,
        save_path=str(save_path),
        every_n_steps=20,
        keep_last=10,
    )


@pytest.mark.timeout(240)
def test_a_ddp_run_resumed_from_a_step_checkpoint_ends_with_the_straight_runs_weights(tmp_path):
    shuffled = DataLoader(make_dataset(256), batch_size=8, shuffle=True)
    straight = ddp_trainer(tmp_path, seed=5)
    straight.run(3, shuffled)  # the step-20 checkpoint lands inside epoch 2
    resumed = ddp_trainer(tmp_path / "elsewhere", seed=5)
    resumed.load_state(tmp_path / "step-epoch-0001-step-000020")
    resumed.run(3, shuffled, total=True)  # the rest of epoch 2 (the sharded order replayed), then epoch 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert_same_weights(resumed.model, straight.model)


def test_a_stateful_loader_is_sharded_like_a_dataloader_and_keeps_its_shuffle():
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    from zae_mpu.sharding import shard_loader

    loader = stateful.StatefulDataLoader(make_dataset(64), batch_size=8, shuffle=True)  # what zae run builds
    sharded, sampler = shard_loader(loader, 1, 2, seed=3, what="training loader")
    assert sampler.shuffle and sampler.rank == 1 and len(sharded) == 4
