"""zae-tensorboard: the `tensorboard` add-on for zae-engine (TensorBoardLoggerAddon).

Names load on first use, so `zae_tensorboard.config` (the options) can be read without importing the add-on.
"""

import importlib
from typing import Any

__all__ = ["TensorBoardLoggerAddon", "TensorBoardLoggerConfig"]
__version__ = "0.2.0"

_WHERE = {"TensorBoardLoggerAddon": "zae_tensorboard.addon", "TensorBoardLoggerConfig": "zae_tensorboard.config"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
