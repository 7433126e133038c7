"""Putting add-ons on a trainer: the one place that knows how, and what may go together.

Two front doors lead to the same configured objects:

- `Trainer(..., addons=[StateManagerAddon(save_path="runs/x"), EarlyStoppingAddon(monitor="valid/loss")])`:
  instances, each with options of its own.
- `Trainer.add_on(StateManagerAddon, WandBLoggerAddon)` (the seeds' way): a subclass whose constructor takes
  the add-ons' keywords flat (`save_path=...`, `web_logger={...}`), routes each to every add-on class that
  declares it, and builds the instances. The keywords are taken off before any `__init__` of the user's runs,
  so a user `__init__` with a narrower signature still works. Upstream-style add-ons (a classmethod
  `apply(base_cls)` and no registry name) are applied the upstream way, in place.

`attach` then checks the whole set once (names, conflicts, one launcher, lent methods), gives each add-on a
weak reference to the trainer, and builds the `HookTable`: per hook, the bound methods of the add-ons that
override it, ordered by phase — so a hook nobody implements costs nothing in the loop.
"""

from __future__ import annotations

import copyreg
import functools
import inspect
import weakref
from abc import ABCMeta
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from zae_engine.errors import CompositionError, ConfigError, did_you_mean
from zae_engine.trainer.addons.base import (
    HOOKS,
    PHASES,
    AddOnBase,
    LauncherAddon,
    is_upstream_style,
    overrides,
)

#: where a composed class's constructor leaves the flat add-on keywords for Trainer.__init__
FLAT_OPTIONS = "_flat_addon_options"


class TrainerMeta(ABCMeta):
    """Metaclass whose only job is letting composed trainer classes be pickled (for spawned workers)."""


class HookTable:
    """Per hook, the add-on methods to call, in order. Read by the loop as plain attributes."""

    __slots__ = HOOKS

    def __init__(self, addons: Sequence[AddOnBase]) -> None:
        rank = {id(a): (PHASES.index(type(a).phase), i) for i, a in enumerate(addons)}
        for hook in HOOKS:
            chosen = [a for a in addons if overrides(type(a), hook)]
            if hook == "on_run_end":  # teardown: phase by phase, each in reverse attach order
                chosen.sort(key=lambda a: (rank[id(a)][0], -rank[id(a)][1]))
            else:
                chosen.sort(key=lambda a: rank[id(a)])
            setattr(self, hook, tuple(getattr(a, hook) for a in chosen))


@dataclass
class Attachment:
    """What a trainer holds of its add-ons (the trainer owns them; they hold it weakly)."""

    addons: dict[str, AddOnBase]
    hooks: HookTable
    launcher: LauncherAddon | None
    lent: dict[str, AddOnBase]


# ---------------------------------------------------------------------- instances on a trainer
def attach(trainer: Any, addons: Iterable[Any]) -> Attachment:
    """Check `addons` as a set, attach each to `trainer`, and build the hook table."""
    owner = type(trainer).__name__
    items = list(addons)
    for item in items:
        if isinstance(item, type) and issubclass(item, AddOnBase):
            raise CompositionError(
                f"{owner}: addons=[...] takes add-on instances, got the class {item.__name__}; "
                f"write {item.__name__}(...) with its options"
            )
        if not isinstance(item, AddOnBase):
            raise CompositionError(f"{owner}: {item!r} in addons=[...] is not an add-on (subclass AddOnBase)")
    check_class_set([type(a) for a in items], owner)
    lent = _lent_methods(trainer, items)
    _install_lenders(type(trainer), lent)
    for addon in items:
        current = addon._trainer_ref() if addon._trainer_ref is not None else None
        if current is not None and current is not trainer:
            raise CompositionError(
                f"{addon.label()} is already attached to another trainer ({type(current).__name__}); "
                "make a new instance for this one"
            )
    for addon in items:
        addon._trainer_ref = weakref.ref(trainer)
    launcher = next((a for a in items if isinstance(a, LauncherAddon)), None)
    return Attachment({a.name: a for a in items}, HookTable(items), launcher, lent)


def reattach(trainer: Any) -> HookTable:
    """After unpickling: point the add-ons at this trainer again and rebuild the table of bound methods."""
    items = list(trainer.addons.values())
    for addon in items:
        addon._trainer_ref = weakref.ref(trainer)
    _install_lenders(type(trainer), trainer._lent)
    return HookTable(items)


