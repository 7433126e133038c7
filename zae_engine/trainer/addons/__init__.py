"""Add-ons: the contract, the core add-ons, and import shims for the plugin add-ons.

Importing this package is cheap (no torch): the contract (`AddOnBase`, `AddOnConfig`, `LauncherAddon`) and the
core Configs load eagerly; every add-on class loads on first use (PEP 562). `MultiGPUAddon`, `WandBLoggerAddon`,
`NeptuneLoggerAddon`, `TensorBoardLoggerAddon` and `MLflowLoggerAddon` live in separately installed plugins; importing them from here hands over the plugin's
class, or raises ImportError naming the pip extra that provides it.
"""

import importlib
from typing import Any

from zae_engine.trainer.addons._plugins import PLUGIN_CLASSES, load_plugin_class
from zae_engine.trainer.addons.base import AddOnBase, AddOnConfig, LauncherAddon

_CORE = {  # core add-ons (they import torch), loaded on first use
    "StateManagerAddon": "zae_engine.trainer.addons.state_manager",
    "EarlyStoppingAddon": "zae_engine.trainer.addons.early_stopping",
    "EMAAddon": "zae_engine.trainer.addons.ema",
    "PrecisionMixerAddon": "zae_engine.trainer.addons.precision",
    "RunLogAddon": "zae_engine.trainer.addons.run_log",
    "OptunaPruningAddon": "zae_engine.trainer.addons.optuna_pruning",
    "TrackerAddonBase": "zae_engine.trainer.addons.tracking",
}

__all__ = ["AddOnBase", "AddOnConfig", "LauncherAddon", *_CORE, *PLUGIN_CLASSES]


def __getattr__(name: str) -> Any:
    if name in _CORE:
        return getattr(importlib.import_module(_CORE[name]), name)
    if name in PLUGIN_CLASSES:
        return load_plugin_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
