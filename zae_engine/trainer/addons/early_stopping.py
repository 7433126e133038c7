"""Stop training when a monitored epoch metric stops improving.

Under torch.distributed every rank reaches the same decision through one all-reduce of the stop flag
(any rank that wants to stop stops them all), so no rank is left waiting in a collective.
"""

from __future__ import annotations

import math
from typing import Any

from zae_engine.distributed import any_rank
from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.addons.configs import EarlyStoppingConfig
from zae_engine.trainer.addons.monitor import monitored_value


class EarlyStoppingAddon(AddOnBase):
    """Sets `trainer.should_stop` once `monitor` has not improved for `patience` epochs."""

    name = "early_stopping"
    Config = EarlyStoppingConfig
    config: EarlyStoppingConfig

    def __init__(self, config: EarlyStoppingConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.stopped_epoch: int | None = None
        self.reason: str | None = None

    def improved(self, value: float) -> bool:
        """Whether `value` beats the best so far by more than `min_delta` (NaN never does)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.config.monitor_mode == "min":
            return value < self.best - self.config.min_delta
        return value > self.best + self.config.min_delta

    def on_run_start(self) -> None:
        self.stopped_epoch = self.reason = None

    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        if self.trainer.mode != "train":
            return
        monitor = self.config.monitor or self.trainer.best["metric"]
        value = monitored_value(summary, monitor, self.label())
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        wants_stop = self.bad_epochs >= self.config.patience
        if any_rank(wants_stop, self.trainer.device):
            self.trainer.should_stop = True
            self.stopped_epoch = epoch
            self.reason = (
                f"early stopping after epoch {epoch}: {monitor} has not improved by more than {self.config.min_delta:g} "
                f"for {self.bad_epochs} epoch(s) (best {_shown(self.best)} at epoch {self.best_epoch}, "
                f"patience {self.config.patience})"
            )

    def on_run_end(self, error: BaseException | None) -> None:
        if self.reason is not None and error is None and self.trainer.is_rank_zero:
            self.trainer._display_note(self.reason)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state.get("best")
        self.best = None if best is None else float(best)
        self.best_epoch = state.get("best_epoch")
        self.bad_epochs = int(state.get("bad_epochs", 0))


def _shown(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"
