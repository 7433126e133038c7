"""The add-on contract: configured instances, the seeds' `add_on` front door, checked hooks, phases, teardown,
launchers, upstream-style add-ons, pickling, and a trainer that frees its model without the garbage collector."""

from __future__ import annotations

import gc
import pickle
import warnings
import weakref
from typing import Any

import pytest
import torch
from pydantic import Field
from torch import nn

from zae_engine.distributed import get_rank, get_world_size, is_rank_zero, rank_zero_only
from zae_engine.errors import AddOnWarning, CompositionError, ConfigError
from zae_engine.testing import SeparableTrainer, assert_same_weights, make_loader, make_model, make_trainer
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import (
    AddOnBase,
    AddOnConfig,
    EarlyStoppingAddon,
    LauncherAddon,
    StateManagerAddon,
)


class RecorderConfig(AddOnConfig):
    """Records hook calls."""

    tag: str = Field("r", description="label for the calls")
    every: int = Field(1, ge=1, description="unused")


class Recorder(AddOnBase):
    name = "recorder"
    Config = RecorderConfig
    trainer_methods = ("recorded",)

    def __init__(self, config: RecorderConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
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


class Hater(AddOnBase):
    name = "hater"
    conflicts = ("recorder",)


def make(cls, **kwargs):
    """The seeds' call: positional model, device, mode, optimizer, scheduler, then flat keywords."""
    model = make_model()
    return cls(model, "cpu", "train", torch.optim.SGD(model.parameters(), lr=0.1), None, log_bar=False, **kwargs)


# ---------------------------------------------------------------------- configured instances
def test_each_addon_instance_has_its_own_options_and_both_are_honoured(tmp_path):
    class Scripted(SeparableTrainer):
        """valid/loss keeps falling, valid/acc peaks at epoch 2: the two monitors disagree on purpose."""

        losses = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
        accs = [0.5, 0.9, 0.6, 0.6, 0.6, 0.6]

        def test_step(self, batch):
            epoch = self.progress_checker.get_epoch() - 1
            return {"loss": torch.tensor(self.losses[epoch]), "acc": torch.tensor(self.accs[epoch])}

    checkpoints = StateManagerAddon(save_path=str(tmp_path), monitor="valid/acc", monitor_mode="max", keep_last=0)
    stopper = EarlyStoppingAddon(monitor="valid/loss", monitor_mode="min", patience=2)
    trainer = make_trainer(checkpoints, stopper, trainer_cls=Scripted)
    trainer.run(6, make_loader(), valid_loader=make_loader(seed=1))
    assert len(trainer.history) == 6  # valid/loss improved every epoch: early stopping never fired
    assert stopper.best_epoch == 6 and stopper.config.monitor == "valid/loss"
    assert checkpoints.best_checkpoint.name == "epoch-0002"  # best by valid/acc (max), not by valid/loss
    assert [p.name for p in tmp_path.glob("epoch-*")] == ["epoch-0002"]


def test_options_are_validated_when_the_instance_is_made_and_name_the_addon():
    with pytest.raises(ConfigError, match=r"add-on 'recorder': 'every': Input should be greater than or equal to 1"):
        Recorder(every=0)
    with pytest.raises(
        ConfigError, match=r"add-on 'recorder': unknown option 'tga' \(did you mean 'tag'\?\); options: tag, every"
    ):
        Recorder(tga="x")
    assert Recorder(RecorderConfig(tag="a"), every=3).config == RecorderConfig(tag="a", every=3)


def test_an_instance_belongs_to_one_trainer_and_a_class_is_not_an_instance():
    recorder = Recorder()
    first = make_trainer(recorder)
    with pytest.raises(CompositionError, match="already attached to another trainer"):
        make_trainer(recorder)
    assert recorder.trainer is first
    with pytest.raises(
        CompositionError, match=r"takes add-on instances, got the class Recorder; write Recorder\(...\)"
    ):
        make_trainer(Recorder)
    with pytest.raises(CompositionError, match="is on this trainer twice"):
        make_trainer(Recorder(), Recorder())


def test_the_trainer_alone_holds_its_add_ons_so_del_frees_the_model_without_gc(tmp_path):
    gc.disable()
    try:
        trainer = make_trainer(StateManagerAddon(save_path=str(tmp_path)), EarlyStoppingAddon(), Recorder())
        trainer.run(1, make_loader(), valid_loader=make_loader())
        trainer.save_state()
        model, optimizer = weakref.ref(trainer.model), weakref.ref(trainer.optimizer)
        del trainer
        assert model() is None and optimizer() is None
    finally:
        gc.enable()


def test_lent_methods_keep_their_trainer_alive_while_called(tmp_path):
    make_trainer(StateManagerAddon(save_path=str(tmp_path))).save_state()  # the trainer dies right after
    assert len(list(tmp_path.glob("manual-*"))) == 1


def test_lent_methods_are_per_trainer_and_the_class_reads_attributes_without_getattr(tmp_path):
    with_state = make_trainer(StateManagerAddon(save_path=str(tmp_path)))
    without = make_trainer()
    assert callable(with_state.save_state) and hasattr(without, "save_state") is False
    with pytest.raises(AttributeError, match="save_state"):
        without.save_state()
    # a class with __getattr__ makes CPython look up every `self.x` the slow way, in the training step too
    assert not any("__getattr__" in vars(cls) for cls in type(with_state).__mro__)


# ---------------------------------------------------------------------- the seeds' front door
def test_hooks_fire_in_order_and_lent_methods_work():
    trainer = make(SeparableTrainer.add_on(Recorder), log_interval=4, tag="x")
    loader = make_loader(n=256, batch_size=32)
    trainer.run(2, loader)
    names = trainer.recorded()
    assert names[0] == "run_start" and names[-1] == "run_end"
    assert names.count("epoch_start") == names.count("epoch_end") == 2
    assert names.count("optimizer_step") == 2 * len(loader)
    assert names.count("log") == 2 * len(loader) // 4
    logged = [args for name, args in trainer.addon("recorder").calls if name == "log"][0]
    assert logged == ["lr/group0", "train/loss"]
    assert trainer.addon("recorder").config.tag == "x"


def test_flat_keywords_route_to_every_addon_that_declares_them(tmp_path):
    cls = SeparableTrainer.add_on(StateManagerAddon, EarlyStoppingAddon)
    trainer = make(cls, save_path=str(tmp_path), monitor="valid/acc", monitor_mode="max", patience=2)
    assert trainer.addon("state_manager").config.monitor == "valid/acc"
    assert trainer.addon("early_stopping").config.monitor == "valid/acc"  # shared, as the seeds use it
    assert trainer.addon("early_stopping").config.patience == 2
    with pytest.raises(ConfigError, match=r"unknown keyword 'save_pth' \(did you mean 'save_path'\?\)"):
        make(cls, save_pth="x")


def test_composed_classes_subclass_and_compose_again():
    class Mine(SeparableTrainer.add_on(Recorder)):
        pass

    Again = Mine.add_on(Quiet)
    assert issubclass(Again, Mine)
    trainer = make(Again, tag="y")
    assert list(trainer.addons) == ["recorder", "quiet"] and trainer.addon("recorder").config.tag == "y"
    assert SeparableTrainer.add_on(Recorder) is SeparableTrainer.add_on(Recorder)  # deterministic, cached


def test_a_narrower_user_init_still_gets_its_add_on_keywords(tmp_path):
    class Narrow(SeparableTrainer):
        def __init__(self, model, optimizer):  # takes no **kwargs at all
            super().__init__(model, "cpu", "train", optimizer, None, log_bar=False)

    model = make_model()
    trainer = Narrow.add_on(StateManagerAddon)(
        model, torch.optim.SGD(model.parameters(), lr=0.1), save_path=str(tmp_path)
    )
    trainer.run(1, make_loader())
    assert trainer.addon("state_manager").config.save_path == str(tmp_path)
    assert (tmp_path / "manifest.json").is_file()


def test_conflicts_are_refused_when_the_class_is_made():
    with pytest.raises(CompositionError, match="cannot be combined"):
        SeparableTrainer.add_on(Recorder, Hater)
    with pytest.raises(CompositionError, match="is on this trainer twice"):
        SeparableTrainer.add_on(Recorder).add_on(Recorder)
    with pytest.raises(CompositionError, match="not an add-on"):
        SeparableTrainer.add_on(int)
    with pytest.raises(CompositionError, match="takes add-on classes; pass the instance"):
        SeparableTrainer.add_on(Recorder())


def test_flat_routing_refuses_a_keyword_two_add_ons_mean_differently_but_instances_may_have_it():
    class Sharing(AddOnBase):
        name = "sharing"

        class Config(AddOnConfig):
            tag: int = 3

    with pytest.raises(CompositionError, match="both take keyword 'tag' but with different meanings"):
        SeparableTrainer.add_on(Recorder, Sharing)
    trainer = make_trainer(Recorder(tag="text"), Sharing(tag=5))
    assert trainer.addon("recorder").config.tag == "text" and trainer.addon("sharing").config.tag == 5


def test_composed_and_explicit_add_ons_live_together():
    trainer = make(SeparableTrainer.add_on(Recorder), addons=[Quiet()])
    assert list(trainer.addons) == ["recorder", "quiet"]
    with pytest.raises(CompositionError, match="twice"):
        make(SeparableTrainer.add_on(Recorder), addons=[Recorder()])


# ---------------------------------------------------------------------- the checked hook contract
def test_a_misspelt_hook_is_refused_when_the_class_is_defined():
    with pytest.raises(
        CompositionError, match=r"on_epoch_ends is not an add-on hook \(did you mean 'on_epoch_end'\?\)"
    ):

        class Typo(AddOnBase):
            name = "typo"

            def on_epoch_ends(self, epoch, summary): ...


def test_a_hook_with_the_wrong_signature_is_refused_when_the_class_is_defined():
    with pytest.raises(
        CompositionError, match=r"on_epoch_end\(self, epoch\) cannot be called .* on_epoch_end\(self, epoch, summary\)"
    ):

        class Short(AddOnBase):
            name = "short"

            def on_epoch_end(self, epoch): ...

    class Flexible(AddOnBase):  # anything that accepts the loop's arguments is fine
        name = "flexible"

        def on_epoch_end(self, *args, **kwargs): ...

    with pytest.raises(CompositionError, match="phase is 'later'"):

        class Odd(AddOnBase):
            name = "odd"
            phase = "later"


def test_only_overridden_hooks_are_registered():
    trainer = make_trainer(Quiet())
    assert all(len(getattr(trainer._hooks, hook)) == 0 for hook in type(trainer._hooks).__slots__)


class Order(AddOnBase):
    """Appends its name to a shared list at epoch end and at run end."""

    log: list[str] = []

    def on_epoch_end(self, epoch, summary):
        self.log.append(f"end:{self.name}")

    def on_run_end(self, error):
        self.log.append(f"teardown:{self.name}")


def _ordered(name: str, phase: str) -> type[AddOnBase]:
    return type(name, (Order,), {"name": name, "phase": phase})


def test_phases_order_every_hook_and_teardown_reverses_attach_order_within_a_phase():
    Order.log = []
    report, persist = _ordered("report_a", "report"), _ordered("persist_a", "persist")
    update_a, update_b = _ordered("update_a", "update"), _ordered("update_b", "update")
    trainer = make_trainer(report(), persist(), update_a(), update_b())
    trainer.run(1, make_loader())
    assert Order.log == [
        "end:update_a",
        "end:update_b",
        "end:persist_a",
        "end:report_a",
        "teardown:update_b",
        "teardown:update_a",
        "teardown:persist_a",
        "teardown:report_a",
    ]


def test_every_teardown_runs_the_first_failure_is_raised_the_rest_are_warnings():
    class Fails(AddOnBase):
        def on_run_end(self, error):
            raise RuntimeError(f"{self.name} failed")

    first = type("First", (Fails,), {"name": "first"})
    second = type("Second", (Fails,), {"name": "second"})
    recorder = Recorder()
    trainer = make_trainer(recorder, first(), second())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="second failed"):  # reverse attach order: 'second' tears down first
            trainer.run(1, make_loader())
    assert [str(w.message) for w in caught if w.category is AddOnWarning] == [
        "add-on 'first': on_run_end failed (RuntimeError: first failed)"
    ]
    assert recorder.calls[-1] == ("run_end", None)  # it ran although two others failed


