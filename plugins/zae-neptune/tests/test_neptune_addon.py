"""NeptuneLoggerAddon with the real neptune 1.x client offline: train, read the operation log back, check it."""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest
from zae_neptune import NeptuneLoggerAddon

from zae_engine.errors import CompositionError, ConfigError
from zae_engine.trainer.addons import NeptuneLoggerAddon as ShimmedAddon
from zae_engine.trainer.addons import StateManagerAddon
from zae_engine.trainer.addons.tracking import TrackerWarning

EPOCH_KEYS = ("epoch", "step", "train/loss", "valid/loss", "valid/acc", "lr/group0")


def test_neptune_is_registered_and_served_by_the_core_shim():
    (entry,) = importlib.metadata.entry_points(group="zae_engine.addons", name="neptune")
    assert entry.load() is NeptuneLoggerAddon is ShimmedAddon


def test_neptune_without_token_falls_back_to_offline_and_says_how_to_sync(trained):
    assert len(trained.warnings) == 2  # one per run() call, no other tracker warning
    message = str(trained.warnings[0].message)
    assert "no API token found" in message and f"offline to {trained.root / '.neptune'}" in message
    assert f"neptune sync --path {trained.root}" in message and "shut down" in message
    assert all(run.metadata["mode"] == "offline" for run in trained.runs)


def test_neptune_epoch_series_match_the_trainer_history(trained):
    first, second = trained.runs
    for key in EPOCH_KEYS:
        assert first.steps(key) + second.steps(key) == [4, 8, 12], key
        assert first.values(key) + second.values(key) == [h[key] for h in trained.trainer.history], key


def test_neptune_running_series_every_log_interval(trained):
    first, second = trained.runs
    assert first.steps("running/train/loss") + second.steps("running/train/loss") == [2, 4, 6, 8, 10, 12]
    assert first.values("running/lr/group0") == pytest.approx([0.1] * 4)
    # at an epoch's last step the running mean has seen the whole epoch: it equals the epoch mean
    assert first.values("running/train/loss")[1] == pytest.approx(trained.first_history[0]["train/loss"], rel=1e-5)


def test_neptune_second_run_continues_with_the_same_run_identity(trained):
    addon = trained.trainer.addons["neptune"]
    first, second = trained.runs
    assert first.fields["config/tracker_run_id"] == second.fields["config/tracker_run_id"] == addon.tracker_run_id
    assert first.fields["sys/name"] == second.fields["sys/name"] == "shared"
    assert first.fields["sys/failed"] is False and second.fields["sys/failed"] is False
    assert addon.run is None  # stopped after each run()
    assert not [name for name in trained.threads if name.startswith("Neptune")]  # no background thread left


def test_neptune_config_holds_trainer_addon_and_spec_settings(trained):
    fields = trained.runs[0].fields
    assert fields["config/trainer/log_interval"] == 2 and fields["config/trainer/precision"] == "fp32"
    assert fields["config/addons/neptune/web_logger/neptune/name"] == "shared"
    assert fields["config/addons/neptune/upload_checkpoints"] is False
    assert fields["config/optimizer/lr"] == 0.1
    assert fields["config/model/parameters"] == 22
    assert fields["config/spec/run/n_epoch"] == 2 and fields["config/spec/trainer/class_path"] == "tests.TinyTrainer"


