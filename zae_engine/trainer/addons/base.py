"""The add-on contract: a named, configured object that a trainer calls at fixed points.

An add-on class declares a registry `name`, a pydantic `Config` of its options (its docstring's first line is
the add-on's description unless the class sets `description`), and overrides the hooks it needs. An instance is
made with its own options, validated on the spot, and is attached to one trainer::

    Trainer(model, "cpu", "train", optimizer, addons=[StateManagerAddon(save_path="runs/x", monitor="valid/acc")])

The contract is checked when an add-on class is defined: a method named `on_*` that is not a hook below is
refused with a suggestion, and every hook must accept the arguments the loop passes. This module imports
neither torch nor the trainer, so Configs and the contract load fast (`zae addons show`, `zae schema`).

Hooks (all optional; `self.trainer` is the trainer the add-on is attached to):

=====================  =========================================================================
on_attach()            once, when the trainer is made and every add-on is attached: check the
                       other add-ons, the model, the options (raise ConfigError to refuse).
on_run_start()         `run()` begins, before the first epoch.
on_epoch_start(epoch)  an epoch begins (`epoch` counts from 1).
on_batch_end(result)   after every batch, train or validation; `result` is the step's dict.
on_optimizer_step()    after every optimizer step (once per accumulated group).
on_validation_start()  the validation pass of a training epoch begins (e.g. swap in EMA weights).
on_validation_end()    it ended, also when it failed (swap them back).
on_log(metrics)        every `log_interval` optimizer steps: running means, e.g. {"train/loss": ...}.
on_epoch_end(epoch, summary)  an epoch (and its validation) is done; `summary` is the flat dict
                       {"epoch", "step", "train/loss", "valid/loss", "lr/group0", ...}; add-ons may add keys.
on_run_end(error)      `run()` ends; `error` is the exception that ended it, or None.
state_dict()           extra state to put in checkpoints (tensors and JSON-able values only).
load_state_dict(state) restore what `state_dict` returned.
=====================  =========================================================================

Order: every hook runs phase by phase — `update` add-ons (the default: early stopping, EMA, your own), then
`persist` (checkpoints), then `report` (run records, trackers) — so what is saved and reported is the state
every deciding add-on has already updated for that epoch. Within a phase, add-ons run in the order they were
attached, except `on_run_end`, which tears down in reverse attach order (the phases still go update, persist,
report: the last checkpoint is written before the trackers report it and close).

Where a run happens is a separate role: a `LauncherAddon` (e.g. `mpu`) takes `run()` over with `launch()`;
a trainer has at most one. Side effects (files, trackers, console) belong on rank 0: check
`self.trainer.is_rank_zero` or use `zae_engine.distributed.rank_zero_only`.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from zae_engine.errors import CompositionError, ConfigError, did_you_mean, pydantic_message

Phase = Literal["update", "persist", "report"]
PHASES: tuple[Phase, ...] = ("update", "persist", "report")

#: hooks the loop dispatches (on_attach is called once by the composition, not per event)
HOOKS = (
    "on_attach",
    "on_run_start",
    "on_epoch_start",
    "on_batch_end",
    "on_optimizer_step",
    "on_validation_start",
    "on_validation_end",
    "on_log",
    "on_epoch_end",
    "on_run_end",
)
#: other methods whose signature the contract fixes
_CHECKED = (*HOOKS, "state_dict", "load_state_dict", "launch")


class AddOnConfig(BaseModel):
    """Base of add-on configs: unknown keywords are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)