def test_run_end_sees_the_error_and_a_failed_run_reports_every_teardown_failure_as_a_warning():
    class Boom(SeparableTrainer):
        def train_step(self, batch):
            raise RuntimeError("boom")

    class Fails(AddOnBase):
        name = "fails"

        def on_run_end(self, error):
            raise ValueError("teardown broke too")

    recorder = Recorder()
    trainer = make_trainer(recorder, Fails(), trainer_cls=Boom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="boom"):
            trainer.run(1, make_loader())
    assert recorder.calls[-1] == ("run_end", "RuntimeError")
    assert any("teardown broke too" in str(w.message) for w in caught)


class EpochCounter(AddOnBase):
    """A stateful add-on of a user's, declaring no order at all."""

    name = "epoch_counter"

    def __init__(self, **options):
        super().__init__(**options)
        self.seen: list[int] = []
        self.noise = torch.zeros(())

    def on_epoch_end(self, epoch, summary):
        self.seen.append(epoch)
        self.noise = self.noise + torch.rand(())  # draws from the RNG the checkpoint restores

    def state_dict(self):
        return {"seen": list(self.seen), "noise": self.noise}

    def load_state_dict(self, state):
        self.seen, self.noise = list(state["seen"]), state["noise"]


def test_a_stateful_addon_is_checkpointed_with_its_epoch_and_resumes_exactly(tmp_path):
    straight_counter = EpochCounter()
    straight = make_trainer(straight_counter, StateManagerAddon(save_path=str(tmp_path / "a")))
    straight.run(4, make_loader(shuffle=True), valid_loader=make_loader(seed=1))

    first = make_trainer(EpochCounter(), StateManagerAddon(save_path=str(tmp_path / "b")))
    first.run(2, make_loader(shuffle=True), valid_loader=make_loader(seed=1))
    resumed_counter = EpochCounter()
    resumed = make_trainer(resumed_counter, StateManagerAddon(save_path=str(tmp_path / "b")))
    resumed.load_state()
    assert resumed_counter.seen == [1, 2]  # the checkpoint of epoch 2 holds epoch 2's update
    resumed.run(2, make_loader(shuffle=True), valid_loader=make_loader(seed=1))
    assert resumed_counter.seen == straight_counter.seen == [1, 2, 3, 4]
    assert torch.equal(resumed_counter.noise, straight_counter.noise)
    assert_same_weights(resumed.model, straight.model)


