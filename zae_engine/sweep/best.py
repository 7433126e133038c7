"""`best.yaml`: the spec of the study's best trial, complete and without a sweep section, for `zae run`."""

from __future__ import annotations

from pathlib import Path

import yaml
from optuna.trial import FrozenTrial

from zae_engine.runs.files import write_atomic
from zae_engine.sweep.display import number
from zae_engine.sweep.plan import SweepPlan, spec_text_data
from zae_engine.sweep.space import decoded

BEST_NAME = "best.yaml"


def best_spec_text(plan: SweepPlan, study: str, trial: FrozenTrial) -> str:
    """The text of best.yaml; floats are written so YAML reads them back as the same floats (1.0e-05, not 1e-05)."""
    values = decoded(plan.sweep, trial.params)
    data = spec_text_data(plan, values)
    sweep = plan.sweep
    which = "last" if sweep.objective == "last" else "best"
    lines = [
        f"# The best trial of study '{study}': trial {trial.number}, {sweep.metric} = {number(trial.value)} "
        f"(its {which} epoch's value), made by zae sweep from {plan.source.path}.",
        "# The spec with that trial's values (below) and without its sweep section; train it again, from the folder",
        "# the sweep ran in, with: zae run {this file}",
        *[f"#   {key}: {value!r}" for key, value in values.items()],
    ]
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True, width=120)
    return "\n".join(lines) + "\n" + body


def write_best(plan: SweepPlan, study: str, trial: FrozenTrial, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / BEST_NAME
    write_atomic(path, best_spec_text(plan, study, trial).replace("{this file}", str(path)))
    return path


__all__ = ["BEST_NAME", "best_spec_text", "write_best"]
