"""Add-ons: the base class, the core add-ons, and import shims for the plugin add-ons.

`MultiGPUAddon`, `WandBLoggerAddon` and `NeptuneLoggerAddon` live in separately installed plugins; importing
them from here hands over the plugin's class, or raises ImportError naming the pip extra that provides it.
"""

from typing import Any

from zae_engine.trainer.addons._plugins import PLUGIN_CLASSES, load_plugin_class
from zae_engine.trainer.addons.base import AddOnBase, AddOnConfig
from zae_engine.trainer.addons.state_manager import StateManagerAddon

__all__ = ["AddOnBase", "AddOnConfig", "StateManagerAddon", *PLUGIN_CLASSES]


def __getattr__(name: str) -> Any:
    if name in PLUGIN_CLASSES:
        return load_plugin_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
