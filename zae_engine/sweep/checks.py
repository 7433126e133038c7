"""Loading a sweep and checking its search space against the spec it searches, before any trial runs.

The spec's own values pass `zae validate` first (including `preflight`). Then every parameter's path must lead
somewhere the spec accepts, and every value a trial could get at the edges of its range (low and high bound, a
middle value for floats, each choice) must pass the same checks a written value passes: the spec's own fields
(trainer options, loaders, `run`), each add-on's Config, each constructor's keywords and their annotated types.
What a value of the model, optimizer or scheduler does is tried for real, the way `preflight` does it: the model
built on PyTorch's `meta` device (no memory, no weights), the optimizer over its parameters, the scheduler over
that optimizer — but only when the spec's own model builds on `meta`, so a model that cannot be probed cheaply is
never built for real once per value. Datasets are not built per value (that may read a disk); their arguments
are checked by name and type.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from zae_engine.spec.build import RunPlan, check_spec
from zae_engine.spec.models import validate_spec
from zae_engine.spec.source import SpecError
from zae_engine.sweep.plan import SweepPlan
from zae_engine.sweep.space import ChoiceParam, grid_space

_HERE = "\x00sweep-value"  # the origin of a probed value; stripped from messages, which name the parameter instead
_PROBED = ("model", "optimizer", "scheduler")
_YAML_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def load_sweep(path: str | Path, overrides: list[str] | None = None, sampler: str | None = None) -> SweepPlan:
    """Read a spec with a sweep section (or a sweep file naming a spec), check it as `zae validate` does, then
    its search space."""
    from zae_engine.spec.models import load_spec
    from zae_engine.spec.preflight import preflight

    spec, source = load_spec(path, overrides)
    if spec.sweep is None:
        raise SpecError(
            [
                f"{path}: no `sweep:` section; add one (metric, direction, params), or write a sweep file with "
                "`spec: <run spec>` and `sweep:`"
            ]
        )
    run_plan = check_spec(spec, source)
    preflight(run_plan)  # the spec's own values: everything `zae validate` checks
    plan = SweepPlan(run_plan)
    check_space(plan, sampler)
    return plan


def check_space(plan: SweepPlan, sampler: str | None = None) -> None:
    """Raise SpecError (one line per parameter, naming its file and line) if the search cannot run as written."""
    problems: list[str] = []
    sweep = plan.sweep
    keys = sorted(sweep.params)
    for a, b in zip(keys, keys[1:]):
        if b.startswith(a + "."):
            problems.append(
                f"{plan.source.where(('sweep', 'params', b))}: sweep.params.{b}: lies inside sweep.params.{a}, "
                "which is searched as a whole; keep one of them"
            )
    devices = plan.spec.device if isinstance(plan.spec.device, list) else [plan.spec.device]
    if len(devices) > 1:
        problems.append(
            f"{plan.source.where(('device',))}: device: a sweep runs each trial in one process on one device; "
            "sweep on one device, then train best.yaml on several"
        )
    if any(entry.name == "optuna_pruning" for entry in plan.spec.addons):
        index = next(i for i, e in enumerate(plan.spec.addons) if e.name == "optuna_pruning")
        problems.append(
            f"{plan.source.where(('addons', index))}: addons[{index}]: zae sweep attaches optuna_pruning to every "
            "trial itself; remove this entry"
        )
    if (sampler or sweep.sampler) == "grid" and grid_space(sweep) is None:
        for key, param in sweep.params.items():
            if param.grid() is None:
                problems.append(
                    f"{plan.source.where(('sweep', 'params', key))}: sweep.params.{key}: the grid sampler needs a "
                    "finite set of values; give this float a step, or use {choice: [...]}"
                )
    probes = _Probes(plan.run_plan)
    for key, param in sweep.params.items():
        problem = _check_param(plan, key, param, probes)
        if problem:
            problems.append(problem)
    if problems:
        raise SpecError(problems)


def _check_param(plan: SweepPlan, key: str, param: Any, probes: _Probes) -> str | None:
    where = f"{plan.source.where(('sweep', 'params', key))}: sweep.params.{key}"
    failures: list[tuple[str, Any, str]] = []
    values = param.check_values()
    for label, value in values:
        reason = _refusal(plan, key, value, probes)
        if reason is not None:
            failures.append((label, value, reason))
    if not failures:
        return None
    if len(failures) == len(values) and len({reason for _, _, reason in failures}) == 1:
        return f"{where}: {failures[0][2]}"  # every value fails alike: the path itself is wrong
    label, value, reason = failures[0]
    hint = ""
    if isinstance(param, ChoiceParam) and isinstance(value, str) and _YAML_FLOAT_TEXT.match(value):
        hint = f" (YAML reads {value} as text; write it with a dot, e.g. {_with_dot(value)})"
    return f"{where}: the {label} {value!r} is refused{hint}: {reason}"


def _refusal(plan: SweepPlan, key: str, value: Any, probes: _Probes) -> str | None:
    """Why the spec refuses `value` at `key`, or None."""
    from zae_engine.spec.preflight import argument_problems

    try:
        source = plan.with_values({key: value}, origin=_HERE)
        spec = validate_spec(source)
        trial_plan = check_spec(spec, source)
        component = _component_of(key)
        problems = argument_problems(trial_plan, component) if component else []
        if problems:
            raise source.error(problems)
    except SpecError as exc:
        return "; ".join(_without_origin(line) for line in exc.lines)
    if key.split(".", 1)[0] in _PROBED:
        return probes.refusal(trial_plan)
    return None


def _component_of(key: str) -> tuple[str, ...] | None:
    """The component whose arguments `key` sets: ("model",), ("data", "train", "dataset"), ... or None."""
    for path in (("model",), ("optimizer",), ("scheduler",), *(("data", n, "dataset") for n in ("train", "valid"))):
        dotted = ".".join(path)
        if key == dotted or key.startswith(dotted + "."):
            return path
    return None


def _without_origin(line: str) -> str:
    return line[len(_HERE) + 2 :] if line.startswith(_HERE + ": ") else line


def _with_dot(text: str) -> str:
    mantissa, _, exponent = text.lower().partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}"


class _Probes:
    """Model, optimizer and scheduler built the cheap way; only if the spec's own model builds on `meta`."""

    def __init__(self, base: RunPlan) -> None:
        self._cheap = _build_chain(base) is None

    def refusal(self, plan: RunPlan) -> str | None:
        return _build_chain(plan) if self._cheap else None


def _build_chain(plan: RunPlan) -> str | None:
    """Model on the meta device, the optimizer over its parameters, the scheduler over that optimizer (as
    `preflight` builds them); the first failure as text, or None."""
    import torch

    spec = plan.spec
    built: dict[str, Any] = {}
    steps = [("model", spec.model, ())]
    if spec.optimizer is not None:
        steps.append(("optimizer", spec.optimizer, ("model",)))
    if spec.scheduler is not None:
        steps.append(("scheduler", spec.scheduler, ("optimizer",)))
    for section, component, needs in steps:
        target = plan.classes[(section,)]
        injected = [built["model"].parameters()] if needs == ("model",) else [built[n] for n in needs]
        try:
            if section == "model":
                with torch.device("meta"):
                    built[section] = target(**component.init_args)
            else:
                built[section] = target(*injected, **component.init_args)
        except Exception as exc:
            args = ", ".join(f"{k}={v!r}" for k, v in component.init_args.items())
            message = " ".join(str(exc).split())[:300]
            return f"{component.class_path}({args}) fails: {type(exc).__name__}: {message}"
    return None


__all__ = ["check_space", "load_sweep"]
