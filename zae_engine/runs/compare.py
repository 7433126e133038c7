"""What differs between runs: their options as flat dotted keys, and their metrics side by side.

Keys are spelt the way `zae run --set` takes them (`optimizer.init_args.lr`, `addons.state_manager.save_path`):
a list of add-on entries is keyed by each entry's `name`, other lists by index. So a difference found here
can be pasted back as an override.
"""

from __future__ import annotations

import json
from typing import Any

from zae_engine.runs.store import Metrics, Run

MAX_DEPTH = 32
MISSING = object()


def flatten(value: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """{'a': {'b': 1}, 'l': [{'name': 'x', 'k': 2}]} -> {'a.b': 1, 'l.x.k': 2}."""
    if depth > MAX_DEPTH:
        return {prefix: "..."}
    if isinstance(value, dict) and value:
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and value:
        names = [item.get("name") if isinstance(item, dict) else None for item in value]
        keyed = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
        items = (
            [(n, {k: v for k, v in item.items() if k != "name"} or None) for n, item in zip(names, value)]
            if keyed
            else [(str(i), v) for i, v in enumerate(value)]
        )
    else:
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else key, depth + 1))
    return flat


def differing_options(runs: list[Run]) -> dict[str, list[Any]]:
    """Dotted keys whose values are not the same in every run (MISSING where a run lacks the key)."""
    flats = [flatten(run.record.config()) for run in runs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    differing: dict[str, list[Any]] = {}
    for key in keys:
        values = [flat.get(key, MISSING) for flat in flats]
        if len({_comparable(v) for v in values}) > 1:
            differing[key] = values
    return differing


def _comparable(value: Any) -> str:
    return "\0missing" if value is MISSING else json.dumps(value, sort_keys=True, default=str)


def side_by_side(runs: list[Run], metrics: list[Metrics]) -> dict[str, dict[str, list[float | None]]]:
    """{'final': {metric: [per run]}, 'best': {metric: [per run]}}: the last epoch, and the run's best epoch."""
    finals = [m.final() for m in metrics]
    bests = [m.at_epoch(run.record.best.epoch) if run.record.best else {} for run, m in zip(runs, metrics)]
    names = list(dict.fromkeys(key for values in [*finals, *bests] for key in values))
    return {
        "final": {name: [values.get(name) for values in finals] for name in names},
        "best": {name: [values.get(name) for values in bests] for name in names},
    }
