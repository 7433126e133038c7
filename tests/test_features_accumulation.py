"""Gradient accumulation: N batches of B make the same SGD step as one batch of N*B, and everything counts steps."""

from __future__ import annotations

import pytest
import torch
from features_testing import Unsized, batches, merged, reference_sgd

from zae_engine.errors import ConfigError
from zae_engine.schedulers import CosineAnnealingScheduler
from zae_engine.testing import assert_same_weights, make_trainer
from zae_engine.trainer.addons import AddOnBase


@pytest.mark.parametrize("sized", [True, False], ids=["len-known", "len-unknown"])
@pytest.mark.parametrize("clip", [0.0, 0.05], ids=["no-clip", "clip"])
def test_accumulating_four_batches_is_one_step_on_their_union_with_the_last_group_partial(sized, clip):
    small = batches(80, 8)  # 10 batches -> groups of 4, 4 and a last partial group of 2
    trainer = make_trainer(grad_accum_steps=4, gradient_clip=clip)
    trainer.run(1, small if sized else Unsized(small))

    expected = reference_sgd([merged(small[0:4]), merged(small[4:8]), merged(small[8:10])], clip=clip)
    assert_same_weights(trainer.model.state_dict(), expected, atol=1e-6, rtol=1e-5)
    assert trainer.progress_checker.get_step() == 4  # 3 optimizer steps done


def test_accumulation_is_not_the_same_as_stepping_every_batch():
    small = batches(80, 8)
    trainer = make_trainer(grad_accum_steps=1)
    trainer.run(1, small)
    grouped = reference_sgd([merged(small[0:4]), merged(small[4:8]), merged(small[8:10])])
    assert not torch.allclose(trainer.model.weight, grouped["weight"], atol=1e-4)  # the test above can fail


class StepCounter(AddOnBase):
    name = "step_counter"

    def __init__(self, config=None, /, **options):
        super().__init__(config, **options)
        self.steps = 0
        self.logged: list[dict] = []

    def on_optimizer_step(self):
        self.steps += 1

    def on_log(self, metrics):
        self.logged.append(metrics)


def test_scheduler_progress_hooks_and_logging_count_optimizer_steps_not_batches():
    trainer = make_trainer(
        StepCounter(),
        grad_accum_steps=4,
        scheduler_step_on_batch=True,
        log_interval=2,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda step: 1.0)
    trainer.scheduler = scheduler
    trainer.run(2, batches(80, 8))  # 2 epochs x ceil(10 / 4) = 6 optimizer steps

    counter = trainer.addon("step_counter")
    assert counter.steps == 6
    assert scheduler.last_epoch == 6
    assert trainer.progress_checker.get_step() == 7
    assert [s["step"] for s in trainer.history] == [3, 6]
    assert len(counter.logged) == 3  # after optimizer steps 1, 3 and 5
    assert len(trainer.log_train["loss"]) == 10  # the per-batch log still holds every batch


def test_scheduler_budget_is_checked_in_optimizer_steps():
    trainer = make_trainer(grad_accum_steps=4, scheduler_step_on_batch=True)
    trainer.scheduler = CosineAnnealingScheduler(trainer.optimizer, total_iters=5)
    with pytest.raises(ConfigError, match="needs 6 more steps"):
        trainer.run(2, batches(80, 8))
    trainer.scheduler = CosineAnnealingScheduler(trainer.optimizer, total_iters=6)
    trainer.run(2, batches(80, 8))
    assert trainer.scheduler.last_epoch == 6
