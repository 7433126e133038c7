"""What is Neptune's own in NeptuneLoggerAddon, with the real neptune 1.x client offline and its logs read back.

Key scheme, steps, one tracker run across run() calls, failed runs, a failing client and the run id in
checkpoints are the tracker contract's (test_neptune_contract.py); here: offline fallback, the run's identity
fields and threads, the logged configuration, error fields, uploads, both trackers at once, debug mode, settings.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest
from neptune_offline import QUIET, read_offline_runs
from zae_neptune import NeptuneLoggerAddon

from zae_engine.errors import CompositionError, ConfigError
from zae_engine.testing import SeparableTrainer, make_loader, make_trainer
from zae_engine.trainer.addons import NeptuneLoggerAddon as ShimmedAddon
from zae_engine.trainer.addons import StateManagerAddon
from zae_engine.trainer.addons.tracking import TrackerWarning

OFFLINE = {"neptune": {"mode": "offline", **QUIET}}


def test_neptune_is_registered_and_served_by_the_core_shim():
    (entry,) = importlib.metadata.entry_points(group="zae_engine.addons", name="neptune")
    assert entry.load() is NeptuneLoggerAddon is ShimmedAddon


def test_neptune_without_token_falls_back_to_offline_and_says_how_to_sync(trained):
    assert len(trained.warnings) == 2  # one per run() call, no other tracker warning
    message = str(trained.warnings[0].message)
    assert "no API token found" in message and f"offline to {trained.root / '.neptune'}" in message
    assert f"neptune sync --path {trained.root}" in message and "shut down" in message
    assert all(run.metadata["mode"] == "offline" for run in trained.runs)


def test_neptune_stops_each_run_and_leaves_no_thread_behind(trained):
    first, second = trained.runs
    assert first.fields["sys/name"] == second.fields["sys/name"] == "shared"
    assert first.fields["sys/failed"] is False and second.fields["sys/failed"] is False
    assert trained.trainer.addons["neptune"].run is None  # stopped after each run()
    assert not [name for name in trained.threads if name.startswith("Neptune")]  # no background thread left


def test_neptune_config_holds_trainer_addon_and_spec_settings(trained):
    fields = trained.runs[0].fields
    assert fields["config/trainer/log_interval"] == 2 and fields["config/trainer/precision"] == "fp32"
    assert fields["config/addons/neptune/web_logger/neptune/name"] == "shared"
    assert fields["config/addons/neptune/upload_checkpoints"] is False
    assert fields["config/optimizer/lr"] == 0.1
    assert fields["config/model/parameters"] == 22
    assert fields["config/spec/run/n_epoch"] == 2 and fields["config/spec/trainer/class_path"] == "tests.TinyTrainer"


def test_neptune_puts_the_error_of_a_failed_run_in_a_field(workdir):
    class Exploding(SeparableTrainer):
        def train_step(self, batch):
            if self.progress_checker.get_step() == 6:
                raise RuntimeError("boom at step 6")
            return super().train_step(batch)

    trainer = make_trainer(NeptuneLoggerAddon(web_logger=OFFLINE), trainer_cls=Exploding)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run(3, make_loader())
    (run,) = read_offline_runs(workdir)
    assert run.fields["sys/failed"] is True and run.fields["error"] == "RuntimeError: boom at step 6"


def test_a_real_neptune_error_is_contained_and_named_in_one_line(workdir):
    class PullsTheRug(SeparableTrainer):
        """Stops the Neptune run underneath the add-on at step 3: its next log call raises inside neptune."""

        def train_step(self, batch):
            if self.progress_checker.get_step() == 3:
                self.addons["neptune"].run.stop()
            return super().train_step(batch)

    trainer = make_trainer(NeptuneLoggerAddon(web_logger=OFFLINE), trainer_cls=PullsTheRug, log_interval=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(3, make_loader())
    assert [h["epoch"] for h in trainer.history] == [1, 2, 3]  # training went on to the end
    tracker = [w for w in caught if issubclass(w.category, TrackerWarning)]
    assert len(tracker) == 1
    message = str(tracker[0].message)
    assert message.startswith("Neptune: logging") and "InactiveRunException" in message and "\n" not in message
    (run,) = read_offline_runs(workdir)
    assert run.steps("running/train/loss") == [2]  # what came before the failure
    assert trainer.addons["neptune"].run is None


def test_neptune_uploads_checkpoint_copies(workdir):
    state_manager = StateManagerAddon(save_path=str(workdir / "ckpt"), save_format="safetensors")
    trainer = make_trainer(NeptuneLoggerAddon(web_logger=OFFLINE, upload_checkpoints=True), state_manager)
    trainer.run(2, make_loader())
    (run,) = read_offline_runs(workdir)
    # persist runs before report whatever the attach order: each epoch's checkpoint goes up at that epoch's end
    folders = {key.split("/")[2] for key in run.uploads if key.startswith("checkpoints/files/")}
    assert folders == {"epoch-0001", "epoch-0002"}
    assert run.fields["checkpoints/latest"] == "epoch-0002"
    assert any(key.endswith(".safetensors") for key in run.uploads)
    for op in run.uploads.values():  # copied into the run, so pruning old checkpoints loses nothing
        assert op["file_path"] is None and (run.folder / "upload_path" / op["tmp_file_name"]).is_file()
    assert not (workdir / "ckpt" / "epoch-0001").exists()  # the state manager kept only the latest


def test_neptune_and_wandb_on_one_trainer_log_the_same_epochs(workdir, monkeypatch):
    from zae_wandb import WandBLoggerAddon

    monkeypatch.setenv("WANDB_SILENT", "true")
    trainer = make_trainer(
        WandBLoggerAddon(web_logger={"wandb": {"mode": "offline", "dir": str(workdir)}}),
        NeptuneLoggerAddon(web_logger=OFFLINE),
    )
    trainer.run(2, make_loader(), make_loader())
    (run,) = read_offline_runs(workdir)
    assert run.values("valid/loss") == [h["valid/loss"] for h in trainer.history]
    assert run.fields["config/addons/wandb/web_logger/wandb/mode"] == "offline"
    assert len(list(workdir.glob("wandb/offline-run-*/run-*.wandb"))) == 1


def test_the_seeds_shared_web_logger_reaches_both_trackers(workdir, monkeypatch):
    """Trainer.add_on(...) routes the one flat `web_logger` to every tracker; each reads its own entry."""
    from zae_wandb import WandBLoggerAddon

    monkeypatch.setenv("WANDB_SILENT", "true")
    settings = {"wandb": {"mode": "offline", "dir": str(workdir)}, "neptune": {"mode": "offline", **QUIET}}
    trainer = make_trainer(
        trainer_cls=SeparableTrainer.add_on(WandBLoggerAddon, NeptuneLoggerAddon), web_logger=settings
    )
    trainer.run(1, make_loader())
    (run,) = read_offline_runs(workdir)
    assert run.values("train/loss") == [trainer.history[0]["train/loss"]]
    assert len(list(workdir.glob("wandb/offline-run-*/run-*.wandb"))) == 1


def test_neptune_shares_its_keywords_with_other_trackers_but_refuses_clashing_ones():
    from zae_engine.trainer.addons import AddOnBase, AddOnConfig

    class OtherConfig(AddOnConfig):
        web_logger: dict | None = None

    class OtherLogger(AddOnBase):
        name = "other_logger"
        Config = OtherConfig

    with pytest.raises(CompositionError, match="web_logger"):
        SeparableTrainer.add_on(NeptuneLoggerAddon, OtherLogger)


def test_neptune_debug_mode_writes_nothing(workdir):
    trainer = make_trainer(NeptuneLoggerAddon(web_logger={"neptune": {"mode": "debug", **QUIET}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackerWarning)
        trainer.run(1, make_loader())
    assert not [p for p in workdir.rglob("*") if p.is_file()] and len(trainer.history) == 1  # at most empty folders


def test_neptune_settings_errors_name_the_fix():
    with pytest.raises(ConfigError, match="web_logger has an entry 'neptun'.*did you mean 'neptune'"):
        make_trainer(NeptuneLoggerAddon(web_logger={"neptun": {}}))
    with pytest.raises(ConfigError, match="web_logger"):
        make_trainer(NeptuneLoggerAddon(web_logger={"neptune": 3}))