class AddOnBase:
    """Subclass this, set `name` and `Config`, override the hooks you need."""

    name: ClassVar[str] = ""
    #: one line for `zae addons list`; default: the first line of the Config's docstring
    description: ClassVar[str] = ""
    Config: ClassVar[type[BaseModel]] = AddOnConfig
    #: what the add-on does at each event, which orders it among the others (see the module docstring)
    phase: ClassVar[Phase] = "update"
    #: registry names this add-on cannot share a trainer with
    conflicts: ClassVar[tuple[str, ...]] = ()
    #: methods this add-on lends to the trainer, e.g. ("save_state", "load_state")
    trainer_methods: ClassVar[tuple[str, ...]] = ()
    #: Trainer options this add-on takes in a form of its own and sets on the trainer (flat keywords of these
    #: names go to the add-on); e.g. ("precision",) for PrecisionMixerAddon
    sets_trainer_options: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if is_upstream_style(cls):
            return  # applied the upstream way by Trainer.add_on: it has no hooks of its own
        check_contract(cls)
        if not cls.__dict__.get("description") and cls.Config is not AddOnConfig:
            cls.description = first_line(cls.Config.__doc__) or cls.description

    def __init__(self, config: BaseModel | None = None, /, **options: Any) -> None:
        if config is not None:
            if not isinstance(config, self.Config):
                raise ConfigError(f"{self.label()}: expected a {self.Config.__name__}, got {type(config).__name__}")
            options = {**config.model_dump(exclude_unset=True), **options}
        self.config = self.validate_config(options)
        self._trainer_ref: weakref.ref | None = None

    @property
    def trainer(self) -> Any:
        """The trainer this add-on is attached to (held weakly: the trainer owns its add-ons, not the reverse)."""
        ref = self._trainer_ref
        trainer = ref() if ref is not None else None
        if trainer is None:
            raise RuntimeError(f"{self.label()} is not attached to a trainer; pass it in Trainer(..., addons=[...])")
        return trainer

    @property
    def attached(self) -> bool:
        return self._trainer_ref is not None and self._trainer_ref() is not None

    # -- hooks: the defaults do nothing and are never called ------------------------------------------
    def on_attach(self) -> None: ...
    def on_run_start(self) -> None: ...
    def on_epoch_start(self, epoch: int) -> None: ...
    def on_batch_end(self, result: dict[str, Any]) -> None: ...
    def on_optimizer_step(self) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_log(self, metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None: ...
    def on_run_end(self, error: BaseException | None) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # -- helpers --------------------------------------------------------------------------------------
    @classmethod
    def label(cls) -> str:
        return f"add-on '{cls.name or cls.__name__}'"

    @classmethod
    def validate_config(cls, options: dict[str, Any]) -> BaseModel:
        """Build `Config` from keywords; an error names this add-on and the field."""
        try:
            return cls.Config(**options)
        except ValidationError as err:
            raise ConfigError(pydantic_message(cls.label(), err, cls.Config.model_fields)) from None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_trainer_ref"] = None  # the trainer re-attaches its add-ons when it is unpickled
        return state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config!r}>"


def is_upstream_style(cls: type) -> bool:
    """An add-on written for upstream zae-engine: no registry name, a classmethod `apply(base_cls)`."""
    return not getattr(cls, "name", "") and callable(getattr(cls, "apply", None))


def overrides(addon_cls: type, method: str) -> bool:
    return getattr(addon_cls, method, None) is not getattr(AddOnBase, method, None)


def check_contract(cls: type[AddOnBase]) -> None:
    """Refuse, when the class is defined, what would otherwise fail silently or mid-run."""
    where = cls.__qualname__
    for attr, value in vars(cls).items():
        if attr.startswith("on_") and callable(value) and attr not in HOOKS:
            raise CompositionError(
                f"{where}.{attr} is not an add-on hook{did_you_mean(attr, HOOKS)}; hooks are {', '.join(HOOKS)}. "
                "Rename it, or give a helper a name that does not start with 'on_'"
            )
        if attr in _CHECKED and callable(value):
            _check_signature(cls, attr, value)
    if cls.phase not in PHASES:
        raise CompositionError(f"{where}.phase is {cls.phase!r}; use one of {', '.join(map(repr, PHASES))}")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, BaseModel)):
        raise CompositionError(f"{where}.Config must be a pydantic model (subclass AddOnConfig)")


def _check_signature(cls: type, attr: str, implementation: Any) -> None:
    reference = _launch_reference if attr == "launch" else getattr(AddOnBase, attr)
    params = list(inspect.signature(reference).parameters.values())
    required = [p for p in params if p.default is inspect.Parameter.empty]
    optional = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    try:
        inspect.signature(implementation).bind(*range(len(required)), **optional)
    except TypeError:
        expected = ", ".join([p.name for p in required] + [f"{name}={value!r}" for name, value in optional.items()])
        raise CompositionError(
            f"{cls.__qualname__}.{attr}{inspect.signature(implementation)} cannot be called the way the loop calls "
            f"it: {attr}({expected}). Give it exactly those parameters"
        ) from None
    except ValueError:
        return  # no signature to read (a builtin): the call will tell


def _launch_reference(self: Any, n_epoch: int, loader: Any, valid_loader: Any = None, total: bool = False) -> None:
    """How a trainer calls `LauncherAddon.launch`."""


def first_line(text: str | None) -> str:
    for line in (text or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


class LauncherAddon(AddOnBase):
    """An add-on that decides *where* `run()` happens (e.g. spawned DDP workers); at most one per trainer.

    `launch` gets `run()`'s arguments and must end up calling `trainer.run_in_process(...)` with them wherever
    the training really runs (this process, or each worker).
    """

    def launch(self, n_epoch: int, loader: Any, valid_loader: Any = None, total: bool = False) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement launch()")
