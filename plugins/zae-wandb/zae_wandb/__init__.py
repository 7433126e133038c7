"""zae-wandb: the `wandb` add-on for zae-engine (WandBLoggerAddon)."""

from zae_wandb.addon import WandBLoggerAddon, WandBLoggerConfig

__all__ = ["WandBLoggerAddon", "WandBLoggerConfig"]
