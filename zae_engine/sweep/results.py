"""A study's trials as rows and JSON, for the live view, `zae sweep show` and `best.yaml`."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from zae_engine.sweep.display import TrialRow
from zae_engine.sweep.space import SweepSpec, decoded
from zae_engine.sweep.study import ERROR, FINGERPRINT, SPEC, shown_state, visible

RUN = "zae.run"  # the trial's run record id


def trial_row(trial: FrozenTrial, sweep: SweepSpec | None) -> TrialRow:
    state = shown_state(trial)
    steps = sorted(trial.intermediate_values)
    value = trial.value if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) else None
    if value is None and steps and state == "running":
        value = trial.intermediate_values[steps[-1]]
    seconds = None
    if trial.datetime_start is not None:
        end = trial.datetime_complete
        if end is None and state == "running":
            from datetime import datetime

            end = datetime.now()
        seconds = (end - trial.datetime_start).total_seconds() if end is not None else None
    error = trial.user_attrs.get(ERROR) if state != "complete" else None
    params = decoded(sweep, trial.params) if sweep is not None else dict(trial.params)
    return TrialRow(
        trial.number, state, value, params, steps[-1] if steps else None, seconds, error, trial.user_attrs.get(RUN)
    )


def trial_rows(study: optuna.Study, sweep: SweepSpec | None) -> list[TrialRow]:
    return [trial_row(t, sweep) for t in visible(study.get_trials(deepcopy=False))]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def recorded_sweep(study: optuna.Study) -> SweepSpec | None:
    """The search the study was made with (stored in the study by `zae sweep`), or None for a foreign study."""
    bound = study.user_attrs.get(FINGERPRINT)
    if not isinstance(bound, dict):
        return None
    try:
        return SweepSpec.model_validate({k: bound[k] for k in ("metric", "direction", "objective", "params")})
    except Exception:
        return None


def summary(study: optuna.Study, sweep: SweepSpec | None) -> dict[str, Any]:
    """`zae sweep show --json`: the study, every trial, and the best one."""
    rows = trial_rows(study, sweep)
    best = best_trial(study)
    best_row = next((row for row in rows if best is not None and row.number == best.number), None)
    return {
        "study": study.study_name,
        "metric": sweep.metric if sweep else None,
        "direction": study.direction.name.lower(),
        "objective": sweep.objective if sweep else None,
        "spec": study.user_attrs.get(SPEC),
        "trials": [row.as_json() for row in rows],
        "best": best_row.as_json() if best_row else None,
    }


__all__ = ["RUN", "best_trial", "recorded_sweep", "summary", "trial_row", "trial_rows"]
