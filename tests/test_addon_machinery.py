"""Add-on composition: configs, conflicts, hooks, legacy apply(), pickling, rank-0 helper."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from pydantic import Field
from torch import nn
from zae_testing import SeparableTrainer

from zae_engine.distributed import get_rank, get_world_size, is_rank_zero, rank_zero_only
from zae_engine.errors import CompositionError, ConfigError
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import AddOnBase, AddOnConfig


class Base(SeparableTrainer, Trainer):
    pass


class RecorderConfig(AddOnConfig):
    tag: str = Field("r", description="label for the calls")
    every: int = Field(1, ge=1, description="unused")


class Recorder(AddOnBase):
    name = "recorder"
    description = "Records hook calls."
    Config = RecorderConfig
    trainer_methods = ("recorded",)

    def __init__(self, trainer, config):
        super().__init__(trainer, config)
        self.calls: list[tuple[str, Any]] = []

    def on_run_start(self):
        self.calls.append(("run_start", None))

    def on_epoch_start(self, epoch):
        self.calls.append(("epoch_start", epoch))

    def on_optimizer_step(self):
        self.calls.append(("optimizer_step", self.trainer.progress_checker.get_step()))

    def on_log(self, metrics):
        self.calls.append(("log", sorted(metrics)))

    def on_epoch_end(self, epoch, summary):
        self.calls.append(("epoch_end", epoch))

    def on_run_end(self, error):
        self.calls.append(("run_end", type(error).__name__ if error else None))

    def recorded(self):
        """The hook calls so far."""
        return [name for name, _ in self.calls]


class Quiet(AddOnBase):
    name = "quiet"
    description = "Implements nothing."


class Sharing(AddOnBase):
    name = "sharing"
    description = "Declares the recorder's keyword with another meaning."

    class Config(AddOnConfig):
        tag: int = 3


class SharingSame(AddOnBase):
    name = "sharing_same"
    description = "Declares the recorder's keyword with the same meaning."

    class Config(AddOnConfig):
        tag: str = Field("r", description="label")


class Hater(AddOnBase):
    name = "hater"
    description = "Refuses to live beside the recorder."
    conflicts = ("recorder",)


def make(cls, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    return cls(model, "cpu", "train", torch.optim.SGD(model.parameters(), lr=0.1), None, log_bar=False, **kwargs)


def test_hooks_fire_in_order_and_lent_methods_work(loader):
    trainer = make(Base.add_on(Recorder), log_interval=4, tag="x")
    trainer.run(2, loader)
    names = trainer.recorded()
    assert names[0] == "run_start" and names[-1] == "run_end"
    assert names.count("epoch_start") == names.count("epoch_end") == 2
    assert names.count("optimizer_step") == 2 * len(loader)
    assert names.count("log") == 2 * len(loader) // 4
    logged = [args for name, args in trainer.addon("recorder").calls if name == "log"][0]
    assert logged == ["lr/group0", "train/loss"]
    assert trainer.addon("recorder").config.tag == "x"


def test_only_overridden_hooks_are_registered():
    trainer = make(Base.add_on(Quiet))
    assert all(len(hooks) == 0 for hooks in trainer._hooks.values())


def test_run_end_sees_the_error(loader):
    class Boom(Base):
        def train_step(self, batch):
            raise RuntimeError("boom")

    trainer = make(Boom.add_on(Recorder))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run(1, loader)
    assert trainer.addon("recorder").calls[-1] == ("run_end", "RuntimeError")


def test_composed_classes_subclass_and_compose_again(loader):
    class Mine(Base.add_on(Recorder)):
        pass

    Again = Mine.add_on(Quiet)
    assert issubclass(Again, Mine)
    trainer = make(Again)
    assert list(trainer.addons) == ["recorder", "quiet"]
    assert Base.add_on(Recorder) is Base.add_on(Recorder)  # deterministic, cached


def test_addon_keyword_errors_name_addon_and_field():
    with pytest.raises(ConfigError, match=r"add-on 'recorder': 'every': Input should be greater than or equal to 1"):
        make(Base.add_on(Recorder), every=0)
    with pytest.raises(ConfigError, match=r"add-on 'recorder': 'tag': Input should be a valid string"):
        make(Base.add_on(Recorder), tag=5)
    with pytest.raises(ConfigError, match=r"unknown keyword 'tga' \(did you mean 'tag'\?\)"):
        make(Base.add_on(Recorder), tga="x")


def test_conflicts_are_refused_when_the_class_is_made():
    with pytest.raises(CompositionError, match="cannot be combined"):
        Base.add_on(Recorder, Hater)
    with pytest.raises(CompositionError, match="already on this trainer"):
        Base.add_on(Recorder).add_on(Recorder)
    with pytest.raises(CompositionError, match="both take keyword 'tag' but with different meanings"):
        Base.add_on(Recorder, Sharing)
    with pytest.raises(CompositionError, match="not an add-on"):
        Base.add_on(int)


def test_shared_keyword_with_the_same_meaning_is_allowed():
    trainer = make(Base.add_on(Recorder, SharingSame), tag="both")
    assert trainer.addon("recorder").config.tag == trainer.addon("sharing_same").config.tag == "both"


def test_two_launchers_conflict():
    class LauncherA(AddOnBase):
        name = "launcher_a"

        def launch(self, n_epoch, loader, valid_loader):
            return None

    class LauncherB(LauncherA):
        name = "launcher_b"

    with pytest.raises(CompositionError, match="both decide where training runs"):
        Base.add_on(LauncherA, LauncherB)


def test_launch_takes_over_run(loader):
    class Launcher(AddOnBase):
        name = "launcher"

        def launch(self, n_epoch, loader, valid_loader):
            self.trainer.launched_with = n_epoch
            return self.trainer.run_in_process(n_epoch, loader, valid_loader)

    trainer = make(Base.add_on(Launcher))
    trainer.run(1, loader)
    assert trainer.launched_with == 1 and len(trainer.history) == 1


class LegacyAddon:
    """The upstream style: apply(base_cls) returns a subclass."""

    @classmethod
    def apply(cls, base_cls):
        class WithLegacy(base_cls):
            def __init__(self, *args, legacy_flag=False, **kwargs):
                super().__init__(*args, **kwargs)
                self.legacy_flag = legacy_flag

            def run_batch(self, batch):
                self.legacy_batches = getattr(self, "legacy_batches", 0) + 1
                return super().run_batch(batch)

        return WithLegacy


def test_legacy_apply_addons_still_work_beside_new_ones(loader):
    cls = Base.add_on(Recorder, LegacyAddon, Quiet)
    trainer = make(cls, legacy_flag=True)
    trainer.run(1, loader)
    assert trainer.legacy_flag is True
    assert trainer.legacy_batches == len(loader)
    assert set(trainer.addons) == {"recorder", "quiet"}


def test_composed_trainers_pickle_for_spawned_workers(loader):
    trainer = make(Base.add_on(Recorder, Quiet))
    trainer.run(1, loader)
    clone = pickle.loads(pickle.dumps(trainer))
    assert type(clone) is type(trainer)
    assert torch.equal(clone.model.weight, trainer.model.weight)
    assert clone.addon("recorder").trainer is clone


def test_rank_zero_helpers_without_torch_distributed():
    assert (get_rank(), get_world_size(), is_rank_zero()) == (0, 1, True)
    assert rank_zero_only(lambda: 7)() == 7
