"""zae-metrics-csv: epoch summaries as a CSV file, a complete example of a third-party zae-engine add-on.

Names load on first use, so reading `zae_metrics_csv.config` (what `zae addons show` does) imports no torch.
"""

import importlib
from typing import Any

__all__ = ["MetricsCSVAddon", "MetricsCSVConfig"]

_WHERE = {"MetricsCSVAddon": "zae_metrics_csv.addon", "MetricsCSVConfig": "zae_metrics_csv.config"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
