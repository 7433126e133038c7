"""Where a training epoch stands, so that a checkpoint taken inside it resumes at the very next batch, exactly.

A checkpoint taken between two batches holds the trainer's position (`Trainer.state_dict()["position"]`): the
epoch, how many batches were drawn from the training loader, the accumulation group under way (with the
gradients it gathered so far), the steps recorded in `log_train`, and what the epoch's data order came from —
the global random streams and the loader's generators as they were when the epoch began, and the loader's own
state when it keeps one (torchdata's `StatefulDataLoader`).

On resume the loader is brought to the same batch in the cheapest way that is exact:

- **stateful**: a loader with `state_dict()`/`load_state_dict()` restores its sampler and worker positions;
- **skip**: a DataLoader over an `EpochSampler` begins its pass at the next batch's first sample, so the batches
  already trained on are not loaded again;
- **replay**: any other loader is started again from the streams the epoch began with, and the batches already
  trained on are drawn again and dropped. When the trainer cannot see that a loader's order follows from those
  streams (not a DataLoader, a sampler of an unknown kind, an IterableDataset) a `ResumeWarning` says so once.

Then the random streams go back to where they were when the checkpoint was taken. A stop during validation
resumes with the training pass complete and runs validation again from its start, with the streams it began with.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from zae_engine.checkpoint.rng import capture_rng, restore_rng
from zae_engine.checkpoint.tree import check_tree
from zae_engine.data import EpochSampler
from zae_engine.distributed import get_world_size, is_distributed
from zae_engine.errors import CheckpointError, ResumeWarning

if TYPE_CHECKING:
    from zae_engine.trainer.loop import Trainer

#: samplers whose order is a function of the epoch, the global torch stream and the loader's generators
_KNOWN_SAMPLERS = (SequentialSampler, RandomSampler, SubsetRandomSampler, WeightedRandomSampler, DistributedSampler)


class EpochPosition:
    """The training epoch under way (or a loaded one waiting to be continued)."""

    def __init__(self) -> None:
        self.epoch: int | None = None  # the training epoch under way; None between epochs
        self.phase = "train"  # "valid" once its training pass is complete
        self.drawn = 0  # batches drawn from the training loader in this epoch (the loop counts them)
        self._loader: Any = None
        self._start: dict[str, Any] | None = None  # streams and generators the epoch's pass began with
        self._step_at_start = 1
        self._valid_start: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None  # loaded from a checkpoint, waiting for its epoch
        self._resume_valid = False  # the loaded epoch stopped in validation: run it again from its start
        self._told: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _loader=None)  # a trainer sent to worker processes does not drag its loader along

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, trainer: Trainer) -> dict[str, Any] | None:
        """The position for a checkpoint (None between epochs); a loaded one not yet continued is handed on."""
        if self.epoch is None:
            return self._pending
        log = trainer._epoch_logs["train"]
        recorded = log.recorded.state_dict()
        recorded["others"] = self._savable(recorded["others"], "non-scalar values train_step returned") or {}
        grads = None
        if self.phase == "train" and trainer._micro:
            grads = {n: p.grad.detach() for n, p in trainer.unwrapped_model.named_parameters() if p.grad is not None}
        stateful = self.phase == "train" and _is_stateful(self._loader)
        return {
            "epoch": self.epoch,
            "phase": self.phase,
            "drawn": self.drawn,
            "step_at_start": self._step_at_start,
            "micro": trainer._micro,
            "group": trainer._group,
            "remaining": trainer._remaining,
            "grads": grads,
            "log": recorded,
            "added": self._savable(dict(log._added), "values added to log_train"),
            "start": self._start,
            "valid_start": self._valid_start,
            "generators": generator_states(self._loader),
            "loader": self._savable(self._loader.state_dict(), "the loader's state") if stateful else None,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Hold a checkpoint's position until its epoch begins (None: the checkpoint was taken between epochs)."""
        self._pending = state
        self.epoch = None

    def steps_done_pending(self, step: int) -> int:
        """Optimizer steps the loaded (unfinished) epoch already took by `step`: a schedule need not cover them."""
        if self._pending is None:
            return 0
        return max(0, step - int(self._pending.get("step_at_start", step)))

    # ------------------------------------------------------------------ the loop calls these
    def begin(self, trainer: Trainer, loader: Iterable, epoch: int) -> Iterable:
        """The training pass of `epoch`: the loader itself, or an iterator standing where the checkpoint left it."""
        pending, self._pending = self._pending, None
        if pending is not None and pending.get("epoch") != epoch:
            pending = None  # the checkpoint's epoch is not this one (progress was changed since): start afresh
        self.epoch, self.phase, self._loader, self._valid_start = epoch, "train", loader, None
        self._step_at_start = trainer.progress_checker.get_step()
        if pending is None:
            self.drawn = 0
            self._start = {"rng": capture_rng(), "generators": generator_states(loader)}
            return loader
        self._restore_trainer(trainer, pending)
        if is_distributed() and get_world_size() > 1:
            self._tell(
                "ddp",
                "resumed inside an epoch under DDP: weights, random streams and data order continue exactly, but the "
                "checkpoint holds rank 0's step values of this epoch only, so every rank's training means for this "
                "epoch count rank 0's values for the steps before the checkpoint",
            )
        self.drawn = int(pending["drawn"])
        self._start = pending["start"]
        self._step_at_start = int(pending.get("step_at_start", self._step_at_start))
        if pending["phase"] == "valid":
            self._valid_start = pending["valid_start"]
            self._resume_valid = True
            set_generator_states(loader, pending.get("generators") or [])  # as the finished pass left them
            return ()  # its training pass is complete; validation runs again from its start
        return self._continue(loader, pending)

    def enter_validation(self, valid_loader: Iterable) -> None:
        """The training pass is complete; validation begins with these streams (again, after a resume)."""
        if self.epoch is None:
            return
        self.phase = "valid"
        if self._resume_valid:
            self._resume_valid = False
            now = self._valid_start
            if now is not None:
                restore_rng(now["rng"], "the checkpoint's validation start")
                set_generator_states(valid_loader, now["generators"])
            return
        self._valid_start = {"rng": capture_rng(), "generators": generator_states(valid_loader)}

    def end(self) -> None:
        """The epoch is complete: checkpoints from here on are taken between epochs."""
        self.epoch, self._loader, self._start, self._valid_start = None, None, None, None
        self._resume_valid = False

    # ------------------------------------------------------------------ resuming
    def _restore_trainer(self, trainer: Trainer, state: dict[str, Any]) -> None:
        log = trainer._epoch_logs["train"]
        log.recorded.load_state_dict(state["log"])
        log._added = dict(state.get("added") or {})
        trainer._micro, trainer._group, trainer._remaining = state["micro"], state["group"], state["remaining"]
        if trainer.optimizer is not None and trainer.progress_checker.get_step() > int(state["step_at_start"]):
            # this epoch has stepped the optimizer already: tell torch's LR schedulers so (no "called before
            # optimizer.step()" warning when the epoch ends before another step)
            trainer.optimizer._opt_called = True  # type: ignore[attr-defined]
        grads = state.get("grads")
        if grads:
            for name, param in trainer.unwrapped_model.named_parameters():
                if name in grads:
                    param.grad = grads[name].to(device=param.device, dtype=param.dtype)
        elif trainer._micro and state["phase"] == "train":
            self._tell(
                "grads",
                "the checkpoint was taken inside an accumulation group but holds no gradients for it; the group's "
                "batches drawn so far do not count in its step (exact resumes inside groups need one process)",
            )

    def _continue(self, loader: Iterable, state: dict[str, Any]) -> Iterable:
        """An iterator over `loader` at batch `drawn` of the epoch, with the streams as they were at that step."""
        drawn = int(state["drawn"])
        now = capture_rng()  # the streams of the step the checkpoint was taken at (restored by the state manager)
        try:
            restore_rng(state["start"]["rng"], "the checkpoint's epoch start")
            set_generator_states(loader, state["start"]["generators"])
            iterator = self._positioned(loader, state, drawn)
        finally:
            restore_rng(now, "the checkpoint")
        set_generator_states(loader, state.get("generators") or [])
        return iterator

    def _positioned(self, loader: Iterable, state: dict[str, Any], drawn: int) -> Iterable:
        if state.get("loader") is not None and _is_stateful(loader):
            loader.load_state_dict(state["loader"])  # type: ignore[attr-defined]
            return iter(loader)
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, EpochSampler) and _plain_batches(loader):
            sampler.start_next_pass_at(drawn * loader.batch_size)  # type: ignore[attr-defined]
            return iter(loader)
        doubt = _order_doubt(loader)
        if doubt and drawn:
            self._tell(
                doubt,
                f"resuming inside an epoch by drawing its first {drawn} batch(es) again from {doubt}: exact only if it "
                "yields the same batches on every pass started from the same random streams. For a resume that is "
                "exact by construction, use torchdata's StatefulDataLoader or a DataLoader over "
                "zae_engine.data.EpochSampler",
            )
        iterator = iter(loader)
        for done in range(drawn):
            try:
                next(iterator)
            except StopIteration:
                raise CheckpointError(
                    f"the checkpoint was taken after batch {drawn} of epoch {state['epoch']}, but the training "
                    f"loader now ends after {done} batches; resume with the loader the run was started with"
                ) from None
        return iterator

    def _savable(self, value: Any, what: str) -> Any:
        try:
            check_tree(value, what)
        except CheckpointError as exc:
            self._tell(what, f"{what} cannot go into a checkpoint ({exc}); a resumed epoch goes on without it")
            return None
        return value

    def _tell(self, key: str, message: str) -> None:
        if key not in self._told:
            self._told.add(key)
            warnings.warn(message, ResumeWarning, stacklevel=4)


