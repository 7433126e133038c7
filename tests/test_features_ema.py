"""EMA of weights: equals a hand-computed average, validates with it on request, and lives in the trainer state."""

from __future__ import annotations

import json

import pytest
import torch
from features_testing import batches
from torch import nn

from zae_engine.errors import CheckpointError, ConfigError
from zae_engine.testing import SeparableTrainer, make_trainer
from zae_engine.trainer.addons import AddOnBase, EMAAddon


class WeightRecorder(AddOnBase):
    """Copies the live weights after every optimizer step and after every epoch."""

    name = "weight_recorder"

    def __init__(self, **options):
        super().__init__(**options)
        self.initial = None
        self.after_step: list[dict[str, torch.Tensor]] = []

    def on_run_start(self):
        self.initial = _copy(self.trainer.model.state_dict())

    def on_optimizer_step(self):
        self.after_step.append(_copy(self.trainer.model.state_dict()))


def _copy(state):
    return {k: v.detach().clone() for k, v in state.items()}


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def ema_trainer(**kwargs):
    return make_trainer(trainer_cls=SeparableTrainer.add_on(WeightRecorder, EMAAddon), model=small_net(), **kwargs)


@pytest.mark.parametrize("update_every", [1, 3])
def test_ema_equals_the_hand_computed_average_of_the_weights_after_each_step(update_every):
    decay = 0.8
    trainer = ema_trainer(decay=decay, update_every=update_every)
    trainer.run(2, batches(80, 8))  # 20 optimizer steps

    recorder, ema = trainer.addon("weight_recorder"), trainer.addon("ema")
    expected = _copy(recorder.initial)
    for step, weights in enumerate(recorder.after_step, start=1):
        if step % update_every == 0:
            for key, value in weights.items():
                if value.is_floating_point():
                    expected[key] = decay * expected[key] + (1 - decay) * value
                else:
                    expected[key] = value.clone()  # BatchNorm's num_batches_tracked is copied, not averaged
    assert ema.updates == 20 // update_every
    for key in expected:
        torch.testing.assert_close(ema.weights[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    assert int(ema.weights["1.num_batches_tracked"]) == 20 // update_every * update_every
    assert not torch.allclose(ema.weights["0.weight"], trainer.model[0].weight)  # the average lags the live weights


def validation_loss(weights: dict, data) -> float:
    model = small_net()
    model.load_state_dict(weights)
    model.eval()
    with torch.no_grad():
        return float(torch.stack([nn.functional.cross_entropy(model(x), y) for x, y in data]).mean())


@pytest.mark.parametrize("evaluate_with_ema", [True, False])
def test_validation_runs_on_the_ema_weights_when_asked_and_the_live_weights_come_back(evaluate_with_ema):
    trainer = ema_trainer(decay=0.9, evaluate_with_ema=evaluate_with_ema)
    train, valid = batches(64, 8), batches(32, 16, seed=1)
    trainer.run(1, train, valid_loader=valid)

    ema, live = trainer.addon("ema").weights, trainer.addon("weight_recorder").after_step[-1]
    expected = validation_loss(ema if evaluate_with_ema else live, valid)
    assert trainer.history[0]["valid/loss"] == pytest.approx(expected, rel=1e-5)
    for key, value in trainer.model.state_dict().items():  # training goes on with the live weights
        assert torch.equal(value, live[key]), key
    best = trainer._best_weights
    assert all(torch.equal(best[k], (ema if evaluate_with_ema else live)[k]) for k in best)


def test_live_weights_come_back_when_validation_fails():
    class BrokenValidation(SeparableTrainer):
        def test_step(self, batch):
            raise RuntimeError("validation broke")

    cls = BrokenValidation.add_on(WeightRecorder, EMAAddon)
    trainer = make_trainer(trainer_cls=cls, model=small_net(), decay=0.5, evaluate_with_ema=True)
    with pytest.raises(RuntimeError, match="validation broke"):
        trainer.run(1, batches(32, 8), valid_loader=batches(16, 8))
    live = trainer.addon("weight_recorder").after_step[-1]
    assert all(torch.equal(v, live[k]) for k, v in trainer.model.state_dict().items())


def test_ema_state_round_trips_through_the_trainer_state_as_tensors_and_plain_values():
    trainer = ema_trainer(decay=0.9)
    trainer.run(1, batches(32, 8))
    state = trainer.state_dict()["addons"]["ema"]
    assert json.dumps({k: v for k, v in state.items() if k != "weights"}) == '{"decay": 0.9, "updates": 4}'
    assert all(isinstance(v, torch.Tensor) for v in state["weights"].values())

    resumed = ema_trainer(decay=0.9)
    resumed.load_state_dict(trainer.state_dict())
    ema = resumed.addon("ema")
    assert ema.updates == 4
    assert all(torch.equal(ema.weights[k], v) for k, v in state["weights"].items())
    resumed.run(1, batches(32, 8))  # continues from the loaded average, not from the weights
    assert ema.updates == 8


def test_ema_weights_of_another_model_are_refused_with_the_keys():
    trainer = ema_trainer()
    other = make_trainer(trainer_cls=SeparableTrainer.add_on(EMAAddon))  # a plain Linear: other keys
    other.run(1, batches(16, 8))
    with pytest.raises(CheckpointError, match="EMA weights do not fit the model"):
        trainer.load_state_dict({**trainer.state_dict(), "addons": {"ema": other.state_dict()["addons"]["ema"]}})
    wide_model = torch.nn.Linear(10, 3)  # same keys, other shapes
    wide = make_trainer(trainer_cls=SeparableTrainer.add_on(EMAAddon), model=wide_model)
    with pytest.raises(CheckpointError, match=r"other shape: \['bias', 'weight'\]"):
        wide.addon("ema").load_state_dict(other.state_dict()["addons"]["ema"])


def test_copy_to_model_and_swapped_in():
    trainer = ema_trainer(decay=0.5)
    trainer.run(1, batches(32, 8))
    ema = trainer.addon("ema")
    live = _copy(trainer.model.state_dict())
    with ema.swapped_in():
        assert torch.equal(trainer.model[0].weight, ema.weights["0.weight"])
    assert torch.equal(trainer.model[0].weight, live["0.weight"])
    ema.copy_to_model()
    assert torch.equal(trainer.model[0].weight, ema.weights["0.weight"])


@pytest.mark.parametrize(("kwargs", "field"), [({"decay": 1.0}, "decay"), ({"update_every": 0}, "update_every")])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"add-on 'ema': '{field}'"):
        ema_trainer(**kwargs)