# ---------------------------------------------------------------------- launchers
def test_two_launchers_conflict():
    class LauncherA(LauncherAddon):
        name = "launcher_a"

        def launch(self, n_epoch, loader, valid_loader=None, total=False):
            return None

    class LauncherB(LauncherA):
        name = "launcher_b"

    with pytest.raises(CompositionError, match="both decide where training runs"):
        SeparableTrainer.add_on(LauncherA, LauncherB)
    with pytest.raises(CompositionError, match="both decide where training runs"):
        make_trainer(LauncherA(), LauncherB())


def test_launch_takes_over_run():
    class Launcher(LauncherAddon):
        name = "launcher"

        def launch(self, n_epoch, loader, valid_loader=None, total=False):
            self.launched_with = n_epoch
            return self.trainer.run_in_process(n_epoch, loader, valid_loader, total=total)

    launcher = Launcher()
    trainer = make_trainer(launcher)
    trainer.run(1, make_loader())
    assert trainer.launcher is launcher and launcher.launched_with == 1 and len(trainer.history) == 1


def test_several_devices_need_a_launcher():
    model = make_model()
    with pytest.raises(ConfigError, match="2 devices were given but no add-on runs several processes"):
        SeparableTrainer(model, ["cpu", "cpu"], "train", torch.optim.SGD(model.parameters(), lr=0.1))


