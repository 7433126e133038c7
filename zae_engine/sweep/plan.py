"""A sweep before it runs: the spec and its `sweep:` section, checked, and the spec each trial gets.

A trial's spec is the base spec (the file after `--set`, without its sweep section) with the trial's values put at
their dotted paths as Python objects. `best.yaml` is exactly that spec for the best trial; what a trial adds for
itself only (its run record's name and tags, a checkpoint folder of its own, the pruning add-on) changes no
number, so `zae run best.yaml` trains the best trial again, bit for bit.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zae_engine.spec.build import RunPlan
from zae_engine.spec.models import RunSpec
from zae_engine.spec.source import SpecError, SpecSource, set_field, with_env_templates
from zae_engine.sweep.space import SweepSpec

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SWEEPS_FOLDER = "sweeps"


@dataclass
class SweepPlan:
    """A checked spec with a sweep section."""

    run_plan: RunPlan  # check_spec of the base values

    @property
    def source(self) -> SpecSource:
        return self.run_plan.source

    @property
    def spec(self) -> RunSpec:
        return self.run_plan.spec

    @property
    def sweep(self) -> SweepSpec:
        assert self.spec.sweep is not None
        return self.spec.sweep

    def param_origin(self, key: str) -> str:
        """Where the parameter is written: 'spec.yaml:14 (sweep.params.optimizer.init_args.lr)'."""
        return f"{self.source.where(('sweep', 'params', key))} (sweep.params.{key})"

    def base_source(self) -> SpecSource:
        """The spec without its sweep section: what every trial starts from."""
        data = {k: copy.deepcopy(v) for k, v in self.source.data.items() if k != "sweep"}
        return SpecSource(
            path=self.source.path,
            data=data,
            lines=self.source.lines,
            env_templates={p: t for p, t in self.source.env_templates.items() if p[:1] != ("sweep",)},
            overrides=dict(self.source.overrides),
            parts={},
        )

    def with_values(self, values: dict[str, Any], origin: str | None = None) -> SpecSource:
        """The base spec with `values` (dotted path -> Python object) put in place."""
        source = self.base_source()
        for key, value in values.items():
            set_field(source, key, value, origin if origin is not None else self.param_origin(key))
        return source

    def runs_dir(self) -> Path:
        """Where this spec's runs are recorded (its run_log entry's `dir`, else `runs`)."""
        for entry in self.spec.addons:
            if entry.name == "run_log" and isinstance(entry.options.get("dir"), str):
                return Path(entry.options["dir"])
        return Path("runs")

    def study_folder(self, study: str) -> Path:
        return study_folder(self.runs_dir(), study)


def study_folder(runs_dir: Path, study: str) -> Path:
    return runs_dir / SWEEPS_FOLDER / study


def check_study_name(name: str) -> str:
    """A study name is also a folder name: letters, digits, '.', '_', '-' (no path tricks)."""
    if not STUDY_NAME.match(name) or name in (".", ".."):
        raise SpecError(
            [f"--study {name!r}: use letters, digits, '.', '_' and '-' (it names the folder runs/sweeps/<study>)"]
        )
    return name


def default_study_name(spec_path: Path) -> str:
    """The spec file's name without its suffix, made folder-safe: `examples/specs/sweep.yaml` -> `sweep`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", spec_path.stem).strip("-.") or "sweep"
    return name[:100]


def trial_source(plan: SweepPlan, values: dict[str, Any], study: str, number: int, record: bool = True) -> SpecSource:
    """The spec one trial trains: the values in place, plus its own run-record tags and checkpoint folder."""
    source = plan.with_values(values)
    origin = f"trial {number} of study {study}"
    addons = source.data.setdefault("addons", [])
    if not isinstance(addons, list):  # validated earlier; keep the shape the spec model wants
        return source
    for index, entry in enumerate(addons):
        if isinstance(entry, dict) and entry.get("name") == "state_manager":
            folder = Path(str(entry.get("save_path", "./checkpoints"))) / study / f"trial-{number}"
            set_field(source, f"addons.{index}.save_path", str(folder), origin)
    if record and source.data.get("run", {}).get("record", True) is not False:
        names = [entry.get("name") if isinstance(entry, dict) else None for entry in addons]
        if "run_log" not in names:
            addons.append({"name": "run_log"})
        index = [entry.get("name") if isinstance(entry, dict) else None for entry in addons].index("run_log")
        tags = dict(addons[index].get("tags") or {})
        tags.update({"study": study, "trial": str(number)})
        set_field(source, f"addons.{index}.tags", tags, origin)
        if not addons[index].get("run_name"):
            set_field(source, f"addons.{index}.run_name", f"{study}-{number}", origin)
    return source


def spec_text_data(plan: SweepPlan, values: dict[str, Any]) -> dict[str, Any]:
    """The best trial's spec as data to write out: `${VAR}` fields keep their placeholder, secrets stay out."""
    source = plan.with_values(values)
    return with_env_templates(source.data, source)


__all__ = [
    "SweepPlan",
    "check_study_name",
    "default_study_name",
    "spec_text_data",
    "study_folder",
    "trial_source",
]
