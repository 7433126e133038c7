"""2 ranks x batch B train exactly like 1 process x batch 2B (SGD, no shuffling), with and without accumulation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from zae_mpu_testkit import DDPTrainer, make_mlp

from zae_engine.testing import SeparableTrainer, assert_same_weights, make_dataset

B = 8


def train(trainer_cls, device, batch_size: int, **options) -> tuple[dict, dict, list]:
    model = make_mlp(seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = trainer_cls(model, device, "train", optimizer, log_bar=False, **options)
    trainer.run(2, DataLoader(make_dataset(128), batch_size=batch_size, shuffle=False))
    return model.state_dict(), optimizer.state_dict(), trainer.history


@pytest.fixture(scope="module")
def reference():
    return train(SeparableTrainer, "cpu", 2 * B)


@pytest.mark.parametrize(("batch_size", "accumulate"), [(B, 1), (B // 2, 2)], ids=["plain", "accumulated"])
def test_two_ranks_match_one_process_with_twice_the_batch(reference, batch_size, accumulate):
    weights, optim_state, history = train(
        DDPTrainer, ["cpu", "cpu"], batch_size, grad_accum_steps=accumulate, threads_per_worker=1
    )
    ref_weights, ref_optim, ref_history = reference
    assert_same_weights(weights, ref_weights, atol=1e-6, rtol=1e-5)
    for index, state in ref_optim["state"].items():  # the momentum buffers came back to the user's optimizer
        torch.testing.assert_close(optim_state["state"][index]["momentum_buffer"], state["momentum_buffer"])
    assert [h["step"] for h in history] == [h["step"] for h in ref_history] == [8, 16]
    for mine, theirs in zip(history, ref_history):  # epoch means are reduced over the ranks
        assert mine["train/loss"] == pytest.approx(theirs["train/loss"], rel=1e-5)


def test_a_seeded_run_repeats_exactly_even_with_dropout_and_shuffling():
    def seeded_run():
        torch.manual_seed(11)
        model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Dropout(0.5), torch.nn.Linear(32, 2))
        trainer = DDPTrainer(
            model,
            ["cpu", "cpu"],
            "train",
            torch.optim.SGD(model.parameters(), lr=0.1),
            log_bar=False,
            threads_per_worker=1,
        )
        trainer.run(2, DataLoader(make_dataset(128), batch_size=8, shuffle=True))
        return model.state_dict(), trainer.history

    (first, first_history), (second, second_history) = seeded_run(), seeded_run()
    assert first_history == second_history
    assert_same_weights(second, first)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_with_nccl_match_one_process(reference):
    weights, _, _ = train(DDPTrainer, ["cuda:0", "cuda:1"], B)
    assert_same_weights({k: v.cpu() for k, v in weights.items()}, reference[0], atol=1e-5, rtol=1e-4)
