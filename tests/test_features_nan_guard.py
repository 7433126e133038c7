"""The NaN/Inf guard: 'raise' names epoch and batch, 'skip' drops exactly the bad group, 'off' stays out of the way."""

from __future__ import annotations

import math

import pytest
import torch
from features_testing import batches, merged, reference_sgd

from zae_engine.errors import NonFiniteLossError
from zae_engine.testing import SeparableTrainer, assert_same_weights, make_trainer


class PoisonAt(SeparableTrainer):
    """Returns a non-finite loss at one (epoch, batch), both counted from 1."""

    poison: tuple[int, int] = (2, 3)
    value = math.nan

    def train_step(self, batch):
        result = super().train_step(batch)
        epoch = self.progress_checker.get_epoch()
        if (epoch, len(self.log_train.get("loss", [])) + 1) == self.poison:
            result["loss"] = result["loss"] * self.value
        return result


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_raise_names_the_epoch_and_batch_of_the_first_bad_loss(value):
    cls = type("Poison", (PoisonAt,), {"value": value})
    trainer = make_trainer(trainer_cls=cls)
    with pytest.raises(NonFiniteLossError, match=r"train_step returned a non-finite loss at epoch 2, batch 3\b"):
        trainer.run(3, batches(64, 8))
    assert len(trainer.history) == 1  # the first epoch completed, the second never reached its summary


def test_raise_also_guards_validation():
    class BadValidation(SeparableTrainer):
        def test_step(self, batch):
            result = super().test_step(batch)
            result["loss"] = result["loss"] * math.nan
            return result

    with pytest.raises(NonFiniteLossError, match=r"test_step returned a non-finite loss at epoch 1, batch 1\b"):
        make_trainer(trainer_cls=BadValidation).run(1, batches(16, 8), valid_loader=batches(16, 8))


def poisoned_batches(bad: int) -> list:
    """80 samples in 10 batches of 8; one sample of batch `bad` (from 1) holds a NaN feature."""
    data = batches(80, 8)
    x, y = data[bad - 1]
    x = x.clone()
    x[0, 0] = math.nan
    data[bad - 1] = (x, y)
    return data


def test_skip_drops_the_bad_batch_and_trains_exactly_as_if_it_were_absent():
    data = poisoned_batches(bad=3)
    trainer = make_trainer(nan_policy="skip")
    trainer.run(1, data)

    clean = [b for i, b in enumerate(data) if i != 2]
    assert_same_weights(trainer.model.state_dict(), reference_sgd(clean), atol=1e-6, rtol=1e-5)
    assert len(trainer.log_train["loss"]) == 9
    assert math.isfinite(trainer.history[0]["train/loss"])
    assert trainer.progress_checker.get_step() == 10


def test_skip_with_accumulation_drops_the_whole_group_gathered_so_far():
    data = poisoned_batches(bad=4)  # groups of 2: (1,2) steps, 3 then bad 4 are dropped, then (5,6) (7,8) (9,10)
    trainer = make_trainer(nan_policy="skip", grad_accum_steps=2)
    trainer.run(1, data)

    expected = reference_sgd([merged(data[0:2]), merged(data[4:6]), merged(data[6:8]), merged(data[8:10])])
    assert_same_weights(trainer.model.state_dict(), expected, atol=1e-6, rtol=1e-5)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_off_lets_non_finite_losses_through():
    trainer = make_trainer(nan_policy="off")
    trainer.run(1, poisoned_batches(bad=2))
    assert math.isnan(trainer.history[0]["train/loss"])
    assert not torch.isfinite(trainer.model.weight).all()  # what the guard exists to prevent


def test_raise_is_also_checked_at_progress_refreshes_mid_epoch(monkeypatch):
    import zae_engine.trainer.loop as loop

    monkeypatch.setattr(loop, "REFRESH_SECONDS", 0.0)  # refresh after every batch instead of at most twice a second
    trainer = make_trainer(trainer_cls=PoisonAt)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, batch 3\b"):
        trainer.run(2, batches(80, 8))
    assert len(trainer.log_train["loss"]) == 3  # stopped right after the bad batch, not at the end of the epoch
