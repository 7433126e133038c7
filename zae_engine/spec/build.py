"""From a validated spec to a ready trainer: `check_spec` (what `zae validate` does) and `build_run` (`zae run`).

`check_spec` imports every class path, checks `init_args` against each constructor's signature, loads the add-ons
named in the spec and validates each entry's options with that add-on's own `Config`, and checks that the add-ons
can share a trainer: everything short of building objects. `build_run` then seeds, builds model, optimizer (given
the model's parameters), scheduler (given the optimizer), datasets, loaders, one add-on instance per entry and
the trainer. Both report through `SpecSource`, so each problem names the file, line and field.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from zae_engine.errors import CompositionError, ConfigError, did_you_mean
from zae_engine.registry import AddOnError, get_addon
from zae_engine.spec.models import AddOnEntry, Component, LoaderSpec, RunSpec, problems_from_pydantic
from zae_engine.spec.source import FieldPath, Problem, SpecSource, dotted, with_env_templates
from zae_engine.trainer.addons.base import AddOnBase, LauncherAddon
from zae_engine.trainer.compose import check_class_set


@dataclass
class RunPlan:
    """Everything `zae validate` checked, ready for `build_run`."""

    spec: RunSpec
    source: SpecSource
    trainer_class: type
    classes: dict[FieldPath, Any] = field(default_factory=dict)  # component path -> resolved class/callable
    addons: list[tuple[type, dict[str, Any]]] = field(default_factory=list)  # one (class, options) per entry

    @property
    def run_spec(self) -> dict[str, Any]:
        """The resolved spec as plain data for trackers; `${SECRET}` fields keep their placeholder."""
        data = self.spec.model_dump(mode="json")
        if data.get("sweep") is None:
            data.pop("sweep", None)  # a plain run spec: no search, no key
        for entry in data.get("addons", []):  # an entry names its add-on one way: leave out the other
            for key in ("name", "class_path"):
                if entry.get(key) is None:
                    entry.pop(key, None)
        return with_env_templates(data, self.source)


@dataclass
class BuiltRun:
    trainer: Any
    loader: Any
    valid_loader: Any
    n_epoch: int


def add_import_roots(spec_path: Path) -> None:
    """Class paths resolve like `python -m` from the current directory, then from the spec's folder.

    Both go first on sys.path (cwd at 0, the spec's folder at 1), so a user's `utils.py` wins over an installed one.
    """
    for root in reversed([os.getcwd(), str(spec_path.resolve().parent)]):
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)


def resolve(class_path: str, source: SpecSource, path: FieldPath) -> Any:
    """Import `package.module.Name` / `package.module:Name`; a problem says whether the module or the name is wrong."""
    if ":" in class_path:
        module_name, _, attr_path = class_path.partition(":")
        return _attribute(_import(module_name, source, path), attr_path, class_path, source, path)
    parts = class_path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                continue  # this prefix is not a module: try a shorter one (Name may be nested)
            raise source.fail(path, _import_failed(module_name, exc)) from exc
        except Exception as exc:
            raise source.fail(path, _import_failed(module_name, exc)) from exc
        return _attribute(module, ".".join(parts[cut:]), class_path, source, path)
    if len(parts) == 1:
        raise source.fail(path, f"'{class_path}' is not a class path; write it as package.module.Name")
    raise source.fail(path, _no_module(parts[0], None, spec_folder=source.path.resolve().parent))


def _import(module_name: str, source: SpecSource, path: FieldPath) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            parent = exc.name.rpartition(".")[0]
            folder = source.path.resolve().parent
            raise source.fail(path, _no_module(exc.name, parent or None, spec_folder=folder)) from None
        raise source.fail(path, _import_failed(module_name, exc)) from exc
    except Exception as exc:
        raise source.fail(path, _import_failed(module_name, exc)) from exc


def _no_module(name: str, parent: str | None, found: list[str] | None = None, spec_folder: Path | None = None) -> str:
    if parent:
        package = sys.modules.get(parent)
        if found is None:
            found = [m.name for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
        leaf = name.rpartition(".")[2]
        return f"module not found: package '{parent}' has no module '{leaf}'{did_you_mean(leaf, found)}"
    found = [m.name for m in pkgutil.iter_modules()]
    return (
        f"module not found: no module named '{name}'{did_you_mean(name, found)}; class paths are imported from the "
        f"current directory ({os.getcwd()}), then the spec's folder ({spec_folder}), then installed packages"
    )


def _import_failed(module_name: str, exc: BaseException) -> str:
    return f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}"


def _attribute(module: Any, attr_path: str, class_path: str, source: SpecSource, path: FieldPath) -> Any:
    obj = module
    attrs = attr_path.split(".")
    for depth, attr in enumerate(attrs):
        if hasattr(obj, attr):
            obj = getattr(obj, attr)
            continue
        names = [n for n in dir(obj) if not n.startswith("_")]
        if obj is module and depth < len(attrs) - 1 and hasattr(module, "__path__"):
            # 'pkg.missing.Name': 'missing' was meant as a module of the package
            submodules = [m.name for m in pkgutil.iter_modules(module.__path__)]
            raise source.fail(path, _no_module(f"{module.__name__}.{attr}", module.__name__, names + submodules))
        raise source.fail(
            path,
            f"name not found: module '{module.__name__}' has no attribute '{attr}'{did_you_mean(attr, names)} "
            f"(the module itself was found: {_module_place(module)})",
        )
    return obj


def _module_place(module: Any) -> str:
    file = getattr(module, "__file__", None)
    return file or ", ".join(getattr(module, "__path__", [])) or module.__name__


def _check_call(target: Any, injected: int, kwargs: dict[str, Any], source: SpecSource, path: FieldPath) -> None:
    """Check `init_args` against the constructor's signature, before anything is built."""
    if not callable(target):
        raise source.fail((*path, "class_path"), f"{target!r} is not a class or callable")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # builtins without a signature: the call itself will tell
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    keywords = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    problems = [
        Problem((*path, "init_args", key), f"{_name(target)} takes no argument '{key}'{did_you_mean(key, keywords)}")
        for key in kwargs
        if not takes_any and key not in keywords
    ]
    if problems:
        raise source.error(problems)
    try:
        signature.bind(*([None] * injected), **kwargs)
    except TypeError as exc:
        raise source.fail((*path, "init_args"), f"{_name(target)}: {exc}") from None


def _name(target: Any) -> str:
    return getattr(target, "__qualname__", None) or repr(target)


def check_spec(spec: RunSpec, source: SpecSource) -> RunPlan:
    """Everything short of building objects; raises SpecError naming file, line and field."""
    from zae_engine.registry import addon_names, unknown_message

    installed = addon_names()  # metadata only: a misspelt add-on is reported before anything heavy is imported
    unknown = [
        Problem(("addons", i, "name"), unknown_message(e.name))
        for i, e in enumerate(spec.addons)
        if e.name is not None and e.name not in installed
    ]
    if unknown:
        raise source.error(unknown)

    from zae_engine.trainer import Trainer

    add_import_roots(source.path)
    trainer_class = resolve(spec.trainer.class_path, source, ("trainer", "class_path"))
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
        raise source.fail(("trainer", "class_path"), f"{spec.trainer.class_path} is not a subclass of Trainer")
    if inspect.isabstract(trainer_class):
        missing = ", ".join(sorted(trainer_class.__abstractmethods__))
        raise source.fail(("trainer", "class_path"), f"{trainer_class.__name__} does not define {missing}")
    plan = RunPlan(spec, source, trainer_class)

    components: list[tuple[FieldPath, Component, int]] = [(("model",), spec.model, 0)]
    if spec.optimizer is not None:
        components.append((("optimizer",), spec.optimizer, 1))
    elif spec.trainer.init_args.mode == "train":
        raise source.fail(("optimizer",), "mode 'train' needs an optimizer, e.g. {class_path: torch.optim.Adam}")
    if spec.scheduler is not None:
        if spec.optimizer is None:
            raise source.fail(("scheduler",), "a scheduler needs an optimizer; add an optimizer section")
        components.append((("scheduler",), spec.scheduler, 1))
    for name, loader in _loaders(spec):
        if loader.stateful and stateful_loader_class() is None:
            raise source.fail(
                ("data", name, "stateful"),
                "stateful: true needs torchdata, which is not installed: pip install 'zae-engine[torchdata]' "
                "(or set stateful: false for a plain DataLoader)",
            )
        components.append((("data", name, "dataset"), loader.dataset, 0))
        if loader.collate_fn:
            plan.classes[("data", name, "collate_fn")] = resolve(
                loader.collate_fn, source, ("data", name, "collate_fn")
            )
    for path, component, injected in components:
        target = resolve(component.class_path, source, (*path, "class_path"))
        _check_call(target, injected, component.init_args, source, path)
        plan.classes[path] = target

    plan.addons = _check_addons(spec, source)
    if spec.run.record and not any(cls.name == "run_log" for cls, _ in plan.addons):
        plan.addons.append((get_addon("run_log"), {}))  # every zae run leaves a record unless asked not to
    devices = spec.device if isinstance(spec.device, list) else [spec.device]
    if len(devices) > 1 and not any(issubclass(cls, LauncherAddon) for cls, _ in plan.addons):
        raise source.fail(
            ("device",), f"{len(devices)} devices need a launcher add-on: add `- {{name: mpu}}` under addons"
        )
    return plan


def _loaders(spec: RunSpec) -> list[tuple[str, LoaderSpec]]:
    return [(name, loader) for name, loader in (("train", spec.data.train), ("valid", spec.data.valid)) if loader]


def _check_addons(spec: RunSpec, source: SpecSource) -> list[tuple[type, dict[str, Any]]]:
    """Each entry: its add-on class and options, validated by that add-on's Config; then the set as a whole."""
    found: list[tuple[type, dict[str, Any]]] = []
    first_line: dict[str, int] = {}
    problems: list[Problem] = []
    for index, entry in enumerate(spec.addons):
        path: FieldPath = ("addons", index)
        try:
            addon = _addon_class(entry, source, path)
        except AddOnError as exc:
            problems.append(Problem((*path, "name"), str(exc)))
            continue
        if addon.name in first_line:
            earlier = first_line[addon.name]
            problems.append(
                Problem(
                    path,
                    f"add-on '{addon.name}' is listed twice: here and as addons[{earlier}] "
                    f"({source.where(('addons', earlier))}); one entry makes one add-on, so merge them",
                )
            )
            continue
        first_line[addon.name] = index
        try:
            addon.Config(**entry.options)
        except ValidationError as exc:
            problems += problems_from_pydantic(exc, entry.options, addon.Config, path, owner=addon.label())
            continue
        except Exception as exc:  # a Config validator raising something other than ValueError
            problems.append(Problem(path, f"{addon.label()}: {type(exc).__name__}: {exc}"))
            continue
        found.append((addon, entry.options))
    if problems:
        raise source.error(problems)
    try:
        check_class_set([cls for cls, _ in found], "the spec's addons")
    except CompositionError as exc:
        raise source.fail(("addons",), str(exc)) from None
    return found


def _addon_class(entry: AddOnEntry, source: SpecSource, path: FieldPath) -> type:
    if entry.name is not None:
        return get_addon(entry.name)
    add_import_roots(source.path)
    addon = resolve(str(entry.class_path), source, (*path, "class_path"))
    if not (isinstance(addon, type) and issubclass(addon, AddOnBase)):
        raise source.fail((*path, "class_path"), f"{entry.class_path} is not an add-on class (subclass AddOnBase)")
    if not addon.name:
        raise source.fail((*path, "class_path"), f"{entry.class_path} has no registry `name`; set name = '...'")
    return addon


def build_run(plan: RunPlan) -> BuiltRun:
    """Seed, then build model, optimizer, scheduler, loaders and the trainer."""
    from zae_engine.seeding import seed_everything

    spec, source = plan.spec, plan.source
    if spec.run.seed is not None:
        seed_everything(spec.run.seed, spec.run.deterministic)
    model = _build(plan, ("model",), spec.model)
    optimizer = _build(plan, ("optimizer",), spec.optimizer, model.parameters()) if spec.optimizer else None
    scheduler = _build(plan, ("scheduler",), spec.scheduler, optimizer) if spec.scheduler else None
    loaders = {name: _loader(plan, name, loader) for name, loader in _loaders(spec)}
    options = spec.trainer.init_args.model_dump()
    mode = options.pop("mode")
    addons = []
    for index, (addon, addon_options) in enumerate(plan.addons):
        try:
            addons.append(addon(**addon_options))
        except ConfigError as exc:
            raise source.fail(("addons", index), str(exc)) from None
    try:
        trainer = plan.trainer_class(model, spec.device, mode, optimizer, scheduler, addons=addons, **options)
    except ConfigError as exc:
        raise source.fail(("trainer",), str(exc)) from None
    return BuiltRun(trainer, loaders["train"], loaders.get("valid"), spec.run.n_epoch)


def _build(plan: RunPlan, path: FieldPath, component: Component, *injected: Any) -> Any:
    target = plan.classes[path]
    try:
        return target(*injected, **component.init_args)
    except Exception as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in component.init_args.items())
        raise plan.source.fail(
            path, f"building {component.class_path}({args}) failed: {type(exc).__name__}: {exc}"
        ) from exc


