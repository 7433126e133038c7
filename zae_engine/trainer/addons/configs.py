"""The options of the core add-ons, in a module that imports neither torch nor the add-ons themselves.

Each model is the single source of truth for its add-on's keywords: the add-on validates with it, `zae addons
show` prints it and `zae schema` embeds its `model_json_schema()`. The first line of each docstring is the
add-on's description in `zae addons list`. The entry-point group `zae_engine.addon_configs` points here, so
the CLI reads these without importing an add-on (and so without torch).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from zae_engine.trainer.addons.base import AddOnConfig

_FORMAT_ALIASES = {"safetensor": "safetensors", "ckpt": "ckpt", "safetensors": "safetensors"}


class _Monitored(AddOnConfig):
    """A metric of the epoch summary that decides something, and which way is better."""

    monitor: str | None = Field(
        None,
        description="Epoch-summary key to watch, e.g. 'valid/acc'. None: the trainer's best metric "
        "('valid/loss' when validating, else 'train/loss').",
    )
    monitor_mode: Literal["min", "max"] = Field("min", description="'min': lower is better; 'max': higher is better.")

    @model_validator(mode="after")
    def _max_needs_monitor(self) -> _Monitored:
        if self.monitor_mode == "max" and self.monitor is None:
            raise ValueError("monitor_mode='max' needs a monitor, e.g. monitor='valid/acc' (the default is a loss)")
        return self


class StateManagerConfig(_Monitored):
    """Atomic, pickle-free checkpoints (best k + latest, also mid-epoch, optionally async), exact resume."""

    save_path: str = Field(
        "./checkpoints",
        description="Folder for checkpoints, created if missing: one sub-folder per checkpoint plus manifest.json.",
    )
    save_format: Literal["ckpt", "safetensors"] = Field(
        "ckpt",
        description="'ckpt': one torch.save file per checkpoint, read with torch.load(weights_only=True); "
        "'safetensors': tensors in .safetensors files, the rest in JSON ('safetensor' is accepted too).",
    )
    save_top_k: int = Field(1, ge=-1, description="Keep the k best checkpoints by `monitor` (-1: all, 0: none).")
    keep_last: int = Field(
        1, ge=0, description="Also keep the k most recent checkpoints, whatever their score, so a run can resume."
    )
    every_n_epochs: int = Field(1, ge=1, description="Consider saving at the end of every n-th epoch.")
    every_n_steps: int | None = Field(
        None,
        ge=1,
        description="Also save inside epochs, after every n-th optimizer step (counted over the run); a resume "
        "continues at the next batch. None: only at epoch ends.",
    )
    every_n_minutes: float | None = Field(
        None,
        gt=0,
        description="Also save inside epochs when this many minutes passed since the last save (rank 0's clock "
        "decides for all ranks). None: no time-based saves.",
    )
    async_save: bool = Field(
        False,
        description="Write checkpoints in a background thread: training stops only while the state is copied to "
        "host memory. The interrupt save and save_state() stay synchronous.",
    )
    async_when_busy: Literal["wait", "skip"] = Field(
        "wait",
        description="With async_save, a save that falls due while the previous one is still being written: "
        "'wait' for it, or 'skip' this one.",
    )
    save_on_interrupt: bool = Field(
        True, description="On SIGINT/SIGTERM during run(), save a checkpoint after the current step, then stop."
    )
    stop_budget: float | None = Field(
        None,
        gt=0,
        description="Seconds the SIGINT/SIGTERM save may take, counted from the end of the current step (set it "
        "below the scheduler's grace period): a save that would not fit, judged by the last one, is skipped. "
        "None: no limit.",
    )
    resume: bool = Field(
        False, description="When run() starts, load the latest checkpoint in save_path if there is one."
    )

    @field_validator("save_format", mode="before")
    @classmethod
    def _normalise_format(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _FORMAT_ALIASES.get(value.strip().lower().lstrip("."), value)
        return value


class EarlyStoppingConfig(_Monitored):
    """Stop when a monitored metric stops improving (patience, min_delta; all DDP ranks together)."""

    patience: int = Field(5, ge=1, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="An improvement must beat the best by more than this.")


class EMAConfig(AddOnConfig):
    """Exponential moving average of the weights; optional validation with them; kept in checkpoints."""

    decay: float = Field(0.999, gt=0.0, lt=1.0, description="Weight of the old average at each update.")
    update_every: int = Field(1, ge=1, description="Optimizer steps between EMA updates.")
    evaluate_with_ema: bool = Field(
        False, description="Validate with the EMA weights (best weights and apply_weights() then hold them too)."
    )


class PrecisionMixerConfig(AddOnConfig):
    """Pick the Trainer's mixed precision for the hardware (the upstream PrecisionMixerAddon's keyword)."""

    precision: str | list[str] = Field(
        "auto",
        description="'auto' (bf16 where the GPU supports it, else fp16 on CUDA, fp32 on the CPU), one of 'fp32', "
        "'bf16', 'fp16', or a list in order of preference, e.g. ['bf16', 'fp16'] (the first the device supports).",
    )


class RunLogConfig(AddOnConfig):
    """A record of every run on disk (settings, versions, metrics, status) for `zae runs` to list, compare and plot."""

    dir: str = Field("runs", description="Folder that holds one sub-folder per recorded run.")
    run_name: str | None = Field(None, description="A readable name for the record; default: two random words.")
    tags: dict[str, str] = Field(default_factory=dict, description="Labels stored with the record (e.g. a sweep's).")
    log_steps: bool = Field(
        True, description="Also record the running means every log_interval optimizer steps, not only epochs."
    )


class OptunaPruningConfig(AddOnConfig):
    """Report a metric to an Optuna trial after every epoch, and stop the run when Optuna prunes the trial."""

    trial: Any = Field(
        description="The optuna.trial.Trial to report to (zae sweep passes each trial's own); not kept in run records.",
        exclude=True,
    )
    monitor: str | None = Field(
        None,
        description="Epoch-summary key to report, e.g. 'valid/acc'. None: the trainer's best metric "
        "('valid/loss' when validating, else 'train/loss').",
    )

    @field_validator("trial")
    @classmethod
    def _is_a_trial(cls, value: Any) -> Any:
        if not (callable(getattr(value, "report", None)) and callable(getattr(value, "should_prune", None))):
            raise ValueError(
                f"expected an optuna.trial.Trial (it has report() and should_prune()), got {type(value).__name__}; "
                "in a spec, leave this add-on out: zae sweep attaches it to every trial itself"
            )
        return value


class TrackerConfig(AddOnConfig):
    """Options every experiment-tracker add-on shares (each tracker's Config subclasses this)."""

    web_logger: dict[str, dict[str, Any]] | None = Field(
        None,
        description="Per-tracker client settings, e.g. {'wandb': {...wandb.init kwargs...}, "
        "'neptune': {...neptune.init_run kwargs...}}; each tracker add-on reads its own key.",
    )
    log_steps: bool = Field(
        True,
        description="Also log running means (running/train/loss, running/lr/group0) every log_interval "
        "optimizer steps (the Trainer's log_interval keyword); False logs epoch summaries only.",
    )
    upload_checkpoints: bool = Field(
        False,
        description="Upload each checkpoint the state_manager add-on writes (W&B artifact, Neptune file, ...); "
        "needs state_manager on the same trainer.",
    )


__all__ = [
    "EMAConfig",
    "EarlyStoppingConfig",
    "OptunaPruningConfig",
    "PrecisionMixerConfig",
    "RunLogConfig",
    "StateManagerConfig",
    "TrackerConfig",
]
