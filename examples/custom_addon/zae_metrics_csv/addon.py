"""`MetricsCSVAddon`: one CSV row per epoch, rewritten atomically so the file is always whole.

It shows every part of an add-on: a registry `name`, a pydantic `Config` (in `config.py`, torch-free) whose
docstring is the description and whose fields are the add-on's options (`MetricsCSVAddon(csv_path=...)`, or
`- {name: metrics_csv, ...}` in a spec), state kept from `__init__`, a hook, rank-zero side effects, and
checkpoint state so a resumed run keeps the rows it had written.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from zae_engine.checkpoint.atomic import atomic_path
from zae_engine.distributed import is_rank_zero
from zae_engine.trainer.addons.base import AddOnBase
from zae_metrics_csv.config import MetricsCSVConfig


class MetricsCSVAddon(AddOnBase):
    name = "metrics_csv"
    Config = MetricsCSVConfig
    # The default phase, "update", runs before the state manager ("persist") at every epoch end, so the
    # checkpoint of an epoch holds that epoch's row and a resume keeps it: nothing to declare.

    def __init__(self, config: MetricsCSVConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.rows: list[dict[str, Any]] = []

    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        keys = self.config.csv_keys
        self.rows.append({k: v for k, v in summary.items() if keys is None or k in keys})
        if is_rank_zero():  # every rank sees the same summary; only one writes the file
            self._write()

    def _write(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns.extend(k for k in row if k not in columns)
        with atomic_path(Path(self.config.csv_path)) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows)

    # Checkpoints made by the state_manager add-on carry these rows, so a resumed run appends to them.
    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
