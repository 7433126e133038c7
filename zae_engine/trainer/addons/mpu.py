"""Seed import path `zae_engine.trainer.addons.mpu.MultiGPUAddon`, served by the zae-mpu plugin."""

from zae_engine.trainer.addons._plugins import load_plugin_class

MultiGPUAddon = load_plugin_class("MultiGPUAddon")

__all__ = ["MultiGPUAddon"]
