"""What describes a run, for whoever records or reports it: the settings, and its best epoch.

One place for the run records (`run_log`), the experiment trackers and the `zae run` summary, so they agree.
"""

from __future__ import annotations

import json
from typing import Any

from zae_engine.redact import masked


def run_configuration(trainer: Any) -> dict[str, Any]:
    """Trainer options, model and optimizer classes, every add-on's options and the `zae run` spec: JSON-safe,
    with secrets (api keys, tokens) masked."""
    model = trainer.unwrapped_model
    config: dict[str, Any] = {
        "trainer": {"class": type(trainer).__name__, **trainer.config.model_dump()},
        "model": {"class": _qualname(model), "parameters": sum(p.numel() for p in model.parameters())},
        "addons": {name: addon.config.model_dump() for name, addon in trainer.addons.items()},
    }
    if trainer.optimizer is not None:
        hyper = {k: v for k, v in trainer.optimizer.param_groups[0].items() if k != "params"}
        config["optimizer"] = {"class": _qualname(trainer.optimizer), **hyper}
    if trainer.scheduler is not None:
        config["scheduler"] = {"class": _qualname(trainer.scheduler)}
    spec = getattr(trainer, "run_spec", None)
    if spec:
        config["spec"] = spec
    return masked(json.loads(json.dumps(config, default=repr)))


def best_epoch(trainer: Any) -> dict[str, Any] | None:
    """{metric, value, epoch, mode} of the best epoch so far: by the state manager's monitor when it has one,
    else by the trainer's own best metric (valid/loss, else train/loss)."""
    config = getattr(trainer.addons.get("state_manager"), "config", None)
    monitor = getattr(config, "monitor", None)
    metric = monitor or (trainer.best or {}).get("metric")
    if metric is None:
        return None
    mode = config.monitor_mode if monitor else "min"
    scored = [(h[metric], h["epoch"]) for h in trainer.history if isinstance(h.get(metric), (int, float))]
    scored = [(value, epoch) for value, epoch in scored if value == value]  # NaN never counts
    if not scored:
        return None
    value, epoch = (max if mode == "max" else min)(scored, key=lambda pair: pair[0])
    return {"metric": metric, "value": value, "epoch": epoch, "mode": mode}


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
