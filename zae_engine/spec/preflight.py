"""What `zae validate` checks beyond the spec's own fields, without training and without writing anything.

- every `init_args` value against the annotated parameter of the class it goes to (pydantic, lax: `3` is a fine
  float; unannotated parameters pass);
- the devices exist on this machine;
- the model is built on the `meta` device (no memory, no weights), the optimizer over its parameters and the
  scheduler over the optimizer: a negative learning rate or impossible betas fail here;
- the datasets are built for real (their `__init__` errors point at the spec line);
- the trainer is assembled around the meta model with every add-on attached, so each add-on's own checks run
  (a `save_path` that cannot be written, tracker settings the client does not take, ...).
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from zae_engine.errors import ConfigError
from zae_engine.spec.build import RunPlan, _build, _loaders
from zae_engine.spec.models import Component
from zae_engine.spec.source import FieldPath, Problem

_LAX = ConfigDict(arbitrary_types_allowed=True)


def preflight(plan: RunPlan) -> None:
    """Raise SpecError (file, line, field) for the first kind of problem found; return quietly when all is well."""
    from zae_engine.trainer.devices import parse_devices

    spec, source = plan.spec, plan.source
    _check_types(plan)
    try:
        parse_devices(spec.device)
    except ConfigError as exc:
        raise source.fail(("device",), str(exc).removeprefix("Trainer: ")) from None
    model = _meta_model(plan)
    optimizer = _build(plan, ("optimizer",), spec.optimizer, model.parameters()) if spec.optimizer else None
    scheduler = _build(plan, ("scheduler",), spec.scheduler, optimizer) if spec.scheduler else None
    for name, loader in _loaders(spec):
        _build(plan, ("data", name, "dataset"), loader.dataset)
    addons = [cls(**options) for cls, options in plan.addons]
    _check_folders(plan, addons)
    options = spec.trainer.init_args.model_dump()
    mode = options.pop("mode")
    try:
        plan.trainer_class(model, _first_device(spec.device), mode, optimizer, scheduler, addons=addons, **options)
    except ConfigError as exc:
        raise source.fail(owner_of(plan, str(exc)), str(exc)) from None


def _check_folders(plan: RunPlan, addons: list[Any]) -> None:
    """Every add-on folder that will be written (a `save_path`) can be: found now, not when the run starts."""
    from zae_engine.checkpoint.folders import writable_folder_problem

    for index, addon in enumerate(addons):
        folder = getattr(addon.config, "save_path", None)
        problem = writable_folder_problem(folder) if isinstance(folder, str) else None
        if problem is not None:
            raise plan.source.fail(("addons", index, "save_path"), f"{addon.label()}: save_path {problem}")


def _first_device(device: str | list[str]) -> str:
    return device[0] if isinstance(device, list) else device


def _meta_model(plan: RunPlan) -> Any:
    """The model without its memory: on the meta device, or for real when its __init__ needs real values."""
    import torch

    try:
        with torch.device("meta"):
            return _build(plan, ("model",), plan.spec.model)
    except Exception as exc:  # noqa: BLE001 - a model that computes with its weights in __init__
        if "meta" not in str(exc):
            raise
    return _build(plan, ("model",), plan.spec.model)


def _check_types(plan: RunPlan) -> None:
    problems: list[Problem] = []
    for path, component in _components(plan):
        problems += _argument_problems(plan.classes[path], component, path)
    if problems:
        raise plan.source.error(problems)


def _components(plan: RunPlan) -> list[tuple[FieldPath, Component]]:
    spec = plan.spec
    found: list[tuple[FieldPath, Component]] = [(("model",), spec.model)]
    if spec.optimizer is not None:
        found.append((("optimizer",), spec.optimizer))
    if spec.scheduler is not None:
        found.append((("scheduler",), spec.scheduler))
    found += [(("data", name, "dataset"), loader.dataset) for name, loader in _loaders(spec)]
    return found


def _argument_problems(target: Any, component: Component, path: FieldPath) -> list[Problem]:
    hints = _hints(target)
    problems = []
    for key, value in component.init_args.items():
        if key not in hints:
            continue
        try:
            TypeAdapter(hints[key], config=_LAX).validate_python(value)
        except ValidationError as err:
            first = err.errors()[0]
            message = " or ".join(dict.fromkeys(e["msg"] for e in err.errors()))
            problems.append(
                Problem((*path, "init_args", key), f"{_name(target)}: {message} (got {first.get('input', value)!r})")
            )
        except Exception:  # noqa: BLE001 - an annotation pydantic cannot check: the build will tell
            continue
    return problems


def _hints(target: Any) -> dict[str, Any]:
    """Annotated parameters of the class's __init__ (or the function); none when they cannot be resolved."""
    function = target.__init__ if isinstance(target, type) else target
    try:
        hints = typing.get_type_hints(function)
        params = inspect.signature(target).parameters
    except Exception:  # noqa: BLE001 - forward references, builtins, C extensions
        return {}
    return {name: hint for name, hint in hints.items() if name in params and name != "return"}


def _name(target: Any) -> str:
    return getattr(target, "__qualname__", None) or repr(target)


def owner_of(plan: RunPlan, message: str) -> FieldPath:
    """The spec entry an error from assembling the trainer belongs to (an add-on's, else the trainer's)."""
    for index, (cls, _) in enumerate(plan.addons):
        if message.startswith(cls.label()):
            return ("addons", index)
    return ("trainer",)
