"""What a resume takes from a checkpoint and what from the settings the run was started with now.

Progress comes from the checkpoint: the epoch and step counters, a scheduler's position (`last_epoch`, ...), the
optimizer's moments and step counts, the learning rate a scheduler had reached. Hyper-parameters come from the
current settings when they differ: a scheduler's `total_iters` or `eta_min`, an optimizer's `lr` (without a
scheduler), `weight_decay`, `betas`, ... So a relaunch with a longer schedule or another weight decay does what
its command line says, and every difference is named once.
"""

from __future__ import annotations

from typing import Any

# scheduler state that records where the schedule is, not how it is shaped
_SCHEDULER_PROGRESS = frozenset({"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial"})


def merge_scheduler(saved: dict[str, Any], current: dict[str, Any], where: str = "scheduler") -> tuple[dict, list[str]]:
    """The checkpoint's progress with the current hyper-parameters; `differences` say what the settings changed."""
    merged, differences = dict(saved), []
    for key, value in current.items():
        if key in _SCHEDULER_PROGRESS or key not in saved:
            continue
        if (
            key == "schedulers"
            and isinstance(value, list)
            and isinstance(saved[key], list)
            and len(value) == len(saved[key])
        ):
            parts = [merge_scheduler(s, c, f"{where}[{i}]") for i, (s, c) in enumerate(zip(saved[key], value))]
            merged[key] = [state for state, _ in parts]
            differences += [line for _, lines in parts for line in lines]
        elif not _same(saved[key], value):
            merged[key] = value
            differences.append(f"{where} {key} {_shown(saved[key])} -> {_shown(value)}")
    return merged, differences


def merge_optimizer(saved: dict[str, Any], current: dict[str, Any], scheduled: bool) -> tuple[dict, list[str]]:
    """The checkpoint's optimizer state with the current groups' hyper-parameters (`lr` too, unless a scheduler
    sets it: then the rate reached is progress)."""
    groups, differences = [], []
    for i, (old, new) in enumerate(zip(saved.get("param_groups", []), current.get("param_groups", []))):
        group = dict(old)
        for key, value in new.items():
            if key == "params" or key not in old or (scheduled and key == "lr"):
                continue
            if not _same(old[key], value):
                group[key] = value
                differences.append(f"optimizer group {i} {key} {_shown(old[key])} -> {_shown(value)}")
        groups.append(group)
    return {**saved, "param_groups": groups or saved.get("param_groups", [])}, differences


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors and other values without a plain equality
        return a is b


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)