def check_class_set(classes: Sequence[type[AddOnBase]], owner: str) -> None:
    """Refuse add-on sets that cannot work together: unnamed, twice, conflicting, two launchers."""
    seen: dict[str, type[AddOnBase]] = {}
    launcher: type[AddOnBase] | None = None
    for cls in classes:
        if not cls.name:
            raise CompositionError(f"{owner}: {cls.__name__} has no registry 'name'; set name = '...' on the class")
        if cls.name in seen:
            raise CompositionError(f"{owner}: {cls.label()} is on this trainer twice; add it once")
        for other in seen.values():
            if cls.name in other.conflicts or other.name in cls.conflicts:
                raise CompositionError(f"{owner}: {cls.label()} cannot be combined with {other.label()}; pick one")
        if issubclass(cls, LauncherAddon):
            if launcher is not None:
                raise CompositionError(
                    f"{owner}: {cls.label()} and {launcher.label()} both decide where training runs; use one"
                )
            launcher = cls
        seen[cls.name] = cls


def _lent_methods(trainer: Any, addons: Sequence[AddOnBase]) -> dict[str, AddOnBase]:
    lent: dict[str, AddOnBase] = {}
    for addon in addons:
        for method in type(addon).trainer_methods:
            if not callable(getattr(addon, method, None)):
                raise CompositionError(f"{addon.label()} lends '{method}' to the trainer but does not define it")
            if hasattr(type(trainer), method) and not isinstance(inspect.getattr_static(type(trainer), method), Lent):
                raise CompositionError(f"{addon.label()} lends '{method}' to the trainer, which already has one")
            if method in lent:
                raise CompositionError(f"{addon.label()} and {lent[method].label()} both lend '{method}'; pick one")
            lent[method] = addon
    return lent


class Lent:
    """A method an add-on lends (`trainer.save_state()`), found per instance.

    It sits on the trainer's class, not in a `__getattr__`: a class with `__getattr__` makes CPython read every
    `self.x` the slow way, in the training step too. The method it returns holds the trainer while it can be
    called (the add-on holds it only weakly), so `make_trainer().save_state()` works.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, trainer: Any, owner: type | None = None) -> Any:
        if trainer is None:
            return self
        lender = trainer.__dict__.get("_lent", {}).get(self.name)
        if lender is None:
            raise AttributeError(f"{type(trainer).__name__!r} object has no attribute {self.name!r}")
        method = getattr(lender, self.name)

        @functools.wraps(method)
        def lent(*args: Any, **kwargs: Any) -> Any:
            assert trainer is not None  # the closure is what keeps `trainer` alive during the call
            return method(*args, **kwargs)

        return lent


def _install_lenders(cls: type, lent: dict[str, AddOnBase]) -> None:
    for name in lent:
        if not isinstance(inspect.getattr_static(cls, name, None), Lent):
            setattr(cls, name, Lent(name))


# ---------------------------------------------------------------------- the seeds' front door
def add_on(base: type, addons: Sequence[Any]) -> type:
    """`base.add_on(*addons)`: a subclass carrying these add-on classes (upstream-style ones applied in place)."""
    result, pending = base, []
    for addon in addons:
        if isinstance(addon, AddOnBase):
            raise CompositionError(
                f"{base.__name__}.add_on takes add-on classes; pass the instance {addon!r} as "
                f"{base.__name__}(..., addons=[...]) instead"
            )
        if isinstance(addon, type) and issubclass(addon, AddOnBase) and not is_upstream_style(addon):
            pending.append(addon)
            continue
        if not callable(getattr(addon, "apply", None)):
            raise CompositionError(f"{addon!r} is not an add-on: subclass AddOnBase, or define apply(base_cls)")
        if pending:
            result, pending = compose(result, tuple(pending)), []
        applied = addon.apply(result)
        if not (isinstance(applied, type) and issubclass(applied, result)):
            raise CompositionError(
                f"{getattr(addon, '__name__', addon)}.apply() must return a subclass of {result.__name__}"
            )
        result = applied
    return compose(result, tuple(pending)) if pending else result


_COMPOSED: dict[tuple[type, tuple[type, ...]], type] = {}


def compose(base: type, new: tuple[type[AddOnBase], ...]) -> type:
    """The (cached) subclass of `base` that also carries `new`; checked once, here."""
    key = (base, new)
    if key in _COMPOSED:
        return _COMPOSED[key]
    from zae_engine.trainer.config import TRAINER_FIELDS

    for cls in new:
        if not (isinstance(cls, type) and issubclass(cls, AddOnBase)):
            raise CompositionError(f"{cls!r} is not an add-on class (subclass AddOnBase or define apply(base_cls))")
    combined = (*base._addon_classes, *new)
    check_class_set(combined, base.__name__)
    for cls in new:
        clash = TRAINER_FIELDS & set(cls.Config.model_fields) - set(cls.sets_trainer_options)
        if clash:
            raise CompositionError(f"{cls.label()} claims the Trainer's own keyword(s) {sorted(clash)}; rename them")
    _check_shared_keywords(combined)
    keys = frozenset(field for cls in combined for field in cls.Config.model_fields)
    composed: type | None = None

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        given = keys & kwargs.keys()
        if given:
            flat = self.__dict__.setdefault(FLAT_OPTIONS, {})
            for name in given:
                flat.setdefault(name, kwargs.pop(name))  # the outermost (the caller's) value wins
        super(composed, self).__init__(*args, **kwargs)

    __init__.__signature__ = _signature(base, combined)  # type: ignore[attr-defined]
    name = f"{base.__name__}With" + "".join(cls.__name__ for cls in new)
    namespace = {
        "_addon_classes": combined,
        "_composed_from": key,
        "__init__": __init__,
        "__module__": base.__module__,
        "__doc__": base.__doc__,
        "__qualname__": name,
    }
    composed = TrainerMeta(name, (base,), namespace)
    _COMPOSED[key] = composed
    return composed


def flat_instances(trainer: Any) -> list[AddOnBase]:
    """The instances of a composed class's add-ons, built from the flat keywords its constructor took off."""
    options = trainer.__dict__.pop(FLAT_OPTIONS, {})
    return [cls(**{k: v for k, v in options.items() if k in cls.Config.model_fields}) for cls in trainer._addon_classes]


