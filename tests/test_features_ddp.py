"""The training features under real DDP: 2 CPU processes on gloo, the trainer's model wrapped in DDP by hand.

One spawn runs every scenario (see features_ddp_workers.py); the tests below check what each rank reported.
"""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from features_ddp_workers import WORLD, poisoned, rank_batches, worker
from features_testing import merged, reference_sgd

from zae_engine.testing import assert_same_weights, rendezvous


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(rendezvous(out), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def union(parts_per_rank: list[list]) -> tuple:
    """One large batch made of every rank's micro-batches: what DDP + accumulation must step on."""
    return merged([b for parts in parts_per_rank for b in parts])


def test_accumulation_with_no_sync_equals_one_large_step_and_syncs_once_per_step(ranks):
    shards = [rank_batches(r) for r in range(WORLD)]
    groups = [slice(0, 4), slice(4, 8), slice(8, 10)]  # the last group of each epoch is partial
    expected = reference_sgd([union([shard[g] for shard in shards]) for g in groups])
    for result in ranks:
        accumulation = result["accumulation"]
        assert accumulation["steps"] == 3
        assert accumulation["syncs"] == 3  # 10 backward passes, gradients all-reduced only on the 3 final ones
        assert_same_weights(accumulation["accumulated"], expected, atol=1e-6, rtol=1e-5)
        assert_same_weights(accumulation["big_batches"], expected, atol=1e-6, rtol=1e-5)
        assert_same_weights(accumulation["unsized"], expected, atol=1e-6, rtol=1e-5)


def test_nan_skip_drops_the_batch_on_every_rank_together(ranks):
    shards = [poisoned(r) for r in range(WORLD)]  # rank 1's third batch holds a NaN
    expected = reference_sgd([union([[shard[i]] for shard in shards]) for i in range(10) if i != 2])
    for result in ranks:
        assert result["nan_skip"]["logged"] == 9
        assert_same_weights(result["nan_skip"]["weights"], expected, atol=1e-6, rtol=1e-5)


def test_early_stopping_stops_every_rank_at_the_same_epoch(ranks):
    # only rank 1's local score stalls (epoch 2); rank 0 keeps improving yet stops with it
    assert [r["early_stopping"]["epochs"] for r in ranks] == [2, 2]
    assert [r["early_stopping"]["stopped_epoch"] for r in ranks] == [2, 2]
    assert [r["early_stopping"]["bad_epochs"] for r in ranks] == [0, 1]
