"""Epoch metrics over the whole data set under DDP: `Trainer.gather` on 2 real gloo processes."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from gather_ddp_workers import SIZE, WORLD, GatheringTrainer, dataset, f1, worker
from torch.utils.data import DataLoader

from zae_engine.testing import make_model, rendezvous


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("gather")
    mp.spawn(worker, args=(rendezvous(out), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_gathered_values_are_the_whole_data_set_once_in_the_samplers_order(ranks):
    global_order = [i for pair in zip(ranks[0]["local"], ranks[1]["local"]) for i in pair][:SIZE]
    for result in ranks:
        assert result["indices"].tolist() == global_order  # every sample once: the repeated ones are dropped
        assert sorted(result["indices"].tolist()) == list(range(SIZE))


def test_a_non_decomposable_metric_equals_the_single_process_one(ranks):
    single = GatheringTrainer(make_model(seed=3), "cpu", "test", log_bar=False)
    single.run(1, DataLoader(dataset(), batch_size=5))
    expected = f1(single.gathered["preds"], single.gathered["labels"])
    assert single.history[-1]["test/f1"] == expected and single.history[-1]["test/samples"] == SIZE
    for result in ranks:
        assert result["summary"]["test/f1"] == pytest.approx(expected)  # not the mean of two shards' F1
        assert result["summary"]["test/samples"] == SIZE
