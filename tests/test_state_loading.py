"""A load that fails changes nothing: every part of a state is checked (shapes, kinds of numbers, types, random
streams) before any is applied, add-on states that refuse are rolled back, their own errors stay their cause,
and no path from a file points outside save_path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from zae_engine.checkpoint.store import write_folder
from zae_engine.errors import CheckpointError
from zae_engine.testing import make_loader, make_trainer
from zae_engine.trainer.addons import AddOnBase, EMAAddon, StateManagerAddon


def with_momentum(*addons):
    trainer = make_trainer(*addons)
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1, momentum=0.9)  # it keeps per-param state
    return trainer


def trained(tmp_path: Path):
    trainer = with_momentum(StateManagerAddon(save_path=str(tmp_path / "run")), EMAAddon(decay=0.9))
    trainer.run(2, make_loader())
    return trainer


def snapshot(trainer) -> dict:
    return copy.deepcopy({**trainer.state_dict(), "history": trainer.history})


def assert_unchanged(trainer, before: dict) -> None:
    after = snapshot(trainer)
    for key in ("model",):
        for name, tensor in before[key].items():
            assert torch.equal(tensor, after[key][name]), name
    assert after["progress"] == before["progress"] and after["history"] == before["history"]
    for name, value in before["optimizer"]["state"][0].items():
        assert torch.equal(value, after["optimizer"]["state"][0][name]), name
    for name, tensor in before["addons"]["ema"]["weights"].items():
        assert torch.equal(tensor, after["addons"]["ema"]["weights"][name]), name


def saved_with(tmp_path: Path, trainer, change) -> Path:
    """A checkpoint folder of `trainer`'s state with one part changed (written by our own writer)."""
    state = trainer.addon("state_manager")._gather_state()
    change(state)
    return write_folder(tmp_path / "crafted", state, {"kind": "manual"}, "safetensors")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["rng"].__setitem__("torch", torch.zeros(16, dtype=torch.uint8)), "malformed random-number"),
        (lambda s: s["model"].__setitem__("weight", s["model"]["weight"].long()), "refused, not cast"),
        (
            lambda s: s["optimizer"]["state"][0].__setitem__(
                "momentum_buffer", torch.zeros(2, 10, dtype=torch.complex64)
            ),
            "does not fit a torch.float32 parameter",
        ),
        (lambda s: s["optimizer"]["state"][0].__setitem__("momentum_buffer", torch.zeros(3, 3)), "shape (3, 3)"),
        (lambda s: s.__setitem__("history", "not a list"), "'history' must be a list"),
        (lambda s: s["best"].__setitem__("epoch", "two"), "best['epoch']"),
    ],
    ids=["rng", "model-kind", "optimizer-complex", "optimizer-shape", "history", "best"],
)
def test_a_bad_part_anywhere_is_refused_before_anything_changes(tmp_path, change, message):
    folder = saved_with(tmp_path, trained(tmp_path), change)
    trainer = with_momentum(StateManagerAddon(save_path=str(tmp_path / "other")), EMAAddon(decay=0.9))
    trainer.run(1, make_loader())  # so there is optimizer and EMA state to lose
    before = snapshot(trainer)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        trainer.load_state(folder)
    assert_unchanged(trainer, before)


class Careful(AddOnBase):
    name = "careful"

    def __init__(self, **options):
        super().__init__(**options)
        self.count = 0

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class Buggy(AddOnBase):
    name = "buggy"

    def state_dict(self):
        return {"x": 1}

    def load_state_dict(self, state):
        self.helper.restore(state)  # a programming error: there is no `helper`


def test_an_addons_own_error_stays_the_cause_and_earlier_addon_states_are_rolled_back(tmp_path):
    careful = Careful()
    source = make_trainer(careful, Buggy(), StateManagerAddon(save_path=str(tmp_path / "run")))
    careful.count = 7
    source.run(1, make_loader())
    target_careful = Careful()
    target = make_trainer(target_careful, Buggy(), StateManagerAddon(save_path=str(tmp_path / "run")))
    with pytest.raises(CheckpointError, match="add-on 'buggy' could not load its state") as err:
        target.load_state()
    assert isinstance(err.value.__cause__, AttributeError)  # the add-on's own error, with its traceback
    assert target_careful.count == 0  # rolled back: it had already loaded 7
    assert target.progress_checker.get_epoch() == 1


def test_paths_in_a_checkpoint_outside_save_path_are_not_taken(tmp_path):
    source = trained(tmp_path)
    folder = saved_with(
        tmp_path,
        source,
        lambda s: s["addons"]["state_manager"].update(best_checkpoint="/etc", last_checkpoint=str(tmp_path)),
    )
    trainer = with_momentum(StateManagerAddon(save_path=str(tmp_path / "run")), EMAAddon(decay=0.9))
    trainer.load_state(folder)
    manager = trainer.addon("state_manager")
    assert manager.best_checkpoint is None or manager.best_checkpoint.parent == (tmp_path / "run").resolve()
    assert manager.last_checkpoint == folder
