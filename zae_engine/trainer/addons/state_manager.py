"""PLACEHOLDER — replaced by the state-manager work (issue 4)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from zae_engine.trainer.addons.base import AddOnBase, AddOnConfig


class StateManagerConfig(AddOnConfig):
    save_path: str = Field("./checkpoints", description="directory for checkpoints")
    save_format: Literal["ckpt", "safetensors", "safetensor"] = Field("ckpt", description="file format")


class StateManagerAddon(AddOnBase):
    name = "state_manager"
    description = "Atomic, pickle-free checkpoints and exact resume."
    Config = StateManagerConfig
