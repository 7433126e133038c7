"""The Trainer: one readable loop, with add-ons called at fixed points.

Read `run_in_process` top to bottom: setup, epochs (train, then validation), epoch end, teardown.
The per-batch path (`_train_batch` -> `_optimizer_step`) does no host sync, builds no dicts, enters no context
it does not need and calls only the hooks some add-on actually implements.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from time import perf_counter
from typing import Any, ClassVar

import torch
from pydantic import ValidationError
from torch import nn

from zae_engine.checkpoint.weights import apply_state_dict, load_weights, save_weights
from zae_engine.data import set_loader_epoch
from zae_engine.distributed import (
    all_gather_rows,
    all_reduce_mean,
    average_gradients,
    every_rank,
    is_distributed,
    is_rank_zero,
    max_over_ranks,
)
from zae_engine.errors import (
    AddOnWarning,
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    StepResultError,
    TrainingInterrupted,
    did_you_mean,
    pydantic_message,
)
from zae_engine.trainer import compose
from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.batch import batch_mover, move_to_cpu
from zae_engine.trainer.config import TRAINER_FIELDS, TrainerConfig
from zae_engine.trainer.devices import DeviceLike, parse_devices
from zae_engine.trainer.display import REFRESH_SECONDS, BarDisplay, LineDisplay, NullDisplay
from zae_engine.trainer.logbook import EpochLog, StepLog
from zae_engine.trainer.position import EpochPosition, check_position
from zae_engine.trainer.precision import Precision
from zae_engine.trainer.progress import ProgressChecker
from zae_engine.trainer.resume import merge_optimizer, merge_scheduler
from zae_engine.trainer.state_fit import check_fits
from zae_engine.trainer.strategy import Strategy

_PREFIX = {"train": "train/", "valid": "valid/", "test": "test/"}
_AGREE_EVERY = 8  # optimizer steps between DDP ranks' agreement on a stop request (one tiny all-reduce)
_DUPLICATE_S = 2.0  # a repeat of the first signal within this is a duplicate, not a request to abort
_STOP_CODES = {"SIGINT": 1, "SIGTERM": 2}  # SIGTERM wins when ranks got different signals (exit 143)
_STOP_NAMES = {code: name for name, code in _STOP_CODES.items()}
_BOUND_STEP = ("_forward_train", "_forward_test", "_backward", "_step_optimizer")  # remade by _bind_step
_STATE_SLOTS = (
    *("config", "devices", "device", "model", "optimizer", "scheduler", "progress_checker", "history", "best"),
    *("strategy", "should_stop", "handle_signals", "addons", "_best_weights", "_precision", "_display"),
    *("_interrupt", "_stop_request", "_agreeing", "_micro", "_group", "_remaining", "_epoch_loader", "_position"),
    *("_hooks", "_launcher", "_logs", "_epoch_logs", "_move", "_clip", "_skip_non_finite", "_log_interval"),
    *("_schedule_per_step", *_BOUND_STEP),
)


class Trainer(ABC, metaclass=compose.TrainerMeta):
    """Subclass it, write `train_step` and `test_step`, call `run`.

    `device` is 'cpu', 'cuda', 'cuda:1', a torch.device, or a list of them (a list of several needs a
    launcher add-on such as `mpu`). `addons` are configured add-on instances; the other keywords are the
    Trainer's options (`TrainerConfig`), readable afterwards as `trainer.config` and as attributes
    (`trainer.gradient_clip`). A class made by `Trainer.add_on(...)` also takes its add-ons' keywords.
    """

    _addon_classes: ClassVar[tuple[type[AddOnBase], ...]] = ()
    # The trainer's own state is in slots, so the step's attribute reads and method calls stay on Python's fast,
    # specialised path; a subclass's attributes go to `__dict__` as usual (Python 3.11 leaves that fast path once
    # an instance dict holds more than 30 names, which the trainer alone would exceed).
    __slots__ = _STATE_SLOTS + ("__dict__", "__weakref__")

    def __init__(
        self,
        model: nn.Module,
        device: DeviceLike | list[DeviceLike],
        mode: str,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        addons: Sequence[AddOnBase] = (),
        **options: Any,
    ) -> None:
        name = type(self).__name__
        flat = compose.flat_instances(self)  # keywords a composed class took off for its add-ons
        unknown = [key for key in options if key not in TRAINER_FIELDS]
        if unknown:
            known = TRAINER_FIELDS | {f for cls in type(self)._addon_classes for f in cls.Config.model_fields}
            raise compose.unknown_keyword(type(self), unknown[0], known)
        try:
            self.config = TrainerConfig(mode=mode, **options)
        except ValidationError as err:
            raise ConfigError(pydantic_message(name, err)) from None
        _check_objects(name, model, optimizer, scheduler, self.config.mode)

        self.devices = parse_devices(device)
        self.device = self.devices[0]
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.progress_checker = ProgressChecker()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"metric": None, "value": math.inf, "epoch": None}
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._precision: Precision | None = None  # made by _place, for the device
        self.strategy = Strategy()  # where the model's state lives: a launcher puts its own in place for a run
        self._display: NullDisplay = NullDisplay()
        self._interrupt: str | None = None  # the stop every rank agreed on (a signal's name): the loop ends
        self._stop_request: str | None = None  # a signal this process received, not yet agreed under DDP
        self._agreeing = False  # under DDP, stop requests are agreed every _AGREE_EVERY optimizer steps
        self.should_stop = False  # set by add-ons (e.g. early stopping) to end the run after this epoch
        self.handle_signals = True  # False: leave SIGINT/SIGTERM alone (a caller that handles them itself)
        self._micro = 0
        self._group = 1
        self._remaining: int | None = None
        self._epoch_loader: Iterable | None = None  # what `gather` reads the sampler of
        self._position = EpochPosition()  # where a training epoch stands, for checkpoints taken inside it

        attachment = compose.attach(self, [*flat, *addons])
        self.addons = attachment.addons
        self._hooks = attachment.hooks
        self._launcher = attachment.launcher
        self._lent = attachment.lent
        if len(self.devices) > 1 and self._launcher is None:
            raise ConfigError(
                f"{name}: {len(self.devices)} devices were given but no add-on runs several processes; "
                "add MultiGPUAddon (pip install 'zae-engine[mpu]') or pass one device"
            )
        # with a launcher over several devices the workers place the model; the parent leaves it where it is
        self._place(self.device, move_model=self._launcher is None or len(self.devices) == 1)
        for hook in self._hooks.on_attach:
            hook()

    # ------------------------------------------------------------------ composition
    @classmethod
    def add_on(cls, *addon_classes: type) -> type[Trainer]:
        """A subclass of `cls` carrying these add-ons; it can be subclassed and add-on'd again.

        Its constructor takes the add-ons' keywords flat (`save_path=...`). Add-ons written the upstream way
        (a classmethod `apply(base_cls)` returning a subclass) are applied in place.
        """
        return compose.add_on(cls, addon_classes)

    def addon(self, name: str) -> AddOnBase:
        """The add-on instance registered under `name` on this trainer."""
        try:
            return self.addons[name]
        except KeyError:
            raise KeyError(f"no add-on '{name}' on {type(self).__name__}{did_you_mean(name, self.addons)}") from None

    # ------------------------------------------------------------------ user API
    @abstractmethod
    def train_step(self, batch: Any) -> dict[str, Any]:
        """One training batch -> a dict holding 'loss' (a tensor the loop will backpropagate)."""

    @abstractmethod
    def test_step(self, batch: Any) -> dict[str, Any]:
        """One evaluation batch (run under no_grad) -> a dict of results, usually with 'loss'."""

    def metric_on_epoch_end(self) -> dict[str, Any]:
        """Override to add epoch-level metrics (from `log_train`/`log_test`) to the epoch summary.

        Under DDP each rank sees its shard and the values returned are averaged over ranks — right for means,
        wrong for F1, AUC or a median: compute those on `self.gather(...)` of the per-sample values instead.
        """
        return {}

    def gather(self, values: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-sample values of this epoch from every rank, as if one process had seen the whole data set.

        Give one tensor (rows = samples) or a list of them (e.g. `self.log_test["preds"]`, concatenated). Under DDP
        the rows of all ranks come back in the sampler's global order, without the samples a DistributedSampler
        repeated to even out the shards; in one process the input comes back concatenated. Call it on every rank.
        """
        local = values if isinstance(values, torch.Tensor) else torch.cat([torch.as_tensor(v) for v in values])
        parts = all_gather_rows(local, self.device)
        if len(parts) == 1:
            return parts[0]
        sampler = getattr(self._epoch_loader, "sampler", None)
        size = getattr(getattr(self._epoch_loader, "dataset", None), "__len__", None)
        per_rank = getattr(sampler, "num_samples", None)
        if per_rank is not None and size is not None and all(len(p) == per_rank for p in parts):
            # rank r's i-th sample is the sampler's (i * world + r)-th: interleave, then drop the repeated tail
            return torch.stack(parts, dim=1).reshape(-1, *parts[0].shape[1:])[: size()]
        return torch.cat(parts)

    @property
    def log_train(self) -> EpochLog:
        """This epoch's per-step training results, key -> list; add your own keys (cleared when an epoch starts)."""
        return self._epoch_logs["train"]

    @property
    def log_test(self) -> EpochLog:
        """This epoch's per-step validation/test (or `inference`) results, key -> list; add your own keys too."""
        return self._epoch_logs["test"]

    @property
    def is_rank_zero(self) -> bool:
        return is_rank_zero()

    @property
    def launcher(self) -> AddOnBase | None:
        """The add-on that decides where `run()` happens (e.g. `mpu`), if any."""
        return self._launcher

    @property
    def unwrapped_model(self) -> nn.Module:
        """The user's module, under any DDP or torch.compile wrappers: what checkpoints are made of."""
        model = self.model
        while True:
            if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
                model = model.module
            elif hasattr(model, "_orig_mod"):
                model = model._orig_mod
            else:
                return model

    def set_device(self, device: DeviceLike, move_model: bool = True) -> None:
        """Re-target this trainer to `device`: model, optimizer state and step logs. Launchers call it per worker;
        one that puts the model on the device itself (fsdp places only its shards) passes `move_model=False`."""
        device = parse_devices(device)[0]
        if not move_model:
            self._place(device, move_model=False)
        elif device != self.device:
            self._place(device)
            if self.optimizer is not None and self.optimizer.state:
                self.optimizer.load_state_dict(self.optimizer.state_dict())  # re-casts state onto each param's device

    def _place(self, device: torch.device, move_model: bool = True) -> None:
        self.device = device
        if move_model and not _on_meta(self.model):  # a meta model is a stand-in for checks: it stays there
            if device.type == "cuda":
                torch.cuda.set_device(device)
            self.model = self.model.to(device)
        self._logs = {"train": StepLog(device), "test": StepLog(device)}
        self._epoch_logs = {mode: EpochLog(log) for mode, log in self._logs.items()}
        self._move = batch_mover(device)
        self._set_up_precision()

    def _set_up_precision(self) -> None:
        """The precision's step functions for this device; an fp16 loss scale carries over a device change."""
        previous = self._precision
        self._precision = Precision(self.config.precision, self.device, previous and previous.scaler.state_dict())
        self._bind_step()

    def _bind_step(self) -> None:
        """What the per-batch path calls and reads, taken from the precision and the options once per epoch.

        Plain functions and the optimizer's own method: nothing bound here refers back to the trainer, so a trainer
        still has no reference cycle, and the step pays no option lookups.
        """
        precision, config, cls = self._precision, self.config, type(self)
        self._forward_train = precision.forward(cls.train_step)  # called as (trainer, batch)
        self._forward_test = precision.forward(cls.test_step)
        self._backward = precision.backward()
        self._step_optimizer = precision.optimizer_step(self.optimizer) if self.optimizer is not None else None
        self._clip = config.gradient_clip
        self._skip_non_finite = config.nan_policy == "skip"
        self._log_interval = config.log_interval
        self._schedule_per_step = config.scheduler_step_on_batch and self.scheduler is not None

    @property
    def scaler(self) -> torch.amp.GradScaler:
        """The gradient scaler: every trainer has one, enabled only for precision='fp16'."""
        return self._precision.scaler

    def reconfigure(self, **options: Any) -> None:
        """Replace some of the Trainer's options (validated like the constructor's); not while `run()` is going."""
        unknown = [key for key in options if key not in TRAINER_FIELDS]
        if unknown:
            raise compose.unknown_keyword(type(self), unknown[0], TRAINER_FIELDS)
        try:
            self.config = TrainerConfig.model_validate({**self.config.model_dump(), **options})
        except ValidationError as err:
            raise ConfigError(pydantic_message(type(self).__name__, err)) from None
        self._set_up_precision()

    def toggle(self, mode: str | None = None) -> None:
        """Switch to `mode`, or flip between 'train' and 'test'."""
        if mode is None:
            mode = "test" if self.config.mode == "train" else "train"
        if mode not in ("train", "test"):
            raise ConfigError(f"{type(self).__name__}.toggle: mode must be 'train' or 'test', got {mode!r}")
        self.config = self.config.model_copy(update={"mode": mode})

    def run(self, n_epoch: int, loader: Iterable, valid_loader: Iterable | None = None, *, total: bool = False) -> None:
        """Train (or, in test mode, evaluate) for `n_epoch` more epochs, validating after each when given a loader.

        `total=True`: train until `n_epoch` epochs are done in all — after a resume only those left, and none when
        the run is already complete — so a job that may be restarted can always be launched the same way.
        """
        if self._launcher is not None:
            return self._launcher.launch(n_epoch, loader, valid_loader, total=total)
        return self.run_in_process(n_epoch, loader, valid_loader, total=total)

    # ------------------------------------------------------------------ the loop
    def run_in_process(
        self, n_epoch: int, loader: Iterable, valid_loader: Iterable | None = None, *, total: bool = False
    ) -> None:
        """The loop itself, in this process. Launchers call this in each worker they start."""
        if isinstance(n_epoch, bool) or not isinstance(n_epoch, int) or n_epoch < 0:
            raise ConfigError(f"{type(self).__name__}.run: 'n_epoch' must be a whole number >= 0, got {n_epoch!r}")
        if loader is None:
            raise ConfigError(
                f"{type(self).__name__}.run: 'loader' is None; pass a DataLoader or any iterable of batches"
            )
        hooks = self._hooks
        if self.config.compile_model and not hasattr(self.model, "_orig_mod"):
            # here, after a launcher wrapped the model (DDP): compile(DDP(model)) lets dynamo split graphs at buckets
            self.model = torch.compile(self.model)
        self._display = self._make_display()
        self._interrupt, self._stop_request, self.should_stop = None, None, False
        self._agreeing = is_distributed()
        if self.mode == "train":
            self.optimizer.zero_grad(set_to_none=True)
        error: BaseException | None = None
        with self._graceful_signals():
            try:
                _call(hooks.on_run_start)  # may restore a checkpoint: check the schedule after it
                first = self.progress_checker.get_epoch()
                if total:
                    n_epoch = max(0, n_epoch - (first - 1))  # epochs a resumed checkpoint already holds are done
                    if n_epoch == 0 and self.is_rank_zero:
                        self._display_note(f"already complete: {first - 1} epoch(s) done; nothing to train")
                self._check_scheduler_budget(n_epoch, loader)
                self._display.run_start(first, first + n_epoch - 1)
                for _ in range(n_epoch):
                    epoch = self.progress_checker.get_epoch()
                    _call(hooks.on_epoch_start, epoch)
                    summary: dict[str, Any] = {"epoch": epoch}
                    summary.update(_prefixed(self.run_epoch(loader), self.mode))
                    if self._agreeing:
                        self._agree_to_stop()
                    if valid_loader is not None and self.mode == "train" and self._interrupt is None:
                        summary.update(_prefixed(self._validate(valid_loader), "valid"))
                        if self._agreeing:
                            self._agree_to_stop()
                    if self._interrupt is not None:
                        break
                    self._end_epoch(epoch, summary)
                    if self.should_stop:
                        break
                if self._interrupt is not None:
                    raise TrainingInterrupted(self._interrupt)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._display.run_end()
                self._end_run(error)

    def _validate(self, valid_loader: Iterable) -> dict[str, float]:
        """The validation pass of a training epoch, in test mode; train mode comes back whatever happens."""
        self._position.enter_validation(valid_loader)
        self.toggle("test")
        try:
            _call(self._hooks.on_validation_start)
            return self.run_epoch(valid_loader)
        finally:
            try:
                _call(self._hooks.on_validation_end)
            finally:
                self.toggle("train")

    def run_epoch(self, loader: Iterable) -> dict[str, float]:
        """One pass over `loader` in the current mode; returns the epoch means (reduced over ranks)."""
        train = self.mode == "train"
        self._bind_step()
        log = self._logs[self.mode]
        self._epoch_logs[self.mode].clear()
        self.model.train(train)
        total = _length(loader)
        display = self._display
        epoch = self.progress_checker.get_epoch()
        self._epoch_loader = loader
        set_loader_epoch(loader, epoch)  # samplers whose order is a function of the epoch (exact on resume)
        display.epoch_start(epoch, self.mode, total)
        batches = loader
        if train:  # accumulation groups shrink near the end of a sized epoch; without accumulation nothing to track
            self._remaining = total if self.config.grad_accum_steps > 1 else None
            self._micro = 0
            self._start_group()
            batches = self._position.begin(self, loader, epoch)  # after a mid-epoch resume: at the next batch
        if type(self).run_batch is not Trainer.run_batch:
            step = self.run_batch  # a subclass (or an upstream-style add-on) hooks in there
        else:
            step = self._train_batch if train else self._eval_batch
        ticking = isinstance(display, BarDisplay) or self.config.nan_policy == "raise"
        next_tick = perf_counter() + REFRESH_SECONDS
        position = self._position
        for batch in batches:
            if train:
                position.drawn += 1
            _held = step(batch)  # kept until the next step replaces it, as a hand-written loop keeps its loss
            if self._interrupt is not None:
                break
            if ticking and perf_counter() >= next_tick:
                self._tick(log)
                next_tick = perf_counter() + REFRESH_SECONDS
        if train and self._micro and self._interrupt is None:
            self._finish_partial_group()  # the loader ended inside a group (its length was unknown or wrong)
        means = log.means()
        self._check_finite(log, means)
        display.refresh(log.count, means, self._lr())
        means.update({k: float(v) for k, v in self.metric_on_epoch_end().items()})
        self._epoch_loader = None
        return all_reduce_mean(means, self.device)

    def run_batch(self, batch: Any) -> dict[str, Any] | None:
        """One batch in the current mode: moved to the device, stepped, logged. Returns the step's result."""
        return self._train_batch(batch) if self.mode == "train" else self._eval_batch(batch)

    def _eval_batch(self, batch: Any) -> dict[str, Any]:
        batch = self._move(batch)
        with torch.no_grad():
            result = self._forward_test(self, batch)
        if not isinstance(result, dict):
            raise StepResultError(f"{type(self).__name__}.test_step must return a dict, got {type(result).__name__}")
        self._logs["test"].append(result)
        for hook in self._hooks.on_batch_end:
            hook(result)
        return result

    def _train_batch(self, batch: Any) -> dict[str, Any] | None:
        batch = self._move(batch)
        last = self._micro + 1 >= self._group  # the last batch of its accumulation group: the optimizer steps
        if last:
            result = self._forward_backward(batch)
        else:
            with self.strategy.no_sync(self.model):  # gradients are synchronised on the group's last batch
                result = self._forward_backward(batch)
        if result is None:
            return None
        self._micro += 1
        self._logs["train"].append(result)  # before the step, so on_log's running means include this batch
        if last:
            self._optimizer_step()
        for hook in self._hooks.on_batch_end:
            hook(result)
        return result

    def _forward_backward(self, batch: Any) -> dict[str, Any] | None:
        """`train_step` and its backward; None when the batch is skipped (non-finite loss, nan_policy='skip')."""
        result = self._forward_train(self, batch)
        try:
            loss = result["loss"]
        except (KeyError, TypeError, IndexError):
            raise StepResultError(_missing_loss(type(self).__name__, result)) from None
        if self._skip_non_finite and not self._loss_is_finite(loss):
            self._skip_step()
            return None
        if self._group > 1:
            loss = loss / self._group
        self._backward(loss)
        return result

    def _optimizer_step(self) -> None:
        optimizer = self.optimizer
        if self._clip:
            self._precision.unscale(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self._clip)
        self._step_optimizer()
        optimizer.zero_grad(set_to_none=True)
        if self._schedule_per_step:
            self.scheduler.step()
        progress = self.progress_checker
        progress.step += 1
        if self._group == 1 and self._remaining is None:
            self._micro = 0  # no accumulation: every batch is a group of one
        else:
            self._start_group()
        hooks = self._hooks
        for hook in hooks.on_optimizer_step:
            hook()
        if self._agreeing and progress.step % _AGREE_EVERY == 0:
            self._agree_to_stop()
        if hooks.on_log and (progress.step - 1) % self._log_interval == 0:
            self._emit_log()

    def _finish_partial_group(self) -> None:
        """Step on a group cut short: average over the batches it really had, synchronised across DDP ranks."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if self._is_ddp():
            average_gradients(grads)  # the group's last backward ran under no_sync
        if grads and self._micro != self._group:
            torch._foreach_mul_(grads, self._group / self._micro)
        self._optimizer_step()

    def _start_group(self) -> None:
        """Begin an accumulation group; near an epoch's end it shrinks to the batches that are left."""
        if self._remaining is not None:
            self._remaining -= self._micro
        self._micro = 0
        self._group = self.config.grad_accum_steps
        if self._remaining is not None and self._remaining > 0:
            self._group = min(self._group, self._remaining)

    def _loss_is_finite(self, loss: torch.Tensor) -> bool:
        """nan_policy='skip' syncs here every step; under DDP all ranks skip together if any rank's loss is bad."""
        finite = bool(torch.isfinite(loss.detach()).all())
        return every_rank(finite, self.device) if self._is_ddp() or self.strategy.sharded else finite

    def _is_ddp(self) -> bool:
        return getattr(self.model, "no_sync", None) is not None and is_distributed()

    def _skip_step(self) -> None:
        """Drop the batch and the gradients its accumulation group gathered so far."""
        self.optimizer.zero_grad(set_to_none=True)
        self._micro += 1
        self._start_group()

    def _end_epoch(self, epoch: int, summary: dict[str, Any]) -> None:
        if self.mode == "train":
            self._position.end()
        if self.optimizer is not None:
            for i, group in enumerate(self.optimizer.param_groups):
                summary[f"lr/group{i}"] = float(group["lr"])  # the rate this epoch ran with
        if self.mode == "train":
            self._track_best(epoch, summary)
            if self.scheduler is not None and not self.config.scheduler_step_on_batch:
                self.scheduler.step()
            self.progress_checker.update_epoch()
        summary["step"] = self.progress_checker.get_step() - 1
        self.history.append(summary)
        _call(self._hooks.on_epoch_end, epoch, summary)
        self._display.epoch_end(summary)

    def _track_best(self, epoch: int, summary: dict[str, Any]) -> None:
        metric = "valid/loss" if "valid/loss" in summary else "train/loss"
        value = summary.get(metric)
        self.best["metric"] = metric
        if value is None or not value < self.best["value"]:  # NaN never counts as better
            return
        self.best.update(value=value, epoch=epoch)
        if self.config.keep_best_weights:  # every rank takes part: the weights may be sharded
            weights = self.strategy.rank_zero_copy(self.unwrapped_model.state_dict())
            if weights is not None:
                self._best_weights = weights

    # ------------------------------------------------------------------ reading metrics at log points
    def _tick(self, log: StepLog) -> None:
        means = log.means()
        self._check_finite(log, means)
        self._display.refresh(log.count, means, self._lr())

    def _emit_log(self) -> None:
        metrics = _prefixed(self._logs["train"].means(), "train")
        if self.optimizer is not None:
            for i, group in enumerate(self.optimizer.param_groups):
                metrics[f"lr/group{i}"] = float(group["lr"])
        _call(self._hooks.on_log, metrics)

    def _check_finite(self, log: StepLog, means: dict[str, float]) -> None:
        if self.config.nan_policy != "raise" or math.isfinite(means.get("loss", 0.0)):
            return
        index = log.first_non_finite("loss")
        batch = "?" if index is None else index + 1
        phase = "train_step" if log is self._logs["train"] else "test_step"
        raise NonFiniteLossError(
            f"{type(self).__name__}.{phase} returned a non-finite loss at epoch {self.progress_checker.get_epoch()}, "
            f"batch {batch}. Lower the learning rate, set gradient_clip, check the data, or pass "
            "nan_policy='skip' to drop such steps"
        )

    def _lr(self) -> float | None:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else None

    # ------------------------------------------------------------------ helpers
    def _end_run(self, error: BaseException | None) -> None:
        """Every on_run_end runs, even after one fails; the first failure is raised (unless the run already failed),
        every other one is a warning naming its add-on."""
        failures: list[tuple[Any, Exception]] = []
        for fn in self._hooks.on_run_end:
            try:
                fn(error)
            except Exception as exc:
                failures.append((fn, exc))
        raised = failures[0][1] if failures and error is None else None
        for fn, exc in failures:
            if exc is not raised:
                warnings.warn(
                    f"{fn.__self__.label()}: on_run_end failed ({type(exc).__name__}: {exc})",
                    AddOnWarning,
                    stacklevel=2,
                )
        if raised is not None:
            raise raised

    def _make_display(self) -> NullDisplay:
        if not self.is_rank_zero:
            return NullDisplay()
        return BarDisplay() if self.config.log_bar else LineDisplay()

    def _check_scheduler_budget(self, n_epoch: int, loader: Iterable) -> None:
        from zae_engine.schedulers.core import SchedulerBase

        scheduler = self.scheduler
        if self.mode != "train" or not isinstance(scheduler, SchedulerBase):
            return
        accum = self.config.grad_accum_steps
        if self.config.scheduler_step_on_batch:
            batches = _length(loader)
            if batches is None:
                return
            need = n_epoch * math.ceil(batches / accum) - self._position.steps_done_pending(
                self.progress_checker.get_step()
            )
            how = f"{n_epoch} epochs x {math.ceil(batches / accum)} optimizer steps, stepped per batch"
        else:
            need, how = n_epoch, f"{n_epoch} epochs, stepped per epoch"
        left = scheduler.total_iters - max(scheduler.last_epoch, 0)
        if need > left:
            raise ConfigError(
                f"{type(scheduler).__name__}(total_iters={scheduler.total_iters}) is too short for this run: it needs "
                f"{need} more steps ({how}) but has {left} left. Raise total_iters to at least "
                f"{scheduler.total_iters - left + need}"
                + (
                    ""
                    if not self.config.scheduler_step_on_batch
                    else ", or step it per epoch (scheduler_step_on_batch=False)"
                )
            )

    @contextmanager
    def _graceful_signals(self) -> Iterator[None]:
        """First SIGINT/SIGTERM: finish this step and stop cleanly (every DDP rank at the same step). Second: abort.

        A repeat of the same signal within `_DUPLICATE_S` is the launcher forwarding what this process already got
        (a terminal's Ctrl-C, a scheduler signalling the whole job), not a second request.
        """
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        first: list[tuple[str, float]] = []

        def on_signal(signum: int, frame: Any) -> None:
            name, now = signal.Signals(signum).name, time.monotonic()
            if first:
                if first[0][0] == name and now - first[0][1] < _DUPLICATE_S:
                    return
                raise KeyboardInterrupt(f"second {name}: aborting")
            first.append((name, now))
            self._stop_request = name
            if not self._agreeing:
                self._interrupt = name
            if self.is_rank_zero:
                # a raw write, not the console: the signal may land inside a console print (rich is not reentrant)
                note = f"\n{name} received: stopping after this step (send it again to abort now)\n"
                with suppress(OSError):
                    os.write(2, note.encode())

        for sig in previous:
            signal.signal(sig, on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _agree_to_stop(self) -> None:
        """Under DDP: one small all-reduce so that all ranks stop at this same step if any rank was asked to."""
        code = _STOP_CODES.get(self._stop_request, 0)
        agreed = max_over_ranks(code, self.device)
        if agreed:
            self._interrupt = _STOP_NAMES[agreed]

    def _display_note(self, text: str) -> None:
        """One line for the person watching: through the progress display when a run shows one, else stderr."""
        console = getattr(self._display, "console", None)
        if console is not None:
            console.print(text, markup=False)
        else:
            print(text, file=sys.stderr)

    # ------------------------------------------------------------------ weights and state
    def save_model(self, path: str) -> None:
        """Write the (unwrapped) model weights atomically: safetensors for '*.safetensors', torch format otherwise.

        Rank 0 writes; under a sharding strategy (fsdp) every rank must call it, since the weights are gathered.
        """
        weights = self.strategy.rank_zero_copy(self.unwrapped_model.state_dict(), copy=False)
        if weights is not None:
            save_weights(weights, path)

    def apply_weights(self, path: str | None = None, strict: bool = True) -> None:
        """Load weights from `path`, or (None) the best weights this trainer has seen."""
        if path is None:
            if self._best_weights is None:
                raise ConfigError(
                    f"{type(self).__name__}.apply_weights: no best weights yet; run() in train mode first, or give a path"
                )
            apply_state_dict(self.unwrapped_model, self._best_weights, "the best-weights buffer", strict)
            return
        apply_state_dict(self.unwrapped_model, load_weights(path), repr(str(path)), strict)

    def inference(self, loader: Iterable, to_cpu: bool = True) -> list:
        """`test_step` over `loader` without touching weights; a list of each step's 'output' (or its whole dict).

        Results are detached copies on the CPU (so a large set does not pile up in GPU memory) unless `to_cpu=False`,
        and are also in `log_test` afterwards (`trainer.log_test["output"]`). The previous mode comes back even when
        a step fails.
        """
        previous = self.mode
        self.toggle("test")
        self.model.eval()
        log = self._epoch_logs["test"]
        log.clear()
        results = []
        try:
            with torch.no_grad(), self._precision.context():
                for batch in loader:
                    result = self.test_step(self._move(batch))
                    if to_cpu:
                        result = move_to_cpu(result)
                    if isinstance(result, dict):
                        log.recorded.append(result)
                    results.append(result["output"] if isinstance(result, dict) and "output" in result else result)
        finally:
            self.toggle(previous)
        return results

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs from the trainer and its add-ons (RNG states are the state manager's)."""
        return {
            "model": self.unwrapped_model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if hasattr(self.scheduler, "state_dict") else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "progress": self.progress_checker.state_dict(),
            "best": dict(self.best),
            "addons": {name: addon.state_dict() for name, addon in self.addons.items()},
            "position": self._position.state_dict(self),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "the checkpoint") -> list[str]:
        """Restore a `state_dict()`: progress from it, hyper-parameters from the current settings where they differ.

        Everything is checked before anything changes (see `state_fit`), and add-on states that fail to load are
        rolled back, so a load that fails leaves the trainer as it was. Returns the settings that differed
        ("scheduler total_iters 5 -> 10", ...), so a resume can say what it changed.
        """
        check_fits(self, state, source)
        check_position(state.get("position"), source)
        self._load_addon_states(state.get("addons") or {}, source)
        differences: list[str] = []
        if state.get("model") is not None:
            apply_state_dict(self.unwrapped_model, state["model"], source)
        scheduled = self.scheduler is not None and state.get("scheduler") is not None
        if state.get("optimizer") is not None and self.optimizer is not None:
            saved, changed = merge_optimizer(state["optimizer"], self.optimizer.state_dict(), scheduled)
            self.optimizer.load_state_dict(saved)
            differences += changed
        if scheduled and hasattr(self.scheduler, "load_state_dict"):
            saved, changed = merge_scheduler(state["scheduler"], self.scheduler.state_dict())
            self.scheduler.load_state_dict(saved)
            differences += changed
            if changed:
                self._rates_from_schedule()
        if state.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if state.get("progress") is not None:
            self.progress_checker.load_state_dict(state["progress"])
        self._position.load_state_dict(state.get("position"))
        best = state.get("best") or {}
        self.best.update({k: best[k] for k in ("metric", "value", "epoch") if k in best})
        return differences

    def _load_addon_states(self, states: dict[str, Any], source: str) -> None:
        """Each add-on's own state; if one refuses it, the ones already loaded get their previous state back."""
        done: list[tuple[AddOnBase, dict[str, Any]]] = []
        for name, addon_state in states.items():
            addon = self.addons.get(name)
            if addon is None:
                continue
            before = addon.state_dict()
            try:
                addon.load_state_dict(addon_state)
            except Exception as exc:
                for loaded, previous in reversed(done):
                    loaded.load_state_dict(previous)
                if isinstance(exc, CheckpointError):
                    raise
                raise CheckpointError(
                    f"{addon.label()} could not load its state from {source} ({type(exc).__name__}: {exc}); "
                    "nothing was loaded. The cause below is the add-on's own error"
                ) from exc
            done.append((addon, before))

    def _rates_from_schedule(self) -> None:
        """After a schedule's shape changed on resume, set the rate it gives at the resumed position."""
        from zae_engine.schedulers.core import SchedulerBase

        if isinstance(self.scheduler, SchedulerBase):  # closed form: the rate at any step is known
            rates = self.scheduler.get_lr()
            for group, rate in zip(self.optimizer.param_groups, rates):
                group["lr"] = rate
            self.scheduler._last_lr = list(rates)

    def __getstate__(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in _STATE_SLOTS if hasattr(self, name)} | self.__dict__
        state["_display"] = NullDisplay()  # consoles hold terminals; a worker makes its own
        state["_epoch_loader"] = None
        del state["_hooks"]  # bound methods: rebuilt by __setstate__
        for name in _BOUND_STEP:
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._hooks = compose.reattach(self)
        self._bind_step()

    def __repr__(self) -> str:
        addons = ", ".join(self.addons) or "no add-ons"
        return f"<{type(self).__name__} mode={self.mode} device={self.device} {addons}>"


def _option(field: str) -> property:
    return property(lambda self: getattr(self.config, field), doc=TrainerConfig.model_fields[field].description)


for _field in TrainerConfig.model_fields:  # trainer.mode, trainer.gradient_clip, ...: read-only views of .config
    setattr(Trainer, _field, _option(_field))


def _call(hooks: tuple, *args: Any) -> None:
    for hook in hooks:
        hook(*args)


def _check_objects(name: str, model: Any, optimizer: Any, scheduler: Any, mode: str) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{name}: 'model' must be a torch.nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"{name}: 'optimizer' must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}"
        )
    if mode == "train" and optimizer is None:
        raise ConfigError(f"{name}: mode='train' needs an optimizer; pass one, or use mode='test'")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise ConfigError(f"{name}: 'scheduler' must have a step() method or be None")


def _on_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _prefixed(values: dict[str, float], mode: str) -> dict[str, float]:
    prefix = _PREFIX[mode]
    return {prefix + k: v for k, v in values.items()}


def _length(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _missing_loss(trainer: str, result: Any) -> str:
    if isinstance(result, dict):
        return f"{trainer}.train_step must return a dict holding 'loss'; it returned keys {sorted(result)}"
    return f"{trainer}.train_step must return a dict holding 'loss'; it returned {type(result).__name__}"
