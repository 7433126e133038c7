"""zae-wandb: the `wandb` add-on for zae-engine (WandBLoggerAddon).

Names load on first use, so `zae_wandb.config` (the options) can be read without importing the add-on.
"""

import importlib
from typing import Any

__all__ = ["WandBLoggerAddon", "WandBLoggerConfig"]
__version__ = "0.2.0"

_WHERE = {"WandBLoggerAddon": "zae_wandb.addon", "WandBLoggerConfig": "zae_wandb.config"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