# ---------------------------------------------------------------------- checking a loaded position
def check_position(state: Any, source: str) -> None:
    """Refuse a checkpoint's position that is not one `state_dict` wrote, before anything is loaded from it."""
    if state is None:
        return

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{source}: its position inside the epoch is damaged ({what}); load another checkpoint")

    if not isinstance(state, dict):
        raise bad("not a mapping")
    ints = {"epoch": 1, "drawn": 0, "step_at_start": 1, "micro": 0, "group": 1}
    for key, least in ints.items():
        if type(state.get(key)) is not int or state[key] < least:
            raise bad(f"{key!r} must be a whole number >= {least}")
    if state.get("phase") not in ("train", "valid"):
        raise bad("'phase' must be 'train' or 'valid'")
    if state.get("remaining") is not None and type(state["remaining"]) is not int:
        raise bad("'remaining' must be a whole number or null")
    grads = state.get("grads")
    if grads is not None and not (isinstance(grads, dict) and all(isinstance(g, torch.Tensor) for g in grads.values())):
        raise bad("'grads' must map parameter names to tensors")
    log = state.get("log")
    if not isinstance(log, dict) or type(log.get("count")) is not int or log["count"] < 0:
        raise bad("'log' must hold a step count")
    scalars, others, order = log.get("scalars"), log.get("others"), log.get("order")
    if not isinstance(scalars, dict) or not isinstance(others, dict) or not isinstance(order, list):
        raise bad("'log' must hold 'scalars', 'others' and 'order'")
    if not all(isinstance(v, torch.Tensor) and v.dim() == 1 and len(v) == log["count"] for v in scalars.values()):
        raise bad("each scalar column of 'log' must be a 1-D tensor of one value per step")
    if not all(isinstance(v, list) for v in others.values()) or not all(isinstance(k, str) for k in order):
        raise bad("'log' columns must be lists, named by strings")
    for key in ("start", "valid_start"):
        part = state.get(key)
        if part is None and key == "valid_start":
            continue
        if not isinstance(part, dict) or not isinstance(part.get("rng"), dict):
            raise bad(f"{key!r} must hold the random streams")
        if not all(isinstance(g, torch.Tensor) for g in part.get("generators") or []):
            raise bad(f"{key!r} generators must be tensors")
    if not all(isinstance(g, torch.Tensor) for g in state.get("generators") or []):
        raise bad("'generators' must be tensors")
    for key in ("added", "loader"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            raise bad(f"{key!r} must be a mapping or null")


# ---------------------------------------------------------------------- loaders
def _is_stateful(loader: Any) -> bool:
    """A DataLoader that saves its own position (torchdata's StatefulDataLoader, or one like it)."""
    return (
        isinstance(loader, DataLoader)
        and callable(getattr(loader, "state_dict", None))
        and callable(getattr(loader, "load_state_dict", None))
    )


def _plain_batches(loader: Any) -> bool:
    """Batches of `batch_size` consecutive sampler indices: batch k starts at sample k * batch_size."""
    return isinstance(loader, DataLoader) and bool(loader.batch_size) and isinstance(loader.batch_sampler, BatchSampler)


def _order_doubt(loader: Any) -> str | None:
    """What keeps the trainer from knowing that a replay repeats the order, or None when it knows."""
    if isinstance(loader, (list, tuple)):
        return None
    if not isinstance(loader, DataLoader):
        return f"a {type(loader).__name__} (not a DataLoader)"
    if isinstance(loader.dataset, IterableDataset):
        return f"the iterable dataset {type(loader.dataset).__name__}"
    if not isinstance(loader.batch_sampler, BatchSampler) and loader.batch_sampler is not None:
        return f"the batch sampler {type(loader.batch_sampler).__name__}"
    if type(loader.sampler) not in (*_KNOWN_SAMPLERS, EpochSampler):
        return f"the sampler {type(loader.sampler).__name__}"
    return None


def _generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a loader's order and worker seeds come from (the loader's, its sampler's)."""
    found: list[torch.Generator] = []
    for owner in (loader, getattr(loader, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def generator_states(loader: Any) -> list[torch.Tensor]:
    return [g.get_state() for g in _generators(loader)]


def set_generator_states(loader: Any, states: list[torch.Tensor]) -> None:
    generators = _generators(loader)
    if len(generators) == len(states):
        for generator, saved in zip(generators, states):
            generator.set_state(saved)
