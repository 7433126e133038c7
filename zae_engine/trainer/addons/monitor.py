"""The one lookup add-ons that watch a metric share, so a missing key reads the same wherever it is watched."""

from __future__ import annotations

from typing import Any

from zae_engine.errors import MissingMetricError, did_you_mean


def monitored_value(summary: dict[str, Any], monitor: str, who: str) -> float:
    """`summary[monitor]` as a float; an absent key is a MissingMetricError naming `who` and the keys there are."""
    if monitor not in summary:
        metrics = sorted(k for k, v in summary.items() if isinstance(v, (int, float)) and k not in ("epoch", "step"))
        raise MissingMetricError(
            f"{who}: monitor '{monitor}' is not in the epoch summary{did_you_mean(monitor, metrics)}; "
            f"available: {', '.join(metrics)}. Pass a valid_loader for 'valid/...' keys, or set monitor"
        )
    return float(summary[monitor])
