"""The `sweep:` section of a run spec: what to search, how, and what counts as good.

```yaml
sweep:
  metric: valid/acc                  # an epoch-summary key
  direction: maximize                # or minimize
  objective: last                    # the last epoch's value (default), or `best`: the best epoch's
  params:                            # dotted paths, exactly as `zae run --set` takes them
    optimizer.init_args.lr: {log_float: [1.0e-4, 1.0e-1]}
    model.init_args.hidden: {int: [16, 128], step: 16}
    trainer.init_args.precision: {choice: [fp32, bf16]}
```

This module imports neither torch nor optuna: the spec models embed it, and `zae schema` must stay fast.
A parameter's sampled value is handed to a trial as a Python object (never as YAML text), so `1e-05` stays a float.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)

Scalar = None | bool | int | float | str

PARAM_FORMS = (
    "{log_float: [lo, hi]}, {float: [lo, hi]} (optional step), {int: [lo, hi]} (optional step) or {choice: [...]}"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogFloatParam(_Strict):
    """A float drawn evenly on a log scale between `lo` and `hi` (both > 0): learning rates, weight decay."""

    bounds: tuple[float, float] = Field(alias="log_float", description="[lo, hi], 0 < lo < hi")

    @field_validator("bounds")
    @classmethod
    def _positive_and_ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        lo, hi = bounds
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("bounds must be finite numbers")
        if lo <= 0:
            raise ValueError(f"a log scale needs lo > 0 (got {lo}); use {{float: [lo, hi]}} to include 0 or below")
        if lo >= hi:
            raise ValueError(f"lo must be below hi (got [{lo}, {hi}])")
        return bounds

    def check_values(self) -> list[tuple[str, Any]]:
        lo, hi = self.bounds
        return [("low bound", lo), ("high bound", hi), ("middle value", math.sqrt(lo * hi))]

    def grid(self) -> list[Any] | None:
        return None


class FloatParam(_Strict):
    """A float between `lo` and `hi`, evenly; with `step`, only lo, lo + step, ..., hi."""

    bounds: tuple[float, float] = Field(alias="float", description="[lo, hi], lo < hi")
    step: float | None = Field(None, gt=0, description="spacing of the allowed values; hi - lo must be a multiple")

    @model_validator(mode="after")
    def _ordered_and_reachable(self) -> FloatParam:
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("bounds must be finite numbers")
        if lo >= hi:
            raise ValueError(f"lo must be below hi (got [{lo}, {hi}])")
        if self.step is not None:
            steps = (hi - lo) / self.step
            if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
                raise ValueError(
                    f"hi - lo ({hi - lo:g}) is not a multiple of step {self.step:g}; "
                    f"make hi {lo + math.floor(steps) * self.step:g} or {lo + math.ceil(steps) * self.step:g}"
                )
        return self

    def check_values(self) -> list[tuple[str, Any]]:
        lo, hi = self.bounds
        return [("low bound", lo), ("high bound", hi), ("middle value", (lo + hi) / 2)]

    def grid(self) -> list[Any] | None:
        if self.step is None:
            return None
        lo, hi = self.bounds
        return [lo + i * self.step for i in range(round((hi - lo) / self.step) + 1)]


class IntParam(_Strict):
    """A whole number from `lo` to `hi` inclusive, in steps of `step`."""

    bounds: tuple[StrictInt, StrictInt] = Field(alias="int", description="[lo, hi], lo < hi")
    step: StrictInt = Field(1, ge=1, description="spacing of the allowed values; hi - lo must be a multiple")
    log: StrictBool = Field(False, description="draw evenly on a log scale (needs lo >= 1 and step 1)")

    @model_validator(mode="after")
    def _ordered_and_reachable(self) -> IntParam:
        lo, hi = self.bounds
        if lo >= hi:
            raise ValueError(f"lo must be below hi (got [{lo}, {hi}])")
        if (hi - lo) % self.step:
            below = lo + (hi - lo) // self.step * self.step
            raise ValueError(
                f"hi - lo ({hi - lo}) is not a multiple of step {self.step}; make hi {below} or {below + self.step}"
            )
        if self.log and (lo < 1 or self.step != 1):
            raise ValueError("log: true needs lo >= 1 and step 1")
        return self

    def check_values(self) -> list[tuple[str, Any]]:
        lo, hi = self.bounds
        return [("low bound", lo), ("high bound", hi)]

    def grid(self) -> list[Any] | None:
        lo, hi = self.bounds
        return list(range(lo, hi + 1, self.step))


class ChoiceParam(_Strict):
    """One of the listed values: names, numbers, booleans, or whole sections (lists, mappings)."""

    choices: list[Any] = Field(alias="choice", min_length=1, description="the values to choose from")

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Any]) -> list[Any]:
        seen = set()
        for value in choices:
            text = json.dumps(value, sort_keys=True, default=str)
            if text in seen:
                raise ValueError(f"{value!r} is listed twice")
            seen.add(text)
        return choices

    @property
    def encoded(self) -> bool:
        """Optuna stores only None/bool/int/float/str choices: lists and mappings travel as JSON text."""
        return any(not isinstance(value, (type(None), bool, int, float, str)) for value in self.choices)

    def stored(self) -> list[Scalar]:
        return [json.dumps(v, sort_keys=True) for v in self.choices] if self.encoded else list(self.choices)

    def decode(self, stored: Any) -> Any:
        return json.loads(stored) if self.encoded else stored

    def check_values(self) -> list[tuple[str, Any]]:
        return [("choice", value) for value in self.choices]

    def grid(self) -> list[Any] | None:
        return self.stored()


def _param_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return {LogFloatParam: "log_float", FloatParam: "float", IntParam: "int", ChoiceParam: "choice"}.get(
            type(value)
        )
    if not isinstance(value, dict):
        return None
    kinds = [kind for kind in ("log_float", "float", "int", "choice") if kind in value]
    return kinds[0] if len(kinds) == 1 else None


Param = Annotated[
    Annotated[LogFloatParam, Tag("log_float")]
    | Annotated[FloatParam, Tag("float")]
    | Annotated[IntParam, Tag("int")]
    | Annotated[ChoiceParam, Tag("choice")],
    Discriminator(
        _param_kind,
        custom_error_type="sweep_param",
        custom_error_message=f"a search parameter is exactly one of {PARAM_FORMS}",
    ),
]


class PrunerSpec(_Strict):
    """How hopeless trials are stopped early (each trial reports `metric` after every epoch)."""

    name: Literal["median", "hyperband", "none"] = Field(
        "median",
        description="'median': stop a trial whose value is worse than the median of finished trials at the same "
        "epoch; 'hyperband': successive halving over epochs; 'none': every trial runs to the end",
    )
    startup_trials: int = Field(5, ge=0, description="median: trials that must finish before any is pruned")
    warmup_epochs: int = Field(
        0,
        ge=0,
        description="epochs a trial always completes before it can be pruned (0: it can be pruned after its first)",
    )


class SweepSpec(_Strict):
    """A hyper-parameter search over this spec (`zae sweep`); `zae run` ignores this section."""

    metric: str = Field(min_length=1, description="epoch-summary key to optimise, e.g. valid/acc or valid/loss")
    direction: Literal["maximize", "minimize"] = Field(description="whether a higher or a lower metric is better")
    objective: Literal["last", "best"] = Field(
        "last",
        description="a trial's value: the metric at its last epoch (the model you end with), or at its best "
        "epoch (use with early stopping or a best-checkpoint policy)",
    )
    params: dict[str, Param] = Field(
        min_length=1, description="dotted spec paths, exactly as `zae run --set` takes them -> search range"
    )
    trials: int = Field(20, ge=1, description="the study's total number of trials (`--trials` overrides)")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="how values are picked (`--sampler`)")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec, description="early stopping of trials (`--pruner`)")
    seed: int | None = Field(None, description="the sampler's seed; null: different values on every run")

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("params")
    @classmethod
    def _paths_look_like_paths(cls, params: dict[str, Any]) -> dict[str, Any]:
        for key in params:
            if not key or any(not part for part in key.split(".")) or key.strip() != key:
                raise ValueError(f"'{key}' is not a dotted spec path such as optimizer.init_args.lr")
            if key == "sweep" or key.startswith("sweep."):
                raise ValueError(f"'{key}': the sweep section cannot search over itself")
        return params


def grid_space(spec: SweepSpec) -> dict[str, list[Any]] | None:
    """Every parameter's finite list of (stored) values, or None when one has none (a continuous range)."""
    space = {key: param.grid() for key, param in spec.params.items()}
    return None if any(values is None for values in space.values()) else space  # type: ignore[return-value]


