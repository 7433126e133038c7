"""The add-on contract: a named, configured object the trainer calls at fixed points.

An add-on declares a registry `name`, a one-line `description`, and a pydantic `Config` of the keyword
arguments it takes. `Trainer.add_on(...)` checks a set of add-ons once, when the class is made; each trainer
instance then holds one instance of every add-on and calls only the hooks an add-on actually overrides,
so a hook nobody implements costs nothing in the loop.

Hooks (all optional; `self.trainer` is the trainer):

=====================  =========================================================================
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
launch(n_epoch, loader, valid_loader)  take over *where* the run happens (e.g. spawn DDP workers).
                       At most one add-on per trainer may define it.
=====================  =========================================================================

Side effects (files, trackers, console) belong on rank 0: use `zae_engine.distributed.rank_zero_only`
or check `self.trainer.is_rank_zero`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from zae_engine.errors import CompositionError, ConfigError, pydantic_message

if TYPE_CHECKING:
    from zae_engine.trainer.loop import Trainer

HOOKS = (
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


class AddOnConfig(BaseModel):
    """Base for add-on configs: unknown keywords are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)


class AddOnBase:
    """Subclass this, set `name`, `description` and `Config`, override the hooks you need."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type[BaseModel]] = AddOnConfig
    #: registry names this add-on cannot share a trainer with
    conflicts: ClassVar[tuple[str, ...]] = ()
    #: methods this add-on lends to the trainer, e.g. ("save_state", "load_state")
    trainer_methods: ClassVar[tuple[str, ...]] = ()
    #: zae-engine versions this add-on supports (a PEP 440 specifier such as ">=0.1,<1"); "" means any
    supported_engine: ClassVar[str] = ""
    #: hooks of add-ons with a lower order run first; add-ons that decide something at epoch end (early stopping)
    #: use a negative order so that add-ons which save or report it (checkpoints, trackers) see the decision
    hook_order: ClassVar[int] = 0

    def __init__(self, trainer: Trainer, config: BaseModel) -> None:
        self.trainer = trainer
        self.config = config

    # -- hooks: the defaults do nothing and are never called ------------------------------------------
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

    launch = None  # an add-on that decides where the run happens defines launch(n_epoch, loader, valid_loader)

    @classmethod
    def label(cls) -> str:
        return f"add-on '{cls.name or cls.__name__}'"

    @classmethod
    def validate_config(cls, kwargs: dict[str, Any]) -> BaseModel:
        """Build `Config` from keywords; an error names this add-on and the field."""
        try:
            return cls.Config(**kwargs)
        except ValidationError as err:
            raise ConfigError(pydantic_message(cls.label(), err)) from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config!r}>"


def overrides(addon_cls: type, hook: str) -> bool:
    return getattr(addon_cls, hook, None) is not getattr(AddOnBase, hook, None)


def check_composition(existing: tuple[type[AddOnBase], ...], new: tuple[type[AddOnBase], ...], own_fields: set[str]):
    """Refuse add-on sets that cannot work together; returns the combined tuple."""
    combined = list(existing)
    for addon in new:
        if not (isinstance(addon, type) and issubclass(addon, AddOnBase)):
            raise CompositionError(f"{addon!r} is not an add-on class (subclass AddOnBase or define apply(base_cls))")
        if not addon.name:
            raise CompositionError(f"{addon.__name__} has no registry 'name'; set name = '...' on the class")
        for other in combined:
            if other.name == addon.name:
                raise CompositionError(f"{addon.label()} is already on this trainer; add it once")
            if addon.name in other.conflicts or other.name in addon.conflicts:
                raise CompositionError(f"{addon.label()} cannot be combined with {other.label()}; pick one")
            if addon.launch is not None and other.launch is not None:
                raise CompositionError(
                    f"{addon.label()} and {other.label()} both decide where training runs; use only one of them"
                )
            _check_shared_keywords(other, addon)
        clash = own_fields & set(addon.Config.model_fields)
        if clash:
            raise CompositionError(f"{addon.label()} claims the Trainer's own keyword(s) {sorted(clash)}; rename them")
        combined.append(addon)
    return tuple(combined)


def _check_shared_keywords(a: type[AddOnBase], b: type[AddOnBase]) -> None:
    """Two add-ons may share a keyword (e.g. web_logger) only if it means the same to both."""
    for key in set(a.Config.model_fields) & set(b.Config.model_fields):
        fa, fb = a.Config.model_fields[key], b.Config.model_fields[key]
        if fa.annotation != fb.annotation or fa.default != fb.default:
            raise CompositionError(
                f"{a.label()} and {b.label()} both take keyword '{key}' but with different meanings "
                f"({fa.annotation} vs {fb.annotation}); they cannot share a trainer"
            )
