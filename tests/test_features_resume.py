"""Early stopping and EMA through real checkpoints: stop, load_state(), go on == the straight run."""

from __future__ import annotations

import pytest
import torch
from features_testing import ScriptedValidTrainer, batches

from zae_engine.testing import make_trainer
from zae_engine.trainer.addons import EarlyStoppingAddon, EMAAddon, StateManagerAddon

SCRIPT = [1.0, 0.9, 0.95, 0.97, 0.5, 0.4]  # patience 2: stop after epoch 4


def trainer(save_path: str, save_format: str):
    composed = ScriptedValidTrainer.add_on(StateManagerAddon, EMAAddon, EarlyStoppingAddon)
    cls = type("Scripted", (composed,), {"script": SCRIPT})
    return make_trainer(trainer_cls=cls, save_path=save_path, save_format=save_format, decay=0.7, patience=2)


def run(t, n_epoch: int) -> None:
    data = batches(32, 8)
    t.run(n_epoch, data, valid_loader=data[:1])


@pytest.mark.parametrize("save_format", ["ckpt", "safetensors"])
def test_resumed_run_stops_at_the_same_epoch_with_the_same_ema(tmp_path, save_format):
    straight = trainer(str(tmp_path / "straight"), save_format)
    run(straight, 6)
    assert len(straight.history) == 4

    first = trainer(str(tmp_path / "resumed"), save_format)
    run(first, 3)
    resumed = trainer(str(tmp_path / "resumed"), save_format)
    resumed.load_state()
    assert resumed.addon("early_stopping").bad_epochs == 1  # the checkpoint of epoch 3 counted epoch 3
    run(resumed, 3)

    assert [s["epoch"] for s in resumed.history] == [s["epoch"] for s in straight.history] == [1, 2, 3, 4]
    assert resumed.addon("early_stopping").stopped_epoch == 4
    ema, expected = resumed.addon("ema"), straight.addon("ema")
    assert ema.updates == expected.updates == 16
    for key, value in expected.weights.items():
        torch.testing.assert_close(ema.weights[key], value, rtol=0, atol=1e-7)