def stateful_loader_class() -> type | None:
    """torchdata's StatefulDataLoader when torchdata is installed (the `torchdata` extra), else None."""
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader
    except ImportError:
        return None
    return StatefulDataLoader


def _loader(plan: RunPlan, name: str, spec: LoaderSpec) -> Any:
    """A loader whose order (and worker seeds) per epoch follow from run.seed: a resumed run sees the same data.

    torchdata's StatefulDataLoader when installed (unless `stateful: false`): a checkpoint taken inside an epoch
    then holds its sampler and worker positions. Either way an EpochSampler orders each epoch, so the epoch after
    a resume is shuffled exactly as in a straight run (the loader's own shuffling would not be, with 0 workers).
    """
    import warnings

    import torch
    from torch.utils.data import DataLoader, IterableDataset

    from zae_engine.data import EpochSampler
    from zae_engine.seeding import seed_worker

    dataset = _build(plan, ("data", name, "dataset"), spec.dataset)
    seed = plan.spec.run.seed if plan.spec.run.seed is not None else int(torch.empty((), dtype=torch.int64).random_())
    generator = torch.Generator().manual_seed(seed)
    options = spec.model_dump(exclude={"dataset", "collate_fn", "shuffle"})
    collate = plan.classes.get(("data", name, "collate_fn"))
    sampler = None
    if not isinstance(dataset, IterableDataset):
        try:
            sampler = EpochSampler(len(dataset), spec.shuffle, seed, generator)
        except TypeError:
            raise plan.source.fail(("data", name, "dataset"), "the dataset has no len(); give it __len__") from None
    options.pop("stateful")
    loader_class = (stateful_loader_class() if spec.stateful is not False else None) or DataLoader
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*set_vital.*")  # torchdata 0.11 on torch >= 2.9: harmless
            return loader_class(
                dataset, **options, sampler=sampler, collate_fn=collate, generator=generator, worker_init_fn=seed_worker
            )
    except (TypeError, ValueError) as exc:
        raise plan.source.fail(("data", name), f"{loader_class.__name__}: {exc}") from None


__all__ = ["BuiltRun", "RunPlan", "add_import_roots", "build_run", "check_spec", "dotted", "resolve"]
