"""PrecisionMixerAddon: upstream's way of asking for mixed precision, kept as a thin add-on over `precision`.

Precision is a Trainer option here (`Trainer(..., precision="bf16")`): it wraps the forward pass and owns the
gradient scaler, so it belongs to the loop. This add-on only turns upstream's keyword — `"auto"`, a precision, or a
list in order of preference — into that option for the trainer's device, once, when it is attached.
"""

from __future__ import annotations

from typing import Any

import torch

from zae_engine.errors import ConfigError
from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.addons.configs import PrecisionMixerConfig

KNOWN = ("fp32", "bf16", "fp16")


class PrecisionMixerAddon(AddOnBase):
    name = "precision_mixer"
    Config = PrecisionMixerConfig
    config: PrecisionMixerConfig
    sets_trainer_options = ("precision",)

    def __init__(self, config: PrecisionMixerConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.chosen: str | None = None  # what it picked, once attached

    def on_attach(self) -> None:
        trainer = self.trainer
        if trainer.config.precision != "fp32":
            raise ConfigError(
                f"{self.label()} picks the precision, but the trainer was also given precision="
                f"{trainer.config.precision!r}; use one of the two"
            )
        self.chosen = resolve_precision(self.config.precision, trainer.device)
        trainer.reconfigure(precision=self.chosen)


def resolve_precision(wanted: str | list[str], device: torch.device) -> str:
    """'auto', a precision, or a preference list -> the precision to train with on `device`."""
    if wanted == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    choices = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [c for c in choices if c not in KNOWN]
    if not choices or unknown:
        raise ConfigError(
            f"add-on 'precision_mixer': precision {wanted!r} is not 'auto', one of {', '.join(KNOWN)}, or a list of them"
        )
    for choice in choices:
        if _supported(choice, device):
            return choice
    raise ConfigError(
        f"add-on 'precision_mixer': none of {choices} runs on {device}; add 'fp32' to the list, or use 'auto'"
    )


def _supported(precision: str, device: torch.device) -> bool:
    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    return precision == "bf16"  # CPU autocast runs bf16; fp16 on the CPU is slow and often unsupported
