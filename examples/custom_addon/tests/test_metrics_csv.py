"""Tests for `metrics_csv`, written with zae-engine's test kit: copy them along with the package.

`zae_engine.testing` gives a tiny task that trains on the CPU in a fraction of a second (`make_trainer`,
`make_loader`) and `assert_same_weights`; run with `python -m pytest tests` after `pip install -e .`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from zae_metrics_csv import MetricsCSVAddon

from zae_engine.errors import ConfigError
from zae_engine.testing import assert_same_weights, make_loader, make_trainer
from zae_engine.trainer.addons import StateManagerAddon


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_one_row_per_epoch_with_the_chosen_columns(tmp_path):
    path = tmp_path / "metrics.csv"
    trainer = make_trainer(MetricsCSVAddon(csv_path=str(path), csv_keys=["epoch", "valid/acc"]))
    trainer.run(3, make_loader(), valid_loader=make_loader(seed=1))
    rows = read_rows(path)
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "valid/acc"]
    assert float(rows[-1]["valid/acc"]) == pytest.approx(trainer.history[-1]["valid/acc"])


def test_writing_the_csv_leaves_training_exactly_as_it_was(tmp_path):
    plain = make_trainer()
    with_csv = make_trainer(MetricsCSVAddon(csv_path=str(tmp_path / "metrics.csv")))
    for trainer in (plain, with_csv):
        trainer.run(2, make_loader())
    assert_same_weights(with_csv.model, plain.model)


def test_a_resumed_run_continues_the_same_table(tmp_path):
    path = tmp_path / "metrics.csv"

    def make():
        return make_trainer(MetricsCSVAddon(csv_path=str(path)), StateManagerAddon(save_path=str(tmp_path / "ckpt")))

    make().run(2, make_loader(), valid_loader=make_loader(seed=1))
    resumed = make()
    resumed.load_state()  # the checkpoint of epoch 2 holds epoch 2's row: the add-on runs before the saver
    resumed.run(1, make_loader(), valid_loader=make_loader(seed=1))
    assert [row["epoch"] for row in read_rows(path)] == ["1", "2", "3"]


def test_a_misspelt_option_names_the_add_on_and_the_field():
    with pytest.raises(ConfigError, match="metrics_csv.*csv_colums"):
        MetricsCSVAddon(csv_colums=["epoch"])
