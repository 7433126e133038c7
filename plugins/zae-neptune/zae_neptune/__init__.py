"""zae-neptune: the `neptune` add-on for zae-engine (NeptuneLoggerAddon).

Names load on first use, so `zae_neptune.config` (the options) can be read without importing the add-on.
"""

import importlib
from typing import Any

__all__ = ["NeptuneLoggerAddon", "NeptuneLoggerConfig"]
__version__ = "0.2.0"

_WHERE = {"NeptuneLoggerAddon": "zae_neptune.addon", "NeptuneLoggerConfig": "zae_neptune.config"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
