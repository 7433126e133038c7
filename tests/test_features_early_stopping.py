"""Early stopping stops at the right epoch on scripted validation metrics, explains why, and resumes its count."""

from __future__ import annotations

import pytest
from features_testing import ScriptedValidTrainer, batches

from zae_engine.errors import ConfigError
from zae_engine.testing import SeparableTrainer, make_trainer
from zae_engine.trainer.addons import EarlyStoppingAddon, StateManagerAddon


def scripted(script: list[float], **kwargs):
    cls = type("Scripted", (ScriptedValidTrainer.add_on(EarlyStoppingAddon),), {"script": script})
    return make_trainer(trainer_cls=cls, **kwargs)


def run(trainer, n_epoch: int = 6) -> None:
    data = batches(16, 8)
    trainer.run(n_epoch, data, valid_loader=data[:1])


def test_stops_after_patience_epochs_without_improvement_and_says_why(capsys):
    trainer = scripted([1.0, 0.9, 0.95, 0.91, 0.5, 0.4], patience=2)
    run(trainer)

    assert [s["valid/loss"] for s in trainer.history] == pytest.approx([1.0, 0.9, 0.95, 0.91])
    stopper = trainer.addon("early_stopping")
    assert (stopper.stopped_epoch, stopper.best, stopper.best_epoch) == (4, pytest.approx(0.9), 2)
    out = capsys.readouterr().out
    assert "early stopping after epoch 4: valid/loss has not improved" in out
    assert "best 0.9 at epoch 2" in out


def test_runs_to_the_end_while_the_metric_keeps_improving(capsys):
    trainer = scripted([1.0, 0.9, 0.8, 0.7], patience=1)
    run(trainer, 4)
    assert len(trainer.history) == 4
    assert trainer.addon("early_stopping").stopped_epoch is None
    assert "early stopping" not in capsys.readouterr().out


def test_max_mode_and_min_delta_count_small_gains_as_no_improvement():
    # acc = 1 - loss: 0.5, 0.56, 0.58, 0.60, 0.9. With min_delta 0.05 only 0.56 counts as a gain.
    trainer = scripted(
        [0.5, 0.44, 0.42, 0.40, 0.1], monitor="valid/acc", monitor_mode="max", patience=2, min_delta=0.05
    )
    run(trainer)
    assert len(trainer.history) == 4
    assert trainer.addon("early_stopping").best == pytest.approx(0.56)

    without_delta = scripted([0.5, 0.44, 0.42, 0.40, 0.1], monitor="valid/acc", monitor_mode="max", patience=2)
    run(without_delta, 5)
    assert len(without_delta.history) == 5


def test_the_count_survives_a_checkpoint_round_trip():
    script = [1.0, 0.9, 0.95, 0.97, 0.5]
    first = scripted(script, patience=3)
    run(first, 3)  # epoch 3 is the first without improvement
    state = first.state_dict()
    assert state["addons"]["early_stopping"] == {"best": pytest.approx(0.9), "best_epoch": 2, "bad_epochs": 1}

    resumed = scripted(script, patience=3)
    resumed.load_state_dict(state)
    run(resumed, 2)  # epoch 4 makes 2 bad epochs, epoch 5 improves: no stop
    assert [s["epoch"] for s in resumed.history] == [4, 5]
    assert resumed.addon("early_stopping").best_epoch == 5


def test_an_unknown_monitor_names_what_is_available():
    trainer = scripted([1.0, 0.9], monitor="valid/los")
    with pytest.raises(
        ConfigError, match=r"monitor 'valid/los' is not in the epoch summary \(did you mean 'valid/loss'"
    ):
        run(trainer, 2)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"patience": 0}, "patience"), ({"monitor_mode": "lowest"}, "monitor_mode")]
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"add-on 'early_stopping': '{field}'"):
        scripted([1.0], **kwargs)


def test_default_monitor_is_the_trainers_best_metric_train_loss_without_validation():
    stopping = SeparableTrainer.add_on(EarlyStoppingAddon)
    trainer = make_trainer(trainer_cls=stopping, lr=0.0, patience=1)  # lr 0: a flat loss
    trainer.run(5, batches(16, 8))
    assert len(trainer.history) == 2
    assert trainer.addon("early_stopping").reason.startswith("early stopping after epoch 2: train/loss")


def test_shares_monitor_with_the_state_manager_on_one_trainer(tmp_path):
    cls = type("Both", (ScriptedValidTrainer.add_on(StateManagerAddon, EarlyStoppingAddon),), {"script": [1.0, 1.0]})
    trainer = make_trainer(
        trainer_cls=cls, save_path=str(tmp_path), monitor="valid/acc", monitor_mode="max", patience=1
    )
    run(trainer, 3)
    assert len(trainer.history) == 2
    assert trainer.addon("state_manager").config.monitor == trainer.addon("early_stopping").config.monitor