def test_neptune_marks_a_failed_run(nep, workdir):
    class Exploding(nep.Trainer):
        def train_step(self, batch):
            if self.progress_checker.get_step() == 6:
                raise RuntimeError("boom at step 6")
            return super().train_step(batch)

    model, optimizer = nep.parts()
    trainer = Exploding.add_on(NeptuneLoggerAddon)(
        model, "cpu", "train", optimizer, log_bar=False, log_interval=1,
        web_logger={"neptune": {"mode": "offline", **nep.quiet}},
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run(3, nep.loader())
    (run,) = nep.read(workdir)
    assert run.fields["sys/failed"] is True and run.fields["error"] == "RuntimeError: boom at step 6"
    assert run.steps("running/train/loss") == [1, 2, 3, 4, 5] and run.values("epoch") == [1]


def test_neptune_failure_inside_the_tracker_never_stops_training(nep, workdir):
    class PullsTheRug(nep.Trainer):
        """Stops the Neptune run underneath the add-on at step 3: its next log call raises inside neptune."""

        def train_step(self, batch):
            if self.progress_checker.get_step() == 3:
                self.addons["neptune"].run.stop()
            return super().train_step(batch)

    model, optimizer = nep.parts()
    trainer = PullsTheRug.add_on(NeptuneLoggerAddon)(
        model, "cpu", "train", optimizer, log_bar=False, log_interval=2,
        web_logger={"neptune": {"mode": "offline", **nep.quiet}},
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(3, nep.loader())
    assert [h["epoch"] for h in trainer.history] == [1, 2, 3]  # training went on to the end
    tracker = [w for w in caught if issubclass(w.category, TrackerWarning)]
    assert len(tracker) == 1
    message = str(tracker[0].message)
    assert message.startswith("Neptune: logging") and "InactiveRunException" in message and "\n" not in message
    (run,) = nep.read(workdir)
    assert run.steps("running/train/loss") == [2]  # what came before the failure
    assert trainer.addons["neptune"].run is None


def test_neptune_uploads_checkpoint_copies(nep, workdir):
    model, optimizer = nep.parts()
    trainer = nep.Trainer.add_on(NeptuneLoggerAddon, StateManagerAddon)(
        model, "cpu", "train", optimizer, log_bar=False, save_path=str(workdir / "ckpt"), save_format="safetensors",
        upload_checkpoints=True, web_logger={"neptune": {"mode": "offline", **nep.quiet}},
    )  # fmt: skip
    trainer.run(2, nep.loader())
    (run,) = nep.read(workdir)
    # neptune's hook runs before the state manager's here: epoch 1's checkpoint goes up at epoch 2's end,
    # epoch 2's when run() ends
    folders = {key.split("/")[2] for key in run.uploads if key.startswith("checkpoints/files/")}
    assert folders == {"epoch-0001", "epoch-0002"}
    assert run.fields["checkpoints/latest"] == "epoch-0002"
    assert any(key.endswith(".safetensors") for key in run.uploads)
    for op in run.uploads.values():  # copied into the run, so pruning old checkpoints loses nothing
        assert op["file_path"] is None and (run.folder / "upload_path" / op["tmp_file_name"]).is_file()
    assert not (workdir / "ckpt" / "epoch-0001").exists()  # the state manager kept only the latest


def test_neptune_and_wandb_on_one_trainer_log_the_same_epochs(nep, workdir, monkeypatch):
    from zae_wandb import WandBLoggerAddon

    monkeypatch.setenv("WANDB_SILENT", "true")
    model, optimizer = nep.parts()
    trainer = nep.Trainer.add_on(WandBLoggerAddon, NeptuneLoggerAddon)(
        model, "cpu", "train", optimizer, log_bar=False,
        web_logger={"wandb": {"mode": "offline", "dir": str(workdir)}, "neptune": {"mode": "offline", **nep.quiet}},
    )  # fmt: skip
    trainer.run(2, nep.loader(), nep.loader())
    (run,) = nep.read(workdir)
    assert run.values("valid/loss") == [h["valid/loss"] for h in trainer.history]
    assert run.fields["config/addons/wandb/web_logger/wandb/mode"] == "offline"
    assert len(list(workdir.glob("wandb/offline-run-*/run-*.wandb"))) == 1


def test_neptune_shares_its_keywords_with_other_trackers_but_refuses_clashing_ones(nep):
    from zae_engine.trainer.addons import AddOnBase, AddOnConfig

    class OtherConfig(AddOnConfig):
        web_logger: dict | None = None

    class OtherLogger(AddOnBase):
        name = "other_logger"
        Config = OtherConfig

    with pytest.raises(CompositionError, match="web_logger"):
        nep.Trainer.add_on(NeptuneLoggerAddon, OtherLogger)


def test_neptune_debug_mode_writes_nothing(nep, workdir):
    model, optimizer = nep.parts()
    trainer = nep.Trainer.add_on(NeptuneLoggerAddon)(
        model, "cpu", "train", optimizer, log_bar=False, web_logger={"neptune": {"mode": "debug", **nep.quiet}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackerWarning)
        trainer.run(1, nep.loader())
    assert not [p for p in workdir.rglob("*") if p.is_file()] and len(trainer.history) == 1  # at most empty folders


def test_neptune_settings_errors_name_the_fix(nep):
    model, optimizer = nep.parts()
    with pytest.raises(ConfigError, match="web_logger has an entry 'neptun'.*did you mean 'neptune'"):
        nep.Trainer.add_on(NeptuneLoggerAddon)(model, "cpu", "train", optimizer, web_logger={"neptun": {}})
    with pytest.raises(ConfigError, match="web_logger"):
        nep.Trainer.add_on(NeptuneLoggerAddon)(model, "cpu", "train", optimizer, web_logger={"neptune": 3})