def grid_size(spec: SweepSpec) -> int:
    space = grid_space(spec) or {}
    return math.prod(len(values) for values in space.values())


def suggest(trial: Any, key: str, param: Any) -> Any:
    """Ask an Optuna trial for this parameter's value, as the Python object the spec field gets."""
    if isinstance(param, LogFloatParam):
        return trial.suggest_float(key, *param.bounds, log=True)
    if isinstance(param, FloatParam):
        return trial.suggest_float(key, *param.bounds, step=param.step)
    if isinstance(param, IntParam):
        return trial.suggest_int(key, *param.bounds, step=param.step, log=param.log)
    return param.decode(trial.suggest_categorical(key, param.stored()))


def decoded(spec: SweepSpec, stored: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored params as the values the spec fields got (JSON-encoded choices decoded)."""
    result = {}
    for key, value in stored.items():
        param = spec.params.get(key)
        result[key] = param.decode(value) if isinstance(param, ChoiceParam) else value
    return result


def fingerprint(spec: SweepSpec) -> dict[str, Any]:
    """What a study is bound to: resuming it with another search would mix incomparable trials."""
    return {
        "metric": spec.metric,
        "direction": spec.direction,
        "objective": spec.objective,
        "params": {key: param.model_dump(mode="json", by_alias=True) for key, param in sorted(spec.params.items())},
    }


__all__ = [
    "ChoiceParam",
    "FloatParam",
    "IntParam",
    "LogFloatParam",
    "Param",
    "PrunerSpec",
    "SweepSpec",
    "decoded",
    "fingerprint",
    "grid_size",
    "grid_space",
    "suggest",
]