# ---------------------------------------------------------------------- upstream-style add-ons
class LegacyAddon:
    """The upstream style, duck-typed: apply(base_cls) returns a subclass."""

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


class UpstreamAddon(AddOnBase):
    """Upstream's own form: a subclass of AddOnBase with no registry name and a classmethod apply."""

    @classmethod
    def apply(cls, base_cls):
        class WithUpstream(base_cls):
            def __init__(self, *args, upstream_note="", **kwargs):
                super().__init__(*args, **kwargs)
                self.upstream_note = upstream_note

            def run_epoch(self, loader):
                self.upstream_epochs = getattr(self, "upstream_epochs", 0) + 1
                return super().run_epoch(loader)

        return WithUpstream


def test_legacy_and_upstream_style_addons_are_applied_the_upstream_way_beside_new_ones():
    cls = SeparableTrainer.add_on(Recorder, LegacyAddon, UpstreamAddon, Quiet)
    trainer = make(cls, legacy_flag=True, upstream_note="hi", tag="z")
    loader = make_loader()
    trainer.run(2, loader)
    assert trainer.legacy_flag is True and trainer.upstream_note == "hi"
    assert trainer.legacy_batches == 2 * len(loader) and trainer.upstream_epochs == 2
    assert list(trainer.addons) == ["recorder", "quiet"] and trainer.addon("recorder").config.tag == "z"


