"""Does a saved state fit this trainer? Checked in full before anything is loaded, so a failed load changes nothing.

Weights: the same keys, shapes and dtypes as the live model (an int64 or complex tensor for a float32 parameter
is refused, not cast). Optimizer: the same groups and parameters, each per-parameter state tensor shaped for its
parameter (or broadcast to it, as Adafactor's factored moments are) and of the same kind (floating, complex).
Scheduler: the keys it knows, each with the type it has now. Everything else a checkpoint holds: its types.
"""

from __future__ import annotations

from typing import Any

import torch

from zae_engine.checkpoint.weights import check_weights
from zae_engine.errors import CheckpointError


def check_fits(trainer: Any, state: dict[str, Any], source: str) -> None:
    """CheckpointError naming what does not fit; returns quietly when `state` can be loaded as a whole."""
    if state.get("model") is not None:
        check_weights(trainer.unwrapped_model, state["model"], source)
    if state.get("optimizer") is not None and trainer.optimizer is not None:
        _check_optimizer(trainer.optimizer, state["optimizer"], source)
    if state.get("scheduler") is not None and hasattr(trainer.scheduler, "state_dict"):
        _check_like(trainer.scheduler.state_dict(), state["scheduler"], f"{source}: scheduler")
    for part, kind in (("scaler", dict), ("best", dict), ("addons", dict), ("progress", dict)):
        value = state.get(part)
        if value is not None and not isinstance(value, kind):
            raise CheckpointError(f"{source}: {part!r} must be a {kind.__name__}, not a {type(value).__name__}")
    best = state.get("best") or {}
    for key, kinds in (("metric", (str,)), ("value", (int, float)), ("epoch", (int,))):
        if best.get(key) is not None and not isinstance(best[key], kinds):
            raise CheckpointError(f"{source}: best[{key!r}] is a {type(best[key]).__name__}; the checkpoint is damaged")


def _check_optimizer(optimizer: torch.optim.Optimizer, saved: Any, source: str) -> None:
    where = f"{source}: optimizer"
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list):
        raise CheckpointError(f"{where} state must hold 'param_groups'; the checkpoint is damaged")
    groups = saved["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(
            f"{where} has {len(groups)} parameter group(s), this optimizer {len(optimizer.param_groups)}; "
            "load it into the optimizer it was saved from"
        )
    params: dict[Any, tuple[torch.Tensor, int]] = {}
    for i, (group, live) in enumerate(zip(groups, optimizer.param_groups)):
        ids = group.get("params") if isinstance(group, dict) else None
        if not isinstance(ids, list) or len(ids) != len(live["params"]):
            count = len(ids) if isinstance(ids, list) else "no"
            raise CheckpointError(
                f"{where} group {i} has {count} parameters, this one {len(live['params'])}; "
                "load it into the optimizer it was saved from"
            )
        group_numel = sum(p.numel() for p in live["params"])
        params.update({key: (param, group_numel) for key, param in zip(ids, live["params"])})
    per_param = saved.get("state", {})
    if not isinstance(per_param, dict):
        raise CheckpointError(f"{where} 'state' must be a mapping; the checkpoint is damaged")
    for key, entries in per_param.items():
        if key not in params or not isinstance(entries, dict):
            raise CheckpointError(f"{where} holds state for parameter {key!r}, which it does not list")
        param, group_numel = params[key]
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and not _fits_param(value, param, group_numel):
                raise CheckpointError(
                    f"{where} state {name!r} of parameter {key!r} is a {value.dtype} tensor of shape "
                    f"{tuple(value.shape)}, which does not fit a {param.dtype} parameter of shape {tuple(param.shape)}"
                )


def _fits_param(value: torch.Tensor, param: torch.Tensor, group_numel: int) -> bool:
    if value.dim() == 0:
        return not value.is_complex() or param.is_complex()  # step counters and scalars
    if value.is_floating_point() != param.is_floating_point() or value.is_complex() != param.is_complex():
        return False
    if value.numel() == group_numel and value.dim() == 1:
        return True  # a flat buffer over the whole group (LBFGS)
    try:
        return torch.broadcast_shapes(value.shape, param.shape) == param.shape
    except RuntimeError:
        return False


def _check_like(live: dict[str, Any], saved: Any, where: str) -> None:
    """`saved` has the type of every key `live` has, where both have it (a wrong type would fail only later)."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where} state must be a mapping, not a {type(saved).__name__}")
    for key, value in saved.items():
        if key in live and live[key] is not None and value is not None and not _same_kind(live[key], value):
            raise CheckpointError(
                f"{where} {key!r} is a {type(value).__name__} where a {type(live[key]).__name__} belongs; "
                "load it into the scheduler it was saved from"
            )


def _same_kind(live: Any, saved: Any) -> bool:
    numbers = (int, float)
    if isinstance(live, bool) or isinstance(saved, bool):
        return isinstance(live, bool) == isinstance(saved, bool)
    if isinstance(live, numbers):
        return isinstance(saved, numbers)
    if isinstance(live, (list, tuple)):
        return isinstance(saved, (list, tuple))
    return isinstance(saved, type(live))
