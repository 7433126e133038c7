"""The seed API on CPU: subclass, add-ons, run with validation, logs, best weights, inference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.errors import ConfigError, StepResultError
from zae_engine.schedulers import CosineAnnealingScheduler
from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer import ProgressChecker, Trainer
from zae_engine.trainer.addons import StateManagerAddon


class CPUTrainer(SeparableTrainer, Trainer):
    pass


class DictBatchTrainer(Trainer):
    """The seeds' dict batches: {'x': ..., 'y': ...}."""

    def train_step(self, batch):
        return {"loss": nn.functional.cross_entropy(self.model(batch["x"]), batch["y"])}

    def test_step(self, batch):
        logits = self.model(batch["x"])
        return {"loss": nn.functional.cross_entropy(logits, batch["y"]), "output": logits}


def dict_loader(n=256, batch_size=32):
    data = make_dataset(n)
    items = [{"x": x, "y": y, "name": f"s{i}"} for i, (x, y) in enumerate(data)]
    return DataLoader(items, batch_size=batch_size)


def make(cls=CPUTrainer, lr=0.05, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    kwargs.setdefault("log_bar", False)
    return cls(
        model,
        kwargs.pop("device", "cpu"),
        kwargs.pop("mode", "train"),
        optimizer,
        kwargs.pop("scheduler", None),
        **kwargs,
    )


def test_seed_basic_usage_learns_separable_problem(tmp_path):
    """The seeds' example shape: Trainer.add_on(...), a scheduler, run(n_epoch, loader, valid_loader)."""
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scheduler = CosineAnnealingScheduler(optimizer=optimizer, total_iters=100)
    MyTrainer = DictBatchTrainer.add_on(StateManagerAddon)
    trainer = MyTrainer(
        model=model,
        device="cpu",
        mode="train",
        optimizer=optimizer,
        scheduler=scheduler,
        log_bar=False,
        save_path=str(tmp_path / "ckpt"),
    )
    trainer.run(n_epoch=6, loader=dict_loader(), valid_loader=dict_loader(128))
    first, last = trainer.history[0], trainer.history[-1]
    assert last["valid/loss"] < first["valid/loss"] * 0.7
    outputs = trainer.inference(dict_loader(128))
    accuracy = torch.cat([o.argmax(1) for o in outputs]).eq(make_dataset(128).tensors[1]).float()
    assert accuracy.mean() > 0.9
    assert trainer.progress_checker.get_epoch() == 7
    assert trainer.mode == "train"


def test_tuple_and_nested_batches_reach_the_device_non_tensors_pass_through():
    seen = {}

    class Spy(CPUTrainer):
        def train_step(self, batch):
            seen["batch"] = batch
            x, (y, _meta) = batch["pair"][0], batch["pair"][1]
            return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    data = make_dataset(64)
    batches = [
        {"pair": (data.tensors[0][i : i + 16], (data.tensors[1][i : i + 16], "meta")), "id": i}
        for i in range(0, 64, 16)
    ]
    trainer = make(Spy)
    trainer.run(1, batches)
    batch = seen["batch"]
    assert batch["pair"][0].device.type == "cpu" and batch["pair"][1][1] == "meta" and batch["id"] == 48


def test_logs_hold_this_epochs_steps_and_summary_means(loader):
    trainer = make()
    trainer.run(2, loader, loader)
    assert len(trainer.log_train["loss"]) == len(loader)  # cleared each epoch, not accumulated
    assert len(trainer.log_test["acc"]) == len(loader)
    summary = trainer.history[-1]
    assert summary["train/loss"] == pytest.approx(sum(trainer.log_train["loss"]) / len(loader), rel=1e-5)
    assert summary["valid/acc"] == pytest.approx(sum(trainer.log_test["acc"]) / len(loader), rel=1e-5)
    assert summary["lr/group0"] == pytest.approx(0.05)
    assert summary["step"] == 2 * len(loader)


def test_metric_on_epoch_end_is_merged_into_the_summary(loader):
    class WithMetric(CPUTrainer):
        def metric_on_epoch_end(self):
            log = self.log_train if self.mode == "train" else self.log_test
            return {"n_steps": len(log["loss"])}

    trainer = make(WithMetric)
    trainer.run(1, loader, loader)
    assert trainer.history[0]["train/n_steps"] == len(loader)
    assert trainer.history[0]["valid/n_steps"] == len(loader)


def test_best_weights_follow_validation_loss_and_apply_weights_restores_them(loader):
    trainer = make(lr=0.5)
    trainer.run(4, loader, loader)
    best_epoch = trainer.best["epoch"]
    assert trainer.best["metric"] == "valid/loss"
    assert trainer.best["value"] == min(h["valid/loss"] for h in trainer.history)
    assert trainer.history[best_epoch - 1]["valid/loss"] == trainer.best["value"]
    with torch.no_grad():
        trainer.model.weight.add_(100.0)
    trainer.apply_weights()
    trainer.toggle("test")
    trainer.run(1, loader)
    assert trainer.history[-1]["test/loss"] == pytest.approx(trainer.best["value"], rel=1e-5)


def test_best_tracking_uses_training_loss_without_validation(loader):
    trainer = make()
    trainer.run(2, loader)
    assert trainer.best["metric"] == "train/loss"


def test_apply_weights_without_a_run_is_a_clear_error():
    with pytest.raises(ConfigError, match="no best weights yet"):
        make().apply_weights()


def test_save_model_and_apply_weights_round_trip_both_formats(tmp_path, loader):
    trainer = make()
    trainer.run(1, loader)
    for name in ("weights.safetensors", "weights.pth"):
        trainer.save_model(str(tmp_path / name))
        other = make(lr=0.0)
        other.apply_weights(str(tmp_path / name))
        assert torch.equal(other.model.weight, trainer.model.weight)


def test_test_mode_runs_without_optimizer_and_does_not_change_weights(loader):
    model = nn.Linear(10, 2)
    before = model.weight.clone()
    trainer = CPUTrainer(model, "cpu", "test", None, None, log_bar=False)
    trainer.run(1, loader)
    assert torch.equal(model.weight, before)
    assert "test/loss" in trainer.history[0]
    assert trainer.progress_checker.get_epoch() == 1


def test_gradient_clipping_bounds_the_update(loader):
    class Huge(CPUTrainer):
        def train_step(self, batch):
            return {"loss": super().train_step(batch)["loss"] * 1e6}

    clipped = make(Huge, lr=1.0, gradient_clip=0.01)
    before = clipped.model.weight.detach().clone()
    clipped.run_batch(next(iter(loader)))
    delta = torch.cat([(clipped.model.weight - before).flatten()])
    assert delta.norm() <= 0.01 + 1e-6


@pytest.mark.parametrize("on_batch", [False, True])
def test_scheduler_steps_per_epoch_or_per_batch(loader, on_batch):
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = CosineAnnealingScheduler(optimizer, total_iters=100)
    trainer = CPUTrainer(model, "cpu", "train", optimizer, scheduler, log_bar=False, scheduler_step_on_batch=on_batch)
    trainer.run(2, loader)
    assert scheduler.last_epoch == (2 * len(loader) if on_batch else 2)


def test_scheduler_too_short_is_refused_before_training(loader):
    model = nn.Linear(10, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = CosineAnnealingScheduler(optimizer, total_iters=10)
    trainer = CPUTrainer(model, "cpu", "train", optimizer, scheduler, log_bar=False, scheduler_step_on_batch=True)
    before = model.weight.clone()
    with pytest.raises(ConfigError, match=r"total_iters=10\) is too short.*needs 16 more steps"):
        trainer.run(2, loader)
    assert torch.equal(model.weight, before)


def test_missing_loss_names_the_method(loader):
    class NoLoss(CPUTrainer):
        def train_step(self, batch):
            return {"los": torch.tensor(1.0)}

    with pytest.raises(StepResultError, match=r"NoLoss.train_step must return a dict holding 'loss'.*\['los'\]"):
        make(NoLoss).run(1, loader)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "training"}, "'mode': Input should be 'train' or 'test'"),
        ({"gradient_clip": -1.0}, "'gradient_clip': Input should be greater than or equal to 0"),
        ({"log_bar": "yes"}, "'log_bar': Input should be a valid boolean"),
        ({"device": "gpu"}, "'device' 'gpu' is not a device"),
        ({"device": "cuda:0"}, "asks for CUDA, which this machine lacks"),
        ({"device": ["cpu", "cpu"]}, "no add-on runs several processes"),
        ({"grad_clip": 1.0}, "unknown keyword 'grad_clip' \\(did you mean 'gradient_clip'\\?\\)"),
        ({"save_path": "x"}, "unknown keyword 'save_path'.*Trainer.add_on"),
    ],
)
def test_bad_trainer_arguments_name_the_field(kwargs, message):
    if "cuda" in str(kwargs.get("device")) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=message):
        make(**kwargs)


