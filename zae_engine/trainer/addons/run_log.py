"""RunLogAddon: every run leaves a record under `runs/` — settings, versions, metrics as they happen, final status.

The record is what `zae runs list/show/compare/plot` read (see `zae_engine.runs`). Only rank 0 writes. Per step it
costs nothing: running means are appended only at the `log_interval` points where `on_log` is called anyway.
One `run()` is one record; its status says how it ended: `done`, `failed` (with the error's first line),
`interrupted` (Ctrl-C / SIGTERM) or `stopped_early` (an add-on such as early stopping ended it).
"""

from __future__ import annotations

from typing import Any

from zae_engine.distributed import get_world_size, is_rank_zero
from zae_engine.runs.recorder import RunRecorder, error_summary
from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.addons.configs import RunLogConfig
from zae_engine.trainer.describe import best_epoch, run_configuration


class RunLogAddon(AddOnBase):
    name = "run_log"
    Config = RunLogConfig
    config: RunLogConfig
    phase = "report"  # after the checkpoints of an epoch exist and every deciding add-on has spoken

    def __init__(self, config: RunLogConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.recorder: RunRecorder | None = None  # the record of the run going on (rank 0), else None
        #: where the latest record is (kept after the run ends)
        self.path = None

    def on_run_start(self) -> None:
        if not is_rank_zero():
            return
        trainer = self.trainer
        self.recorder = RunRecorder(self.config.dir).start(
            name=self.config.run_name,
            options=run_configuration(trainer),
            spec=getattr(trainer, "run_spec", None),
            world_size=get_world_size(),
            devices=[str(d) for d in trainer.devices],
            tags=self.config.tags,
        )
        self.path = self.recorder.path

    def on_log(self, metrics: dict[str, float]) -> None:
        if self.recorder is not None and self.config.log_steps:
            step = self.trainer.progress_checker.get_step() - 1
            self.recorder.log(metrics, step, self.trainer.progress_checker.get_epoch(), kind="step")

    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        if self.recorder is not None:
            numbers = {k: v for k, v in summary.items() if k not in ("epoch", "step") and isinstance(v, (int, float))}
            self.recorder.log(numbers, int(summary.get("step", 0)), epoch, kind="epoch")

    def on_run_end(self, error: BaseException | None) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        if error is None:
            status, why = ("stopped_early" if self.trainer.should_stop else "done"), None
        elif isinstance(error, KeyboardInterrupt):
            status, why = "interrupted", error_summary(error)
        else:
            status, why = "failed", error_summary(error)
        recorder.finish(status, why, best=best_epoch(self.trainer))
