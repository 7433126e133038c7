"""Upstream's module path for the add-on base (`zae_engine.trainer.addons.core.AddOnBase`): the same objects."""

from zae_engine.trainer.addons.base import AddOnBase, AddOnConfig, LauncherAddon

__all__ = ["AddOnBase", "AddOnConfig", "LauncherAddon"]
