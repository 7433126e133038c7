"""zae-mlflow: the `mlflow` add-on for zae-engine (MLflowLoggerAddon).

Names load on first use, so `zae_mlflow.config` (the options) can be read without importing the add-on.
"""

import importlib
from typing import Any

__all__ = ["MLflowLoggerAddon", "MLflowLoggerConfig"]
__version__ = "0.2.0"

_WHERE = {"MLflowLoggerAddon": "zae_mlflow.addon", "MLflowLoggerConfig": "zae_mlflow.config"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
