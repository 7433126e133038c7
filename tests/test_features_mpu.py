"""The features through the real launcher: the mpu add-on spawns 2 gloo workers on CPU."""

from __future__ import annotations

import torch
from features_testing import ScriptedValidTrainer
from torch.utils.data import DataLoader

from zae_engine.testing import make_dataset
from zae_engine.trainer.addons import EarlyStoppingAddon, EMAAddon, MultiGPUAddon


class ScriptedOnTwoRanks(ScriptedValidTrainer.add_on(MultiGPUAddon, EMAAddon, EarlyStoppingAddon)):
    script = [1.0, 0.9, 0.95, 0.97, 0.5, 0.4]  # patience 2: stop after epoch 4


def test_early_stopping_ema_accumulation_and_bf16_under_the_mpu_launcher(capfd):
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 2)
    trainer = ScriptedOnTwoRanks(
        model,
        ["cpu", "cpu"],
        "train",
        torch.optim.SGD(model.parameters(), lr=0.1),
        log_bar=False,
        precision="bf16",
        grad_accum_steps=2,
        patience=2,
        decay=0.9,
    )
    train = DataLoader(make_dataset(64), batch_size=8)  # 4 batches per rank -> 2 optimizer steps per epoch
    trainer.run(6, train, valid_loader=DataLoader(make_dataset(16, seed=1), batch_size=8))

    assert [s["epoch"] for s in trainer.history] == [1, 2, 3, 4]
    assert trainer.addon("ema").updates == 8
    assert capfd.readouterr().out.count("early stopping after epoch 4") == 1  # printed by rank 0 only
