"""Add-ons: the base class, the core add-ons, and import shims for the plugin add-ons.

`MultiGPUAddon`, `WandBLoggerAddon` and `NeptuneLoggerAddon` live in separately installed plugins; importing
them from here hands over the plugin's class, or raises ImportError naming the pip extra that provides it.
"""

import importlib
from typing import Any

from zae_engine.trainer.addons._plugins import PLUGIN_CLASSES, load_plugin_class
from zae_engine.trainer.addons.base import AddOnBase, AddOnConfig
from zae_engine.trainer.addons.state_manager import StateManagerAddon

__all__ = ["AddOnBase", "AddOnConfig", "EarlyStoppingAddon", "EMAAddon", "StateManagerAddon", *PLUGIN_CLASSES]


_CORE_LAZY = {  # core add-ons that import torch, loaded on first use so this package stays torch-free
    "EarlyStoppingAddon": "zae_engine.trainer.addons.early_stopping",
    "EMAAddon": "zae_engine.trainer.addons.ema",
}


def __getattr__(name: str) -> Any:
    if name in _CORE_LAZY:
        return getattr(importlib.import_module(_CORE_LAZY[name]), name)
    if name in PLUGIN_CLASSES:
        return load_plugin_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