def test_train_mode_without_optimizer_is_refused():
    with pytest.raises(ConfigError, match="mode='train' needs an optimizer"):
        CPUTrainer(nn.Linear(2, 2), "cpu", "train", None, None)


def test_devices_accept_torch_device_and_single_item_lists(loader):
    for device in (torch.device("cpu"), ["cpu"], [torch.device("cpu")]):
        trainer = make(device=device)
        assert trainer.device == torch.device("cpu")


def test_toggle_and_bad_toggle():
    trainer = make()
    trainer.toggle()
    assert trainer.mode == "test"
    trainer.toggle("train")
    assert trainer.mode == "train"
    with pytest.raises(ConfigError):
        trainer.toggle("eval")


def test_progress_checker_counts_and_round_trips():
    checker = ProgressChecker()
    assert (checker.get_epoch(), checker.get_step()) == (1, 1)
    checker.update_step()
    checker.update_step()
    checker.update_epoch()
    state = checker.state_dict()
    other = ProgressChecker()
    other.load_state_dict(state)
    assert (other.get_epoch(), other.get_step()) == (2, 3)
    with pytest.raises(ValueError):
        other.load_state_dict({"epoch": 0, "step": 1})
    checker.init_state()
    assert checker.state_dict() == {"epoch": 1, "step": 1}


