"""The Trainer's own keyword arguments, validated exactly like an add-on's Config.

This model is the only place the options are declared: the Trainer takes them as keywords, keeps the validated
(frozen) model as `trainer.config`, and exposes each field as a read-only attribute (`trainer.gradient_clip`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class TrainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["train", "test"] = Field(description="'train' updates weights; 'test' only evaluates")
    log_bar: StrictBool = Field(True, description="rich progress bars; False prints one line per epoch")
    scheduler_step_on_batch: StrictBool = Field(
        False, description="step the scheduler per optimizer step, not per epoch"
    )
    gradient_clip: float = Field(0.0, ge=0.0, description="max global grad norm; 0 disables clipping")
    grad_accum_steps: int = Field(1, ge=1, description="batches whose gradients add up before one optimizer step")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype for the steps")
    compile_model: StrictBool = Field(False, description="run the model through torch.compile")
    nan_policy: Literal["raise", "skip", "off"] = Field(
        "raise", description="non-finite loss: stop with a message, skip the step (syncs every step), or ignore"
    )
    log_interval: int = Field(50, ge=1, description="optimizer steps between on_log calls (step-level tracker logs)")
    keep_best_weights: StrictBool = Field(True, description="keep a CPU copy of the best weights for apply_weights()")


TRAINER_FIELDS = frozenset(TrainerConfig.model_fields)
