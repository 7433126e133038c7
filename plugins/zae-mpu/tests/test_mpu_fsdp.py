"""strategy='fsdp' (FSDP2): 2 gloo ranks x batch B train like 1 process x batch 2B, the user's objects get the result.

Adam, no shuffling, 2 epochs of 8 steps; with accumulation (FSDP skips the reduce-scatter on early micro-batches)
and clipping (a DTensor-aware norm over every rank's shards).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from zae_mpu import MultiGPUAddon
from zae_mpu_testkit import (
    DDPTrainer,
    NaNOnThirdBatchDDPTrainer,
    NaNOnThirdBatchTrainer,
    OverflowingRows,
    ProbedMLP,
    ProbingDDPTrainer,
    ProbingTrainer,
    ScaleAwareDDPTrainer,
    ScaleAwareTrainer,
    make_mlp,
    make_uneven_mlp,
)

from zae_engine.errors import ConfigError
from zae_engine.testing import SeparableTrainer, assert_same_weights, make_dataset
from zae_engine.trainer.addons import EarlyStoppingAddon, EMAAddon
from zae_engine.trainer.strategy import Strategy

B = 8
TWO = ["cpu", "cpu"]


def train(trainer_cls, device, batch_size, model_fn=make_mlp, epochs=2, addons=(), valid=False, **options):
    model = model_fn(seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    if device == TWO:
        options.setdefault("threads_per_worker", 1)
    trainer = trainer_cls(model, device, "train", optimizer, log_bar=False, addons=list(addons), **options)
    valid_loader = DataLoader(make_dataset(64, seed=1), batch_size=16) if valid else None
    trainer.run(epochs, DataLoader(make_dataset(128), batch_size=batch_size, shuffle=False), valid_loader)
    return model, optimizer, trainer


def assert_same_training(got, reference, atol=1e-6, rtol=1e-5):
    (model, optimizer, trainer), (ref_model, ref_optimizer, ref_trainer) = got, reference
    assert_same_weights(model, ref_model, atol=atol, rtol=rtol)
    for index, state in ref_optimizer.state_dict()["state"].items():  # Adam's moments came back whole
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(optimizer.state_dict()["state"][index][key], state[key], atol=atol, rtol=rtol)
    assert [h["step"] for h in trainer.history] == [h["step"] for h in ref_trainer.history]
    for mine, theirs in zip(trainer.history, ref_trainer.history):
        assert mine["train/loss"] == pytest.approx(theirs["train/loss"], rel=1e-5)


def assert_users_objects_back(model, optimizer, trainer, model_cls=nn.Sequential):
    assert type(model) is model_cls  # not FSDP's dynamic subclass: the user's module was never sharded
    assert all(type(p) is nn.Parameter for p in model.parameters())  # plain tensors, no DTensor
    assert [p for g in optimizer.param_groups for p in g["params"]] == list(model.parameters())
    assert type(trainer.strategy) is Strategy


CASES = {
    "plain": (B, {}),
    "accumulated": (B // 2, {"grad_accum_steps": 2}),
    "clipped": (B, {"gradient_clip": 0.05}),
    "accumulated-clipped": (B // 2, {"grad_accum_steps": 2, "gradient_clip": 0.05}),
}


@pytest.fixture(scope="module")
def references():
    return {
        "plain": train(SeparableTrainer, "cpu", 2 * B),
        "clipped": train(SeparableTrainer, "cpu", 2 * B, gradient_clip=0.05),
        "uneven-clipped": train(SeparableTrainer, "cpu", 2 * B, make_uneven_mlp, gradient_clip=0.05),
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES)
def test_fsdp_on_two_ranks_matches_one_process_with_twice_the_batch(references, case):
    batch_size, options = CASES[case]
    got = train(DDPTrainer, TWO, batch_size, strategy="fsdp", **options)
    reference = references["clipped" if "gradient_clip" in options else "plain"]
    assert_same_training(got, reference)
    assert_users_objects_back(*got)


def test_the_clip_binds_in_these_runs(references):
    """Otherwise the clipped cases above would prove nothing about clipping."""
    with pytest.raises(AssertionError):
        assert_same_weights(references["clipped"][0], references["plain"][0], atol=1e-4, rtol=1e-4)


@pytest.mark.timeout(120)
def test_fsdp_with_shards_of_unequal_length(references):
    got = train(DDPTrainer, TWO, B // 2, make_uneven_mlp, strategy="fsdp", grad_accum_steps=2, gradient_clip=0.05)
    assert_same_training(got, references["uneven-clipped"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_activation_checkpointing_recomputes_to_the_same_result(references, strategy):
    got = train(DDPTrainer, TWO, B, strategy=strategy, activation_checkpointing=True)
    assert_same_training(got, references["plain"])
    model = got[0]
    assert "forward" not in model[0].__dict__  # the blocks' own forward again after the run


@pytest.mark.timeout(600)
def test_compile_model_compiles_the_sharded_model(references):
    """torch.compile after the wrapping, as under DDP: compile(fully_shard(model)) trains like the eager one."""
    got = train(DDPTrainer, TWO, B, strategy="fsdp", compile_model=True)
    assert_same_training(got, references["plain"], atol=1e-5, rtol=1e-4)
    assert_users_objects_back(*got)


@pytest.mark.timeout(180)
def test_ema_early_stopping_and_best_weights_work_under_fsdp():
    def addons():
        return [
            EMAAddon(decay=0.9, evaluate_with_ema=True),
            EarlyStoppingAddon(monitor="valid/acc", monitor_mode="max", patience=1),
        ]

    reference = train(SeparableTrainer, "cpu", 2 * B, epochs=8, addons=addons(), valid=True)
    got = train(DDPTrainer, TWO, B, epochs=8, addons=addons(), valid=True, strategy="fsdp")
    assert_same_training(got, reference)
    (_, _, trainer), (_, _, ref_trainer) = got, reference
    assert len(trainer.history) == len(ref_trainer.history) < 8  # early stopping stopped both at the same epoch
    assert trainer.best == pytest.approx(ref_trainer.best)
    ema, ref_ema = trainer.addon("ema"), ref_trainer.addon("ema")
    assert ema.updates == ref_ema.updates
    assert_same_weights(ema.weights, ref_ema.weights, atol=1e-6, rtol=1e-5)  # whole tensors, handed back
    assert_same_weights(trainer._best_weights, ref_trainer._best_weights, atol=1e-6, rtol=1e-5)


@pytest.mark.timeout(180)
def test_a_second_run_shards_again_what_the_first_handed_back():
    """After run() the user's objects are whole; the next run() shards them again, EMA's average included."""

    def two_runs(trainer_cls, device, batch_size, **options):
        model = make_mlp(seed=3)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        ema = EMAAddon(decay=0.9)
        trainer = trainer_cls(model, device, "train", optimizer, log_bar=False, addons=[ema], **options)
        for _ in range(2):
            trainer.run(1, DataLoader(make_dataset(128), batch_size=batch_size, shuffle=False))
        return model, optimizer, trainer

    reference = two_runs(SeparableTrainer, "cpu", 2 * B)
    got = two_runs(DDPTrainer, TWO, B, strategy="fsdp", threads_per_worker=1)
    assert_same_training(got, reference)
    assert_same_weights(got[2].addon("ema").weights, reference[2].addon("ema").weights, atol=1e-6, rtol=1e-5)


@pytest.mark.timeout(120)
def test_a_nan_on_one_rank_skips_the_step_on_every_rank():
    reference = train(NaNOnThirdBatchTrainer, "cpu", 2 * B, nan_policy="skip")
    got = train(NaNOnThirdBatchDDPTrainer, TWO, B, nan_policy="skip", strategy="fsdp")
    assert [h["step"] for h in reference[2].history] == [7, 15]  # the third batch of the run was dropped
    assert_same_training(got, reference)


@pytest.mark.timeout(120)
def test_bf16_precision_gathers_bf16_weights_and_keeps_fp32_masters():
    reference = train(ProbingTrainer, "cpu", 2 * B, ProbedMLP, precision="bf16")
    model, _, trainer = train(ProbingDDPTrainer, TWO, B, ProbedMLP, precision="bf16", strategy="fsdp")
    assert reference[2].history[-1]["train/weight_bits"] == 32  # one process: autocast casts, the weight is fp32
    assert trainer.history[-1]["train/weight_bits"] == 16  # fsdp: the weights were gathered in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the masters stay fp32
    assert_same_weights(model, reference[0], atol=2e-2, rtol=2e-2)


@pytest.mark.timeout(120)
def test_fp16_loss_scaling_skips_an_overflow_in_one_rank_shard_on_every_rank():
    reference = train(ScaleAwareTrainer, "cpu", 2 * B, OverflowingRows, precision="fp16")
    model, _, trainer = train(ScaleAwareDDPTrainer, TWO, B, OverflowingRows, precision="fp16", strategy="fsdp")
    assert reference[2].scaler.get_scale() == 4096.0  # four overflowing steps were skipped, then none
    assert trainer.scaler.get_scale() == 4096.0  # rank 0's shard held no inf, and it skipped all the same
    assert_same_weights(model, reference[0], atol=1e-3, rtol=1e-3)


@pytest.mark.timeout(120)
def test_evaluation_only_run_under_fsdp():
    model = make_mlp(seed=3)
    loader = DataLoader(make_dataset(64), batch_size=16)
    reference = SeparableTrainer(model, "cpu", "test", log_bar=False)
    reference.run(1, loader)
    trainer = DDPTrainer(make_mlp(seed=3), TWO, "test", log_bar=False, strategy="fsdp", threads_per_worker=1)
    trainer.run(1, DataLoader(make_dataset(64), batch_size=8))
    assert trainer.history[0]["test/acc"] == pytest.approx(reference.history[0]["test/acc"])
    assert trainer.history[0]["test/loss"] == pytest.approx(reference.history[0]["test/loss"], rel=1e-5)


# ---------------------------------------------------------------------------------------------- refused up front
@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"strategy": "fsdp", "find_unused_parameters": True}, "find_unused_parameters applies only to strategy='ddp'"),
        ({"strategy": "fsdp", "ddp_options": {"bucket_cap_mb": 1}}, "ddp_options applies only to strategy='ddp'"),
        ({"reshard_after_forward": False}, "reshard_after_forward applies only to strategy='fsdp'"),
        ({"cpu_offload": True}, "cpu_offload applies only to strategy='fsdp'"),
        ({"strategy": "fsdp", "block_classes": []}, "block_classes is empty"),
        ({"strategy": "zero3"}, "strategy"),
    ],
)
def test_options_of_the_other_strategy_are_refused(options, words):
    with pytest.raises(ConfigError, match="mpu") as caught:
        MultiGPUAddon(**options)
    assert words in str(caught.value)


def make_fsdp_trainer(model=None, optimizer=None, **options):
    model = model or make_mlp()
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
    return SeparableTrainer(model, TWO, "train", optimizer, addons=[MultiGPUAddon(strategy="fsdp", **options)])


def test_cpu_offload_without_cuda_is_refused_when_the_trainer_is_made():
    with pytest.raises(ConfigError, match="cpu_offload=True moves FSDP's shards from CUDA devices"):
        make_fsdp_trainer(cpu_offload=True)


def test_a_block_class_the_model_does_not_have_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match="block_classes names 'Lienar'.*did you mean 'Linear'"):
        make_fsdp_trainer(block_classes=["Lienar"])


def test_an_optimizer_over_tensors_outside_the_model_is_refused():
    model = make_mlp()
    temperature = nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([*model.parameters(), temperature], lr=0.1)
    with pytest.raises(ConfigError, match="not parameters of the model"):
        make_fsdp_trainer(model, optimizer)


def test_accumulating_over_a_loader_without_length_is_refused_before_any_worker_starts():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(make_dataset(32))

    model = make_mlp()
    addon = MultiGPUAddon(strategy="fsdp", shard_data=False)
    trainer = SeparableTrainer(
        model, TWO, "train", torch.optim.SGD(model.parameters(), lr=0.1), grad_accum_steps=2, addons=[addon]
    )
    with pytest.raises(ConfigError, match="needs a training loader with a length"):
        trainer.run(1, DataLoader(Stream(), batch_size=8))
