"""Code written against upstream zae-engine 0.7's behaviour works here: writable per-epoch logs, inference results on
the CPU, upstream's add-on module path and PrecisionMixerAddon (issue 14). Tracker key aliases are tested with the
real clients in the plugins' tests."""

from __future__ import annotations

import pytest
import torch

from zae_engine.errors import CompositionError, ConfigError
from zae_engine.testing import SeparableTrainer, make_loader, make_model, make_trainer
from zae_engine.trainer.addons import PrecisionMixerAddon


class WritesItsOwnLogs(SeparableTrainer):
    """The upstream habit: collect things in log_train/log_test during the steps, use them at epoch end."""

    seen: list[dict] = []

    def train_step(self, batch):
        result = super().train_step(batch)
        self.log_train["batch_sizes"].append(len(batch[0]))  # a key the loop does not record
        return result

    def test_step(self, batch):
        result = super().test_step(batch)
        self.log_test["output"].append(self.model(batch[0]).argmax(1))
        return result

    def metric_on_epoch_end(self):
        if self.mode == "train":
            self.log_train["acc"] = [0.5, 0.75]  # assigned whole, upstream style
            WritesItsOwnLogs.seen.append(
                {"sizes": list(self.log_train["batch_sizes"]), "losses": len(self.log_train["loss"])}
            )
            return {"mean_acc": sum(self.log_train["acc"]) / 2}
        outputs = torch.cat(self.log_test["output"])
        return {"positives": float(outputs.float().mean())}


def test_what_a_user_writes_to_log_train_and_log_test_stays_and_reaches_metric_on_epoch_end():
    WritesItsOwnLogs.seen = []
    trainer = make_trainer(trainer_cls=WritesItsOwnLogs)
    trainer.run(2, make_loader(n=64, batch_size=16), valid_loader=make_loader(n=48, batch_size=16, seed=1))
    assert WritesItsOwnLogs.seen == [{"sizes": [16] * 4, "losses": 4}] * 2  # cleared when the next epoch starts
    assert [h["train/mean_acc"] for h in trainer.history] == [0.625, 0.625]
    assert all(0.0 <= h["valid/positives"] <= 1.0 for h in trainer.history)
    assert len(trainer.log_test["output"]) == 3 and "acc" in trainer.log_test  # the last validation epoch's
    assert trainer.log_test.get("nothing") is None and "nothing" not in trainer.log_test  # reading does not create


def test_recorded_keys_read_as_values_and_a_user_key_shadows_them():
    trainer = make_trainer()
    trainer.run(1, make_loader(n=32, batch_size=16))
    assert len(trainer.log_train["loss"]) == 2 and all(isinstance(v, float) for v in trainer.log_train["loss"])
    trainer.log_train["loss"] = ["mine"]
    assert trainer.log_train["loss"] == ["mine"] and list(trainer.log_train) == ["loss"]
    del trainer.log_train["loss"]
    assert len(trainer.log_train["loss"]) == 2  # the recorded values show again


def test_inference_returns_detached_cpu_results_records_them_and_restores_the_mode():
    class Outputs(SeparableTrainer):
        def test_step(self, batch):
            return {"output": self.model(batch[0]), "loss": torch.tensor(0.0)}

    trainer = make_trainer(trainer_cls=Outputs)
    outputs = trainer.inference(make_loader(n=48, batch_size=16))
    assert len(outputs) == 3 and all(o.device.type == "cpu" and not o.requires_grad for o in outputs)
    assert len(trainer.log_test["output"]) == 3 and torch.equal(trainer.log_test["output"][0], outputs[0])
    assert trainer.mode == "train"


def test_inference_restores_the_mode_when_a_step_fails():
    class Breaks(SeparableTrainer):
        def test_step(self, batch):
            raise RuntimeError("broken step")

    trainer = make_trainer(trainer_cls=Breaks)
    with pytest.raises(RuntimeError, match="broken step"):
        trainer.inference(make_loader())
    assert trainer.mode == "train" and trainer.config.mode == "train"


def test_upstream_module_path_of_the_addon_base():
    from zae_engine.trainer.addons import base, core

    assert core.AddOnBase is base.AddOnBase


def test_precision_mixer_sets_the_trainers_precision_from_upstreams_forms():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    auto = SeparableTrainer.add_on(PrecisionMixerAddon)(model, "cpu", "train", optimizer, precision="auto")
    assert auto.precision == "fp32"  # on the CPU, 'auto' keeps full precision
    listed = make_trainer(PrecisionMixerAddon(precision=["fp16", "bf16"]))
    assert listed.precision == "bf16" and listed.addon("precision_mixer").chosen == "bf16"  # the first the CPU runs
    listed.run(1, make_loader())  # and it trains under bf16 autocast
    assert listed._precision.context().fast_dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="precision 'fp8' is not 'auto', one of fp32, bf16, fp16"):
        make_trainer(PrecisionMixerAddon(precision="fp8"))
    with pytest.raises(ConfigError, match=r"none of \['fp16'\] runs on cpu"):
        make_trainer(PrecisionMixerAddon(precision=["fp16"]))
    with pytest.raises(ConfigError, match="use one of the two"):
        make_trainer(PrecisionMixerAddon(), precision="bf16")


def test_only_a_declared_addon_may_take_a_trainer_option_flat():
    from zae_engine.trainer.addons import AddOnBase, AddOnConfig

    class Greedy(AddOnBase):
        name = "greedy"

        class Config(AddOnConfig):
            gradient_clip: float = 1.0

    with pytest.raises(CompositionError, match=r"claims the Trainer's own keyword\(s\) \['gradient_clip'\]"):
        SeparableTrainer.add_on(Greedy)