def _check_shared_keywords(classes: Sequence[type[AddOnBase]]) -> None:
    """Flat keywords go to every add-on that declares them: only if they mean the same to each (e.g. web_logger)."""
    owners: dict[str, type[AddOnBase]] = {}
    for cls in classes:
        for key, field in cls.Config.model_fields.items():
            other = owners.setdefault(key, cls)
            theirs = other.Config.model_fields[key]
            if other is not cls and (field.annotation != theirs.annotation or field.default != theirs.default):
                raise CompositionError(
                    f"{other.label()} and {cls.label()} both take keyword '{key}' but with different meanings "
                    f"({theirs.annotation} vs {field.annotation}), so Trainer.add_on cannot route it; pass "
                    "configured instances instead: Trainer(..., addons=[...])"
                )


def _signature(base: type, classes: Sequence[type[AddOnBase]]) -> inspect.Signature:
    """The base constructor's signature plus every add-on keyword (for help() and editors)."""
    try:
        params = list(inspect.signature(base.__init__).parameters.values())
    except (TypeError, ValueError):
        return inspect.Signature()
    names = {p.name for p in params}
    extra = []
    for cls in classes:
        for key, field in cls.Config.model_fields.items():
            if key not in names:
                names.add(key)
                extra.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=field.default))
    cut = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    return inspect.Signature([*params[:cut], *extra, *params[cut:]])


def unknown_keyword(trainer_cls: type, key: str, known: Iterable[str]) -> ConfigError:
    """A keyword neither the Trainer nor its add-ons take: say whose it is, if an installed add-on's."""
    message = f"{trainer_cls.__name__}: unknown keyword '{key}'{did_you_mean(key, known)}"
    owner = _installed_owner(key)
    if owner is not None:
        name, class_name = owner
        message += (
            f"; it is an option of add-on '{name}': pass addons=[{class_name}({key}=...)], "
            f"or compose the class with Trainer.add_on({class_name})"
        )
    else:
        on = ", ".join(cls.name for cls in trainer_cls._addon_classes) or "none"
        message += f"; add-ons composed on this class: {on}"
    return ConfigError(message)


def _installed_owner(key: str) -> tuple[str, str] | None:
    """(registry name, class name) of an installed add-on that takes `key`; only on this error path."""
    from zae_engine.registry import option_owner

    return option_owner(key)


# ---------------------------------------------------------------------- pickling composed classes
def _reduce_trainer_class(cls: type) -> Any:
    key = cls.__dict__.get("_composed_from")
    if key is None:
        return cls.__qualname__  # an importable class: pickled by reference as usual
    return compose, key  # unpickling composes the same class again (cached)


copyreg.pickle(TrainerMeta, _reduce_trainer_class)
