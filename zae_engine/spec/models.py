"""The run spec: pydantic models of the YAML file `zae validate` checks and `zae run` trains.

```yaml
trainer: {class_path: examples.toy.ToyTrainer, init_args: {gradient_clip: 1.0}}
device: cpu
model: {class_path: torch.nn.Linear, init_args: {in_features: 10, out_features: 2}}
optimizer: {class_path: torch.optim.Adam, init_args: {lr: 1.0e-3}}      # gets model.parameters() injected
scheduler: {class_path: zae_engine.schedulers.CosineAnnealingScheduler, init_args: {total_iters: 100}}
data:
  train: {dataset: {class_path: examples.toy.RandomDataset, init_args: {size: 1000}}, batch_size: 32, shuffle: true}
addons:
  - {name: state_manager, save_path: runs/demo}                      # name + that add-on's Config fields
run: {n_epoch: 10, seed: 0}
```

This module imports neither torch nor any add-on, so `zae schema` stays fast. Checking that class paths import
and that add-on fields fit their `Config` is `zae_engine.spec.build`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from zae_engine.errors import did_you_mean
from zae_engine.spec.source import (
    FieldPath,
    Problem,
    SpecSource,
    apply_overrides,
    read_spec_or_sweep_file,
)
from zae_engine.sweep.space import SweepSpec
from zae_engine.trainer.config import TrainerConfig

CLASS_PATH = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(_Strict):
    """Something built from an importable class: `class_path` plus the keyword arguments for it."""

    class_path: str = Field(
        pattern=CLASS_PATH,
        description="'package.module.Name' or 'package.module:Name', importable from the current directory "
        "or the spec's folder",
    )
    init_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the class")


class TrainerArgs(TrainerConfig):
    """The Trainer's own keyword options (see zae_engine.trainer.config); add-on options go under `addons`."""

    mode: Literal["train", "test"] = Field("train", description="'train' updates weights; 'test' only evaluates")


class TrainerSpec(_Strict):
    class_path: str = Field(pattern=CLASS_PATH, description="your Trainer subclass (it defines train_step/test_step)")
    init_args: TrainerArgs = Field(default_factory=TrainerArgs, description="the Trainer's options")


class LoaderSpec(_Strict):
    """A torch DataLoader over a dataset component."""

    dataset: Component
    batch_size: int = Field(1, ge=1)
    shuffle: StrictBool = False
    num_workers: int = Field(0, ge=0, description="loader worker processes (each seeded from run.seed)")
    drop_last: StrictBool = False
    pin_memory: StrictBool = False
    collate_fn: str | None = Field(None, pattern=CLASS_PATH, description="class path of a collate function")
    stateful: StrictBool | None = Field(
        None,
        description="build torchdata's StatefulDataLoader (its position, workers' included, goes into mid-epoch "
        "checkpoints): null (default) when torchdata is installed, true to require it, false for a plain DataLoader",
    )


class DataSpec(_Strict):
    train: LoaderSpec = Field(description="the loader `run` iterates every epoch (test mode: evaluates)")
    valid: LoaderSpec | None = Field(None, description="validated after every training epoch")


class AddOnEntry(BaseModel):
    """One add-on: `name` of a registered add-on (or `class_path` of a local one) plus exactly its Config fields.

    `- {name: state_manager, save_path: runs/x}` builds `StateManagerAddon(save_path="runs/x")`; see
    `zae addons show NAME` for each add-on's fields.
    """

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    name: str | None = Field(None, min_length=1, description="registry name, e.g. state_manager, mpu, wandb")
    class_path: str | None = Field(
        None, pattern=CLASS_PATH, description="instead of a name: an add-on class of your own, e.g. my_addons.PrintLR"
    )

    @model_validator(mode="after")
    def _one_way_to_find_it(self) -> AddOnEntry:
        if (self.name is None) == (self.class_path is None):
            raise ValueError("give the add-on's registry `name` or a `class_path` (exactly one of them)")
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def label(self) -> str:
        return self.name or str(self.class_path)


