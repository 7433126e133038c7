"""StateManagerAddon: atomic, pickle-free checkpoints; keep the best and the latest; exact resume.

At the end of every `every_n_epochs`-th epoch it writes a checkpoint folder into `save_path` when the
checkpoint is among the `save_top_k` best by `monitor`, or when `keep_last` asks for the latest ones; older
folders that neither rule keeps are deleted. With `every_n_steps` / `every_n_minutes` it also saves inside
epochs: an optimizer step makes a save due, and it is written when that batch is done (its `on_batch_end` hooks
included). Such a checkpoint, like the one written on SIGINT/SIGTERM (within `stop_budget`), holds the
trainer's position in the epoch: a resume continues at the next batch, exactly. With `async_save` a background
thread writes while training goes on (`zae_engine.checkpoint.background`).
The trainer gains `save_state(path=None)` and `load_state(path=None)`.

Under torch.distributed only rank 0 writes (weights come from `trainer.unwrapped_model`, so there is no
`module.` prefix); every rank passes a barrier after an epoch's save so none runs ahead of it. Under a sharding
strategy (fsdp) every rank writes its shards into the folder rank 0 makes (`zae_engine.checkpoint.sharded`)
and reads back the pieces it holds. See docs/checkpoints.md for the layout on disk and what a resume restores.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from time import monotonic
from typing import Any

import torch

from zae_engine._version import __version__
from zae_engine.checkpoint.background import BackgroundWriter
from zae_engine.checkpoint.export import read_weights
from zae_engine.checkpoint.manifest import CheckpointEntry, Manifest
from zae_engine.checkpoint.rng import capture_rng, check_rng, gather_rng, restore_rng, rng_of_this_rank
from zae_engine.checkpoint.sharded import save_sharded
from zae_engine.checkpoint.staging import HostStaging
from zae_engine.checkpoint.store import CheckpointStore, find_checkpoint, write_folder
from zae_engine.distributed import any_rank, barrier, is_rank_zero
from zae_engine.errors import AddOnWarning, CheckpointError, MissingMetricError, TrainingInterrupted
from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.addons.configs import StateManagerConfig
from zae_engine.trainer.addons.monitor import monitored_value
from zae_engine.trainer.addons.save_schedule import SaveSchedule


class StateManagerAddon(AddOnBase):
    """Checkpoints a run into `save_path` and resumes it exactly; lends save_state/load_state to the trainer."""

    name = "state_manager"
    Config = StateManagerConfig
    config: StateManagerConfig
    # persist: after the add-ons that update state at epoch end (their state is saved with its epoch), before
    # the reporting ones (trackers find this epoch's checkpoint in `last_checkpoint`)
    phase = "persist"
    trainer_methods = ("save_state", "load_state")

    def __init__(self, config: StateManagerConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self._store = CheckpointStore(self.config.save_path)
        #: the latest complete checkpoint this add-on saved or loaded (tracker plugins upload it)
        self.last_checkpoint: Path | None = None
        #: the best checkpoint in save_path by `monitor`, after the latest save or load
        self.best_checkpoint: Path | None = None
        self._monitor: str | None = self.config.monitor
        self._pending_rng: dict[str, Any] | None = None
        self._saved_at: dict[str, int] | None = None  # progress of the latest save/load
        self._unsaved: dict[str, Any] | None = None  # summary of an epoch that ended without a checkpoint
        self._schedule = SaveSchedule(self.config.every_n_steps, self.config.every_n_minutes)
        self._writer = BackgroundWriter()
        self._staging = HostStaging()
        self._write_seconds: float | None = None  # how long the last checkpoint took to write
        self._step_save_due = False

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_writer=BackgroundWriter(), _staging=HostStaging())  # threads and pinned memory stay here
        return state

    @property
    def store(self) -> CheckpointStore:
        """The checkpoints in `config.save_path` (followed if the config is changed after construction)."""
        if str(self._store.root) != str(Path(self.config.save_path)):
            self._store = CheckpointStore(self.config.save_path)
        return self._store

    # ------------------------------------------------------------------ hooks
    def on_run_start(self) -> None:
        if self.trainer.mode == "train" and is_rank_zero():
            self.store.acquire()  # the only writer of save_path from here to on_run_end; refuses before training
        if self.config.resume and self._saved_at is None and self.store.latest() is not None:
            self.load_state()
        if self._pending_rng is not None:
            # again here, so the streams are exactly as saved when the first epoch starts (also in spawned workers)
            restore_rng(self._pending_rng, "the loaded checkpoint")
            self._pending_rng = None
        self._schedule = SaveSchedule(self.config.every_n_steps, self.config.every_n_minutes)
        self._schedule.start(self.trainer.progress_checker.get_step() - 1)
        self._step_save_due = False

    def on_optimizer_step(self) -> None:
        schedule = self._schedule
        if not schedule.active or self.trainer.mode != "train":
            return
        trainer = self.trainer
        if schedule.due(trainer.progress_checker.get_step() - 1, trainer.device):
            self._step_save_due = True  # written when the batch is done (its on_batch_end hooks included)

    def on_batch_end(self, result: dict[str, Any]) -> None:
        if self._step_save_due and self.trainer.mode == "train":
            self._save_step()

    def _save_step(self) -> None:
        self._step_save_due = False
        ranks = gather_rng()  # every rank is at this batch (the schedule's answer is the same on all)
        if self._writes_here:
            self._save("step", None, background=self.config.async_save, ranks=ranks)
        self._schedule.saved()

    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        if self.trainer.mode != "train":
            return
        if epoch % self.config.every_n_epochs:
            self._unsaved = summary
            if self._step_save_due:  # due at the epoch's last step (a group cut short): save its end instead
                self._save_step()
            return
        self._step_save_due = False  # the epoch's own checkpoint comes now
        value = self._monitored(summary)
        self._unsaved = None
        ranks = gather_rng()  # every rank's random streams, so a resume continues each rank's own
        wanted = False
        if is_rank_zero():
            if self.config.keep_last == 0:
                self._settle()  # ranking reads the manifest: not while the thread writes it
            wanted = self.config.keep_last > 0 or self._enters_top_k(value)
        if self._sharded:
            wanted = any_rank(wanted, self.trainer.device)  # rank 0 decides; every rank writes its shards
        if wanted and self._save("epoch", value, background=self.config.async_save, ranks=ranks) is _SKIPPED:
            self._unsaved = summary  # saved at the end of the run instead
        self._schedule.saved()
        barrier()  # every rank reaches this after the same epoch; none runs ahead of rank 0's write

    def on_run_end(self, error: BaseException | None) -> None:
        try:
            if self.trainer.mode != "train":
                return
            if isinstance(error, TrainingInterrupted):
                if self.config.save_on_interrupt:
                    ranks = gather_rng()  # every rank stopped after the same step: all of them take part
                    if self._writes_here:
                        self._stop_save(error.signal_name, ranks)
                return
            if not self._writes_here:
                return
            self._settle(raise_failure=error is None)
            if error is None and self._unsaved is not None and self.config.keep_last > 0:
                self._save("epoch", self._monitored(self._unsaved))  # the run ended between every_n_epochs saves
        finally:
            self._unsaved = None
            try:
                self._settle(raise_failure=False)  # the lock goes only when nothing is being written any more
            finally:
                self._staging.release()
                if is_rank_zero():
                    self.store.release()

    def state_dict(self) -> dict[str, Any]:
        # only where the files are, so a launcher handing rank 0's state back also hands these back
        return {
            "last_checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint),
            "best_checkpoint": None if self.best_checkpoint is None else str(self.best_checkpoint),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_rng = None  # a state handed back after a run replaces one loaded before it
        root = self.store.root.resolve()
        for key in ("last_checkpoint", "best_checkpoint"):
            value = state.get(key)
            if isinstance(value, str) and Path(value).resolve().parent == root:
                setattr(self, key, Path(value))  # a path outside save_path from a file is never taken

    # ------------------------------------------------------------------ lent to the trainer
    def save_state(self, path: str | Path | None = None) -> Path | None:
        """Checkpoint the trainer now: into save_path (listed, never pruned) or, given `path`, into that folder.

        Returns the checkpoint folder (None on ranks other than 0). Under a sharding strategy (fsdp) every rank
        must call it: each writes its shards.
        """
        if not self._writes_here:
            return None
        self._settle()
        if path is None:
            if not is_rank_zero():  # sharded: this rank writes its shards into rank 0's folder, under rank 0's lock
                return self._save("manual", None)
            with self.store.writer():  # outside run(): hold the lock for this save only
                return self._save("manual", None)
        state, meta = self._gather_state(), self._meta("manual", None)
        target = self._written(state, lambda: write_folder(Path(path), state, meta, self._format))
        if target is None:
            return None
        self.last_checkpoint = target
        self._saved_at = self.trainer.progress_checker.state_dict()
        return target

    def load_state(self, path: str | Path | None = None) -> Path:
        """Restore model, optimizer, scheduler, scaler, progress, best value, add-on states and RNG streams.

        `path`: a checkpoint folder, a save_path (its latest complete checkpoint), or a `.ckpt` file;
        None means the latest complete checkpoint in this add-on's save_path. Returns what was loaded.
        """
        manifest: Manifest | None = None  # parsed once for the whole load
        self._settle()
        if path is None:
            manifest = self.store.manifest()
            if self.store.latest(manifest) is None:
                raise CheckpointError(
                    f"no checkpoint to resume from in {self.config.save_path!r} (no manifest.json listing one); "
                    "train with this add-on first, or pass load_state(path)"
                )
            path = self.config.save_path
        target, manifest = find_checkpoint(path, manifest)
        state, meta = self.trainer.strategy.read_checkpoint(target, self.trainer)  # as this rank holds the state
        source = repr(str(target))
        trainer = self.trainer
        rng, rng_note = rng_of_this_rank(state)
        if rng is not None:
            check_rng(rng, source)  # before anything changes: a failed load changes nothing
        history = _checked_history(state.get("history"), source)
        differences = trainer.load_state_dict(state, source)  # validates all it can, then applies
        if rng is not None:
            restore_rng(rng, source)
            self._pending_rng = rng
        if rng_note is not None:
            warnings.warn(f"{self.label()}: {rng_note}", AddOnWarning, stacklevel=2)
        if differences and is_rank_zero():
            trainer._display_note(
                f"resumed from {source} at epoch {trainer.progress_checker.get_epoch() - 1}; "
                f"these settings differ from the checkpoint's, yours apply: {'; '.join(differences)}"
            )
        if history is not None:
            trainer.history = history
        self._saved_at = trainer.progress_checker.state_dict()
        self.last_checkpoint = target
        if target.is_dir() and target.parent.resolve() == self.store.root.resolve():
            manifest = manifest or self.store.manifest()
            self.best_checkpoint = self.store.best(manifest)
            self._restore_best_weights(state, target, manifest)
        elif self.best_checkpoint is not None and not self.best_checkpoint.exists():
            self.best_checkpoint = None
        return target

    # ------------------------------------------------------------------ saving
    @property
    def _sharded(self) -> bool:
        return self.trainer.strategy.sharded

    @property
    def _writes_here(self) -> bool:
        """Rank 0 writes checkpoints; under a sharding strategy (fsdp) every rank writes its shards."""
        return self._sharded or is_rank_zero()

    @property
    def _format(self) -> str:
        return "sharded" if self._sharded else self.config.save_format

    def _written(self, state: dict[str, Any], write: Any) -> Path | None:
        """`write()` on rank 0; under a sharding strategy every rank writes its shards with it (None elsewhere)."""
        return save_sharded(state, write) if self._sharded else write()

    def _save(
        self, kind: str, value: float | None, background: bool = False, ranks: list[dict[str, Any]] | None = None
    ) -> Path | None:
        """Write a checkpoint now, or (background) hand a host copy of it to the writer thread.

        Returns its folder when written here, None when handed over (or written as this rank's shards into rank
        0's folder), `_SKIPPED` when a write was still in flight and `async_when_busy` is 'skip'.
        """
        if self._writer.busy:
            if background and self.config.async_when_busy == "skip":
                return _SKIPPED
            self._settle()
        self._writer.raise_failure()
        progress = self.trainer.progress_checker.state_dict()
        done, step = progress["epoch"] - 1, progress["step"] - 1
        name = f"epoch-{done:04d}" if kind == "epoch" else f"{kind}-epoch-{done:04d}-step-{step:06d}"
        entry = CheckpointEntry(
            name=name,
            kind=kind,
            epoch=done,
            step=step,
            save_format=self._format,
            monitor=self._monitor if value is not None else None,
            mode=self.config.monitor_mode,
            value=value,
        )
        state, meta, monitor = self._gather_state(ranks), self._meta(kind, value), self._monitor
        if not background:
            started = monotonic()
            path = self._write(state, entry, meta, monitor, progress)
            self._write_seconds = monotonic() - started
            return path
        copy, landed = self._staging.copy(state)  # the only part training waits for

        def write() -> None:
            landed()
            self._write(copy, entry, meta, monitor, progress)

        self._writer.submit(write, name)
        return None

    def _write(
        self, state: dict[str, Any], entry: CheckpointEntry, meta: dict[str, Any], monitor: str | None, progress: dict
    ) -> Path | None:
        mode = self.config.monitor_mode
        path = self._written(
            state,
            lambda: self.store.save(state, entry, meta, lambda entries: self._select(entries, monitor), monitor, mode),
        )
        if path is None:
            return None  # a rank other than 0 under a sharding strategy: its shards are in rank 0's folder
        self.best_checkpoint = self.store.best()
        self.last_checkpoint = path  # after the manifest lists it: trackers may upload it from here on
        self._saved_at = progress
        return path

    def _settle(self, raise_failure: bool = True) -> None:
        """Wait for the checkpoint being written in the background (if any); raise what made it fail."""
        writer = self._writer
        if writer.busy or writer.seconds is not None:
            writer.wait()
            if writer.seconds is not None:
                self._write_seconds, writer.seconds = writer.seconds, None
        if raise_failure:
            writer.raise_failure()
        else:
            try:
                writer.raise_failure()
            except Exception as exc:
                warnings.warn(
                    f"{self.label()}: a background checkpoint write failed: {exc}", AddOnWarning, stacklevel=2
                )

    def _stop_save(self, signal_name: str, ranks: list[dict[str, Any]] | None) -> None:
        """SIGINT/SIGTERM: let the write in flight finish, then save this step too if it fits in `stop_budget`."""
        started, budget, trainer = monotonic(), self.config.stop_budget, self.trainer
        writer = self._writer
        if writer.busy:
            in_flight = writer.what
            if not writer.wait(budget):
                trainer._display_note(
                    f"{signal_name}: checkpoint {in_flight} was still being written when the stop budget of "
                    f"{budget:g} s ran out; stopping without it (the checkpoint before it is whole and listed)"
                )
                return
        self._settle(raise_failure=False)
        left = None if budget is None else budget - (monotonic() - started)
        too_slow = left is not None and self._write_seconds is not None and self._write_seconds > left
        if self._sharded:
            too_slow = any_rank(too_slow, trainer.device)  # all ranks write their shards, or none does
        if too_slow:
            if is_rank_zero():
                latest = self.last_checkpoint.name if self.last_checkpoint is not None else "none"
                trainer._display_note(
                    f"{signal_name}: not saving this step: the last save took {self._write_seconds or 0:.1f} s and "
                    f"{max(left or 0, 0):.1f} s of the {budget:g} s stop budget are left; the latest checkpoint is "
                    f"{latest}"
                )
            return
        path = self._save("interrupted", None, ranks=ranks)
        if path is None:
            return  # this rank's shards, in rank 0's folder
        took = monotonic() - started
        of_budget = "" if budget is None else f" of the {budget:g} s stop budget"
        trainer._display_note(
            f"{signal_name}: saved {path.name} in {self._write_seconds:.1f} s ({took:.1f} s{of_budget} with waiting)"
        )

    def _gather_state(self, ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        trainer = self.trainer
        state = trainer.state_dict()
        state["model"] = dict(state["model"])
        state["rng"] = capture_rng()
        if ranks is not None:
            state["rng_by_rank"] = ranks
        state["history"] = [_json_scalars(summary) for summary in trainer.history]
        return state

    def _meta(self, kind: str, value: float | None) -> dict[str, Any]:
        progress = self.trainer.progress_checker.state_dict()
        return {
            "kind": kind,
            "interrupted": kind == "interrupted",
            "epoch": progress["epoch"] - 1,
            "step": progress["step"] - 1,
            "monitor": self._monitor if value is not None else None,
            "mode": self.config.monitor_mode,
            "value": value,
            "trainer": type(self.trainer).__name__,
            "model": type(self.trainer.unwrapped_model).__name__,
            "zae_engine": __version__,
            "torch": torch.__version__,
        }

    def _monitored(self, summary: dict[str, Any]) -> float | None:
        """The monitored value in `summary` (None when not finite); an absent key is a ConfigError."""
        monitor = self.config.monitor or self.trainer.best.get("metric")
        if monitor is None:
            monitor = "valid/loss" if "valid/loss" in summary else "train/loss"
        if monitor not in summary and self.config.save_top_k == 0:
            return None  # nothing is ranked: a monitor that is not there does not matter
        try:
            value = monitored_value(summary, monitor, self.label())
        except MissingMetricError:
            raise
        except (TypeError, ValueError):  # a value that is not a number ranks nowhere
            value = math.nan
        self._monitor = monitor
        return value if math.isfinite(value) else None

    def _scored(self, entries: list[CheckpointEntry], monitor: str | None) -> list[CheckpointEntry]:
        return [
            e
            for e in entries
            if e.kind == "epoch" and e.value is not None and e.monitor == monitor and e.mode == self.config.monitor_mode
        ]

    def _enters_top_k(self, value: float | None) -> bool:
        k = self.config.save_top_k
        if value is None or k == 0:
            return False
        if k < 0:
            return True
        sign = 1.0 if self.config.monitor_mode == "min" else -1.0
        at_least_as_good = [
            e for e in self._scored(self.store.entries(), self._monitor) if sign * e.value <= sign * value
        ]
        return len(at_least_as_good) < k

    def _select(self, entries: list[CheckpointEntry], monitor: str | None) -> list[CheckpointEntry]:
        """Which checkpoints stay: manual ones, the `keep_last` most recent, and the `save_top_k` best."""
        keep = [e for e in entries if e.kind == "manual"]
        rolling = [e for e in entries if e.kind != "manual"]
        if self.config.keep_last:
            keep += rolling[-self.config.keep_last :]
        if monitor is None:  # nothing ranked yet in this process: prune no scored checkpoint
            keep += [e for e in rolling if e.value is not None]
            return keep
        scored = self._scored(rolling, monitor)
        k = self.config.save_top_k
        if k < 0:
            keep += scored
        elif k > 0:
            sign = 1.0 if self.config.monitor_mode == "min" else -1.0
            order = {id(e): i for i, e in enumerate(scored)}
            keep += sorted(scored, key=lambda e: (sign * e.value, order[id(e)]))[:k]
        keep += [e for e in rolling if e.value is not None and e.monitor != monitor]  # other monitors: left alone
        return keep

    # ------------------------------------------------------------------ loading
    def _restore_best_weights(self, state: dict[str, Any], loaded: Path, manifest: Manifest) -> None:
        """Refill the trainer's best-weights buffer (for apply_weights()) from the best checkpoint, if it is that epoch."""
        trainer = self.trainer
        best = self.best_checkpoint
        if not trainer.config.keep_best_weights or best is None or not trainer.is_rank_zero:
            return
        entry = next((e for e in self.store.entries(manifest) if e.name == best.name), None)
        if entry is None or entry.epoch != trainer.best.get("epoch"):
            return
        try:
            whole = best.name == loaded.name and not self._sharded  # sharded: this rank's pieces only
            model = state["model"] if whole else read_weights(best)
        except CheckpointError:
            return  # the buffer stays empty; apply_weights(path) still works
        trainer._best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.items()}


_SKIPPED = Path("<skipped: a checkpoint was still being written>")


def _json_scalars(summary: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in summary.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[str(key)] = value
    return out


def _checked_history(history: Any, source: str) -> list[dict[str, Any]] | None:
    if history is None:
        return None
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise CheckpointError(f"{source}: 'history' must be a list of epoch summaries; the checkpoint is damaged")
    return [dict(h) for h in history]
