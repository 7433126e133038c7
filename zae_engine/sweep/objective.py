"""A trial's value from its epoch summaries: the metric at the last epoch, or at the best one."""

from __future__ import annotations

import math
from typing import Any

from zae_engine.errors import MissingMetricError, did_you_mean


def objective_value(history: list[dict[str, Any]], metric: str, objective: str, direction: str) -> float:
    """`objective='last'`: the last epoch's value; `'best'`: the best epoch's (NaN never counts as best)."""
    if not history:
        raise MissingMetricError("the run trained no epoch, so it has no value; check run.n_epoch")
    values = [float(summary[metric]) for summary in history if isinstance(summary.get(metric), (int, float))]
    if not values:
        known = sorted(k for k, v in history[-1].items() if isinstance(v, (int, float)) and k not in ("epoch", "step"))
        raise MissingMetricError(
            f"metric '{metric}' is not in the epoch summary{did_you_mean(metric, known)}; available: {', '.join(known)}"
            " (valid/... keys need data.valid)"
        )
    if objective == "last":
        return float(history[-1].get(metric, math.nan))
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan
    return max(finite) if direction == "maximize" else min(finite)


__all__ = ["objective_value"]
