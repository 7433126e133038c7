"""`optimize()`: the same search from Python, for trainers built in code rather than from a spec.

    from zae_engine.sweep import optimize

    def train(values, pruning):
        model = TinyNet(hidden=values["hidden"])
        optimizer = torch.optim.Adam(model.parameters(), lr=values["lr"])
        trainer = ToyTrainer(model, "cpu", "train", optimizer, addons=[pruning])
        trainer.run(5, loader, valid_loader)
        return trainer                      # or its history, or the value itself

    study = optimize(train, {"lr": {"log_float": [1e-4, 1e-1]}, "hidden": {"int": [16, 64], "step": 16}},
                     metric="valid/acc", direction="maximize", trials=20)
    print(study.best_params)

Trials run one after another in this process (no pickling, so closures and notebooks work); run the same script
in several processes with one `storage` to search in parallel. Parameters, samplers, pruners, the objective
(`last`/`best`) and `trials` as the study's total mean exactly what they mean in a spec's `sweep:` section.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from pydantic import ValidationError

from zae_engine.errors import ConfigError, MissingMetricError, pydantic_message
from zae_engine.runs.recorder import error_summary
from zae_engine.sweep.objective import objective_value
from zae_engine.sweep.space import SweepSpec, suggest
from zae_engine.sweep.study import (
    StudySettings,
    claim,
    finish_complete,
    finish_failed,
    finish_pruned,
    finite,
    open_study,
    total_trials,
)


def optimize(
    train: Callable[[dict[str, Any], Any], Any],
    params: Mapping[str, Any],
    *,
    metric: str,
    direction: str,
    objective: str = "last",
    trials: int = 20,
    study: str = "sweep",
    storage: str | None = None,
    sampler: str = "tpe",
    pruner: str | Mapping[str, Any] = "median",
    seed: int | None = None,
    timeout: float | None = None,
    n_epoch: int = 0,
) -> optuna.Study:
    """Call `train(values, pruning)` once per trial until the study holds `trials` trials; return the study.

    `values` maps each name in `params` to the trial's value; `pruning` is an `OptunaPruningAddon` to attach to
    the trainer (`addons=[pruning]`). `train` returns the trainer, its `history`, or the value. A trial that
    raises is recorded as failed (with a warning) and the search goes on; `storage` None keeps the study in
    memory. `n_epoch` is the hyperband pruner's largest budget (0: Optuna infers it).
    """
    from zae_engine.trainer.addons.optuna_pruning import OptunaPruningAddon

    try:
        sweep = SweepSpec.model_validate(
            {
                "metric": metric,
                "direction": direction,
                "objective": objective,
                "params": dict(params),
                "trials": trials,
                "sampler": sampler,
                "pruner": pruner,
                "seed": seed,
            }
        )
    except ValidationError as err:
        raise ConfigError(pydantic_message("optimize", err)) from None
    if sampler == "grid" and any(p.grid() is None for p in sweep.params.values()):
        raise ConfigError("optimize: the grid sampler needs a finite set of values; give floats a step, or use choice")
    settings = StudySettings(study, storage or ":memory:", sweep.sampler, sweep.pruner, n_epoch, sweep.seed)
    found = open_study(settings, sweep, storage=None if storage else optuna.storages.InMemoryStorage())
    total = total_trials(sweep.trials, sweep.sampler, sweep)
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        trial = claim(found, total)
        if trial is None:
            break
        values = {key: suggest(trial, key, param) for key, param in sweep.params.items()}
        try:
            result = train(values, OptunaPruningAddon(trial=trial, monitor=metric))
            value = _value(result, sweep)
        except optuna.TrialPruned:
            finish_pruned(found, trial)
            continue
        except KeyboardInterrupt as exc:
            finish_failed(found, trial, str(exc) or "interrupted", status="interrupted")
            raise
        except MissingMetricError as exc:  # the search itself is wrong: every trial would fail alike
            finish_failed(found, trial, str(exc))
            raise
        except Exception as exc:
            finish_failed(found, trial, error_summary(exc))
            warnings.warn(f"optimize: trial {trial.number} failed: {error_summary(exc)}", RuntimeWarning, stacklevel=2)
            continue
        if finite(value):
            finish_complete(found, trial, value)
        else:
            finish_failed(found, trial, f"{metric} is {value} (the objective must be a finite number)")
    return found


def _value(result: Any, sweep: SweepSpec) -> float:
    history = getattr(result, "history", result)
    if isinstance(history, list):
        return objective_value(history, sweep.metric, sweep.objective, sweep.direction)
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return float(result)
    raise TypeError(
        f"train() returned {type(result).__name__}; return the trainer, its history (a list of epoch summaries), "
        "or the value"
    )


__all__ = ["optimize"]
