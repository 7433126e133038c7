"""The `wandb` add-on's options (torch-free: `zae addons show wandb` reads them without importing the add-on)."""

from zae_engine.trainer.addons.configs import TrackerConfig


class WandBLoggerConfig(TrackerConfig):
    """Weights & Biases tracking: metrics, run config, checkpoints as artifacts; online or offline.

    `web_logger['wandb']` is passed to `wandb.init` (project, name, mode, dir, tags, id, entity, ...).
    """
