"""The `neptune` add-on's options (torch-free: `zae addons show neptune` reads them without importing the add-on)."""

from zae_engine.trainer.addons.configs import TrackerConfig


class NeptuneLoggerConfig(TrackerConfig):
    """Neptune (1.x client) tracking: metrics, run config, checkpoint files; offline and debug modes.

    `web_logger['neptune']` is passed to `neptune.init_run` (project, name, tags, mode, api_token, ...).
    """