def test_nan_loss_stops_the_run_naming_epoch_and_batch(loader):
    class Diverges(CPUTrainer):
        def train_step(self, batch):
            loss = super().train_step(batch)["loss"]
            if self.progress_checker.get_step() == 5:
                loss = loss * math.nan
            return {"loss": loss}

    with pytest.raises(Exception, match="non-finite loss at epoch 1, batch 5"):
        make(Diverges).run(1, loader)


def test_log_bar_false_prints_one_line_per_epoch(loader, capsys):
    make().run(3, loader)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/3") and "train/loss" in lines[0]


def test_progress_bar_shows_epochs_and_summaries(loader, capsys):
    make(log_bar=True).run(2, loader, loader)
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "valid/loss" in out and "epochs" in out


def test_a_failing_validation_start_leaves_the_trainer_in_train_mode():
    from zae_engine.testing import make_loader, make_trainer
    from zae_engine.trainer.addons import AddOnBase

    class BreaksValidation(AddOnBase):
        name = "breaks_validation"
        armed = True

        def on_validation_start(self):
            if self.armed:
                raise RuntimeError("validation could not start")

    addon = BreaksValidation()
    trainer = make_trainer(addon)
    with pytest.raises(RuntimeError, match="could not start"):
        trainer.run(1, make_loader(), valid_loader=make_loader())
    assert trainer.mode == "train"
    addon.armed = False
    before = trainer.model.weight.detach().clone()
    trainer.run(1, make_loader(), valid_loader=make_loader())
    assert not torch.equal(before, trainer.model.weight)  # it trained, not only evaluated
    assert "train/loss" in trainer.history[-1] and "valid/loss" in trainer.history[-1]
