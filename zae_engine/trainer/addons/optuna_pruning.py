"""OptunaPruningAddon: each epoch's metric goes to an Optuna trial, and a trial Optuna gives up on stops early.

The run ends the way early stopping ends it (after the epoch, checkpoints and records complete, status
`stopped_early`), then `run()` raises `optuna.TrialPruned`, which is how an Optuna objective says "pruned":

    def objective(trial):
        trainer = MyTrainer(model, "cpu", "train", optimizer,
                            addons=[OptunaPruningAddon(trial=trial, monitor="valid/acc")])
        trainer.run(10, loader, valid_loader)     # raises optuna.TrialPruned when pruned
        return trainer.history[-1]["valid/acc"]

`zae sweep` attaches one to every trial. optuna is imported only when a trial is pruned, so this module loads
without it (the trial object comes from optuna anyway).
"""

from __future__ import annotations

from typing import Any

from zae_engine.distributed import any_rank
from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.addons.configs import OptunaPruningConfig
from zae_engine.trainer.addons.monitor import monitored_value


class OptunaPruningAddon(AddOnBase):
    name = "optuna_pruning"
    Config = OptunaPruningConfig
    config: OptunaPruningConfig
    phase = "update"  # it decides whether the run goes on, like early stopping

    def __init__(self, config: OptunaPruningConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        #: the epoch after which the trial was pruned in the last run (None: it was not)
        self.pruned_epoch: int | None = None
        self._last: tuple[str, float] | None = None

    def on_run_start(self) -> None:
        self.pruned_epoch = None

    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        if self.trainer.mode != "train":
            return
        monitor = self.config.monitor or self.trainer.best["metric"]
        value = monitored_value(summary, monitor, self.label())
        self._last = (monitor, value)
        prune = False
        if self.trainer.is_rank_zero:
            trial = self.config.trial
            trial.report(value, epoch)
            prune = bool(trial.should_prune())
        if any_rank(prune, self.trainer.device):
            self.trainer.should_stop = True
            self.pruned_epoch = epoch

    def on_run_end(self, error: BaseException | None) -> None:
        if self.pruned_epoch is None or error is not None:
            return
        import optuna

        monitor, value = self._last or ("the metric", float("nan"))
        raise optuna.TrialPruned(f"pruned after epoch {self.pruned_epoch}: {monitor} = {value:.6g}")
