"""TrackerAddonBase without any tracker client: a subclass that writes into a list shows the contract."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

from zae_engine.testing import SeparableTrainer
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons.tracking import TrackerAddonBase, TrackerConfig, TrackerWarning


class RecordingTracker(TrackerAddonBase):
    """A tracker whose 'client' is a list of calls; `fail_on` names a client method that raises."""

    name = "recording"
    Config = TrackerConfig
    display_name = "Recorder"
    fail_on = ""

    def _call(self, what: str, *args: Any) -> None:
        if what == self.fail_on:
            raise ConnectionError(f"{what} lost the network\nsecond line of a long client message")
        self.calls.append((what, *args))

    def _client_open(self, settings, continuing):
        self.calls = getattr(self, "calls", [])
        self._call("open", settings, continuing)
        return object()

    def _client_log(self, values, step):
        self._call("log", values, step)

    def _client_log_config(self, config):
        self._call("config", config)

    def _client_upload(self, path):
        self._call("upload", path)

    def _client_close(self, error):
        self._call("close", error)


class OtherTracker(RecordingTracker):
    name = "other"


class Steps(SeparableTrainer, Trainer):
    pass


def make(*addons, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    return Steps.add_on(*addons)(model, "cpu", "train", torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def test_tracker_opens_with_run_logs_and_closes(loader):
    trainer = make(RecordingTracker, log_bar=False, log_interval=4, web_logger={"recording": {"project": "p"}})
    tracker = trainer.addons["recording"]
    assert tracker.run is None and not hasattr(tracker, "calls")  # nothing happens at construction
    trainer.run(2, loader)  # 8 batches per epoch
    kinds = [c[0] for c in tracker.calls]
    assert kinds == ["open", "config", "log", "log", "log", "log", "log", "log", "close"]
    assert tracker.calls[0][1:] == ({"project": "p"}, False)
    logs = [c for c in tracker.calls if c[0] == "log"]
    assert [step for _, _, step in logs] == [4, 8, 8, 12, 16, 16]
    assert set(logs[0][1]) == {"running/train/loss", "running/lr/group0"}
    assert logs[2][1] == trainer.history[0]
    assert tracker.calls[-1] == ("close", None) and tracker.run is None
    trainer.run(1, loader)
    assert tracker.calls[9][1:] == ({"project": "p"}, True)  # the second run() continues the tracker run


def test_a_failing_tracker_warns_once_and_training_continues(loader):
    class Flaky(RecordingTracker):
        fail_on = "log"

    trainer = make(Flaky, log_bar=False, log_interval=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(3, loader)
    assert len(trainer.history) == 3
    (warning,) = [w for w in caught if issubclass(w.category, TrackerWarning)]
    assert str(warning.message) == (
        "Recorder: logging step metrics failed (ConnectionError: log lost the network). "
        "Tracking is off for the rest of this run; training continues"
    )
    assert [c[0] for c in trainer.addons["recording"].calls] == ["open", "config", "close"]


def test_the_error_that_ended_run_reaches_the_tracker(loader):
    class Boom(Steps):
        def train_step(self, batch):
            raise ValueError("bad batch")

    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    trainer = Boom.add_on(RecordingTracker)(model, "cpu", "train", torch.optim.SGD(model.parameters()), log_bar=False)
    with pytest.raises(ValueError):
        trainer.run(1, loader)
    what, error = trainer.addons["recording"].calls[-1]
    assert what == "close" and isinstance(error, ValueError)


def test_two_trackers_share_keywords_each_reading_its_own_entry(loader):
    trainer = make(RecordingTracker, OtherTracker, log_bar=False, web_logger={"recording": {"a": 1}, "other": {"b": 2}})
    trainer.run(1, loader)
    assert trainer.addons["recording"].calls[0][1] == {"a": 1}
    assert trainer.addons["other"].calls[0][1] == {"b": 2}
    config = trainer.addons["other"].calls[1][1]
    assert set(config["addons"]) == {"recording", "other"} and config["trainer"]["log_interval"] == 50


def test_tracker_run_id_survives_a_checkpoint_round_trip():
    first, second = make(RecordingTracker), make(RecordingTracker)
    assert first.addons["recording"].tracker_run_id != second.addons["recording"].tracker_run_id
    second.load_state_dict(first.state_dict())
    assert second.addons["recording"].tracker_run_id == first.addons["recording"].tracker_run_id