class RunOptions(_Strict):
    n_epoch: int = Field(ge=0, description="epochs to train (or evaluate, in test mode)")
    seed: int | None = Field(0, description="seeds python, numpy, torch and loader workers; null leaves them alone")
    deterministic: StrictBool = Field(False, description="ask torch for deterministic kernels (slower)")
    record: StrictBool = Field(
        True,
        description="leave a run record under runs/ for `zae runs` (the run_log add-on with its defaults, unless "
        "the spec lists its own); false, or `zae run --no-record`, leaves none",
    )


class RunSpec(_Strict):
    """One training run."""

    trainer: TrainerSpec
    device: str | list[str] = Field("cpu", description="'cpu', 'cuda', 'cuda:1', or a list (needs a launcher add-on)")
    model: Component
    optimizer: Component | None = Field(None, description="built with the model's parameters first (injected)")
    scheduler: Component | None = Field(None, description="built with the optimizer first (injected)")
    data: DataSpec
    addons: list[AddOnEntry] = Field(default_factory=list)
    run: RunOptions
    sweep: SweepSpec | None = Field(None, description="a hyper-parameter search over this spec (`zae sweep`)")


def load_spec(path: str | Path, overrides: list[str] | None = None) -> tuple[RunSpec, SpecSource]:
    """Read, interpolate, override and validate a spec file (or a sweep file naming one); SpecError lists every
    problem."""
    source = read_spec_or_sweep_file(path)
    apply_overrides(source, overrides or [])
    return validate_spec(source), source


def validate_spec(source: SpecSource) -> RunSpec:
    try:
        return RunSpec.model_validate(source.data)
    except ValidationError as err:
        raise source.error(problems_from_pydantic(err, source.data, RunSpec)) from None


def problems_from_pydantic(
    err: ValidationError, data: Any, model: type[BaseModel], prefix: FieldPath = (), owner: str = ""
) -> list[Problem]:
    """One Problem per field; union-branch labels dropped, unknown keys get "did you mean"."""
    merged: dict[FieldPath, tuple[list[str], str]] = {}
    for item in err.errors():
        path = _real_path(item["loc"], data)
        got = ""
        if item["type"] == "extra_forbidden":
            known = _fields_at(model, path[:-1])
            message = f"unknown key '{path[-1]}'{did_you_mean(str(path[-1]), known)}"
            if known:
                message += f"; allowed here: {', '.join(known)}"
        elif item["type"] == "missing":
            message = "required, but missing"
        elif item["type"] == "model_type":
            message, got = "expected a mapping of keys to values here", f" (got {item['input']!r})"
            if len(path) == 2 and path[0] == "addons":
                message += ", e.g. - {name: state_manager, save_path: runs/x}"
        else:
            message, got = item["msg"].removeprefix("Value error, "), f" (got {item['input']!r})"
        messages, _ = merged.setdefault(path, ([], got))
        if message not in messages:
            messages.append(message)
    lead = f"{owner}: " if owner else ""
    return [Problem((*prefix, *path), lead + " or ".join(msgs) + got) for path, (msgs, got) in merged.items()]


def _real_path(loc: tuple, data: Any) -> FieldPath:
    """Drop pydantic's union labels ('str', 'list[str]', ...) by walking the data alongside the location."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            path.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            path.append(part)
            node = node[part] if part < len(node) else None
        elif node is None and isinstance(part, str) and not path[-1:] == [part]:
            path.append(part)
    return tuple(path)


def _fields_at(model: type[BaseModel], path: FieldPath) -> list[str]:
    """Field names of the model found at `path` inside `model` (empty if none)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        current = _model_of(current.model_fields[part].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union) or str(get_origin(annotation)) == "<class 'types.UnionType'>":
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None
