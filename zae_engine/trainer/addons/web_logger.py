"""Upstream import path for the tracker add-ons, served by their plugins (zae-wandb, zae-neptune, ...)."""

from typing import Any

from zae_engine.trainer.addons._plugins import load_plugin_class

_NAMES = ("WandBLoggerAddon", "NeptuneLoggerAddon", "TensorBoardLoggerAddon", "MLflowLoggerAddon")


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return load_plugin_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
