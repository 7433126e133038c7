"""Mixed precision on CPU: autocast really computes in the chosen dtype, fp16 scales losses, clipping sees true grads."""

from __future__ import annotations

import pytest
import torch
from features_testing import batches
from torch import nn

from zae_engine.testing import SeparableTrainer, make_model, make_trainer


def record_linear_dtypes(model: nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_matmuls_run_in_the_precision_asked_for_while_weights_stay_fp32(precision, dtype):
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
    seen = record_linear_dtypes(model)
    trainer = make_trainer(model=model, precision=precision)
    data = batches(32, 8)
    trainer.run(1, data, valid_loader=data[:1])

    assert len(seen) == 2 * (4 + 1)  # two Linear layers, 4 training batches + 1 validation batch
    assert set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())  # zeroed after the last step
    assert torch.isfinite(torch.tensor(trainer.history[0]["train/loss"]))


def test_inference_uses_the_same_autocast():
    model = make_model()
    seen = record_linear_dtypes(model)
    trainer = make_trainer(model=model, precision="bf16")
    trainer.inference(batches(16, 8))
    assert seen == [torch.bfloat16, torch.bfloat16]


def test_fp16_uses_a_grad_scaler_whose_state_round_trips_through_the_trainer_state():
    trainer = make_trainer(precision="fp16")
    trainer.run(1, batches(48, 8))  # 6 optimizer steps without overflow: the growth tracker counts them
    scaler_state = trainer.state_dict()["scaler"]
    assert scaler_state["scale"] == 2.0**16
    assert scaler_state["_growth_tracker"] == 6

    fresh = make_trainer(precision="fp16")
    assert fresh.state_dict()["scaler"]["_growth_tracker"] == 0
    fresh.load_state_dict(trainer.state_dict())
    assert fresh.state_dict()["scaler"] == scaler_state
    assert make_trainer(precision="bf16").state_dict()["scaler"] is None  # only fp16 needs a scaler


def test_fp16_scaler_skips_a_step_with_overflowing_gradients_and_lowers_its_scale():
    class Overflow(SeparableTrainer):
        def train_step(self, batch):
            x, y = batch
            loss = nn.functional.cross_entropy(self.model(x), y)
            return {"loss": loss * 1e35 if self.progress_checker.get_step() == 1 else loss}

    trainer = make_trainer(trainer_cls=Overflow, precision="fp16", nan_policy="off")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run_batch(batches(8, 8)[0])  # scaled grads overflow: the scaler refuses the step
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.state_dict()["scaler"]["scale"] == 2.0**15


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_clipping_bounds_the_true_gradient_even_when_the_loss_is_scaled(precision):
    clip = 1e-3
    trainer = make_trainer(lr=1.0, gradient_clip=clip, precision=precision)
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.run_batch(batches(8, 8)[0])  # one plain SGD step with lr=1: the update is minus the clipped gradient
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    # clipping the scaled fp16 gradient would give clip / 65536; not clipping would give the full norm (~0.5)
    assert (after - before).norm().item() == pytest.approx(clip, rel=1e-3)
