"""zae-neptune: the `neptune` add-on for zae-engine (NeptuneLoggerAddon)."""

from zae_neptune.addon import NeptuneLoggerAddon, NeptuneLoggerConfig

__all__ = ["NeptuneLoggerAddon", "NeptuneLoggerConfig"]