# ---------------------------------------------------------------------- processes
def test_composed_trainers_pickle_for_spawned_workers_and_reattach_their_addons():
    trainer = make(SeparableTrainer.add_on(Recorder, Quiet))
    trainer.run(1, make_loader())
    clone = pickle.loads(pickle.dumps(trainer))
    assert type(clone) is type(trainer)
    assert torch.equal(clone.model.weight, trainer.model.weight)
    assert clone.addon("recorder").trainer is clone
    clone.run(1, make_loader())  # its hook table was rebuilt: the clone's recorder sees the clone's run
    assert clone.addon("recorder").calls[-1] == ("run_end", None)
    assert clone.recorded().count("run_start") == 2


def test_options_live_once_in_the_config():
    trainer = make_trainer(gradient_clip=1.5)
    assert trainer.gradient_clip == trainer.config.gradient_clip == 1.5
    trainer.toggle("test")
    assert trainer.mode == trainer.config.mode == "test"
    with pytest.raises(AttributeError):
        trainer.gradient_clip = 2.0
    with pytest.raises(ConfigError, match="mode must be 'train' or 'test'"):
        trainer.toggle("eval")


def test_rank_zero_helpers_without_torch_distributed():
    assert (get_rank(), get_world_size(), is_rank_zero()) == (0, 1, True)
    assert rank_zero_only(lambda: 7)() == 7


def test_a_model_is_a_module():
    with pytest.raises(ConfigError, match="'model' must be a torch.nn.Module"):
        Trainer.add_on(Quiet)  # composing is fine on the abstract base ...
        SeparableTrainer(object(), "cpu", "test")
    assert isinstance(make_model(), nn.Module)
