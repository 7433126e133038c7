"""StateManagerAddon: atomic, pickle-free checkpoints; keep the best and the latest; exact resume.

At the end of every `every_n_epochs`-th epoch it writes a checkpoint folder into `save_path` when the
checkpoint is among the `save_top_k` best by `monitor`, or when `keep_last` asks for the latest ones; older
folders that neither rule keeps are deleted. On SIGINT/SIGTERM during `run()` it saves once more before the
run stops. The trainer gains `save_state(path=None)` and `load_state(path=None)`.

Under torch.distributed only rank 0 writes (weights come from `trainer.unwrapped_model`, so there is no
`module.` prefix); every rank passes a barrier after an epoch's save so none runs ahead of it. Under a sharding
strategy (fsdp) every rank writes its shards into the folder rank 0 makes (`zae_engine.checkpoint.sharded`)
and reads back the pieces it holds. See docs/checkpoints.md for the layout on disk and what a resume restores.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch

from zae_engine._version import __version__
from zae_engine.checkpoint.export import read_weights
from zae_engine.checkpoint.manifest import CheckpointEntry, Manifest
from zae_engine.checkpoint.rng import capture_rng, restore_rng
from zae_engine.checkpoint.sharded import save_sharded
from zae_engine.checkpoint.store import CheckpointStore, find_checkpoint, write_folder
from zae_engine.distributed import any_rank, barrier, is_rank_zero
from zae_engine.errors import CheckpointError, ConfigError, TrainingInterrupted, did_you_mean
from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.addons.configs import StateManagerConfig


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

    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        if self.trainer.mode != "train":
            return
        if epoch % self.config.every_n_epochs:
            self._unsaved = summary
            return
        value = self._monitored(summary)
        wanted = is_rank_zero() and (self.config.keep_last > 0 or self._enters_top_k(value))
        if self._sharded:
            wanted = any_rank(wanted, self.trainer.device)  # rank 0 decides; every rank writes its shards
        if wanted:
            self._save("epoch", value)
        self._unsaved = None
        barrier()  # every rank reaches this after the same epoch; none runs ahead of rank 0's write

    def on_run_end(self, error: BaseException | None) -> None:
        try:
            if self.trainer.mode != "train" or not (is_rank_zero() or self._sharded):
                return
            if isinstance(error, TrainingInterrupted):
                if self.config.save_on_interrupt and self._sharded and is_rank_zero():
                    warnings.warn(  # ranks stop at their own step: a save that needs all of them could hang
                        f"{self.label()}: no checkpoint on interrupt under a sharding strategy; the last epoch's "
                        "checkpoint is the one to resume from",
                        stacklevel=2,
                    )
                elif self.config.save_on_interrupt and not self._sharded:
                    self._save("interrupted", None)
            elif error is None and self._unsaved is not None and self.config.keep_last > 0:
                self._save("epoch", self._monitored(self._unsaved))  # the run ended between every_n_epochs saves
            self._unsaved = None
        finally:
            self.store.release()

    def state_dict(self) -> dict[str, Any]:
        # only where the files are, so a launcher handing rank 0's state back also hands these back
        return {
            "last_checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint),
            "best_checkpoint": None if self.best_checkpoint is None else str(self.best_checkpoint),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_rng = None  # a state handed back after a run replaces one loaded before it
        for key in ("last_checkpoint", "best_checkpoint"):
            value = state.get(key)
            if isinstance(value, str):
                setattr(self, key, Path(value))

    # ------------------------------------------------------------------ lent to the trainer
    def save_state(self, path: str | Path | None = None) -> Path | None:
        """Checkpoint the trainer now: into save_path (listed, never pruned) or, given `path`, into that folder.

        Returns the checkpoint folder (None on ranks other than 0). Under a sharding strategy (fsdp) every rank
        must call it: each writes its shards.
        """
        if not is_rank_zero() and not self._sharded:
            return None
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
        try:
            differences = trainer.load_state_dict(state, source)
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            raise CheckpointError(
                f"{source} does not fit this trainer ({type(exc).__name__}: {str(exc).strip()[:300]}); "
                "load it into the same model, optimizer and scheduler it was saved from"
            ) from None
        rng = state.get("rng")
        if rng is not None:
            restore_rng(rng, source)
            self._pending_rng = rng
        if differences and is_rank_zero():
            trainer._display_note(
                f"resumed from {source} at epoch {trainer.progress_checker.get_epoch() - 1}; "
                f"these settings differ from the checkpoint's, yours apply: {'; '.join(differences)}"
            )
        history = state.get("history")
        if isinstance(history, list):
            trainer.history = [dict(h) for h in history if isinstance(h, dict)]
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
    def _format(self) -> str:
        return "sharded" if self._sharded else self.config.save_format

    def _written(self, state: dict[str, Any], write: Any) -> Path | None:
        """`write()` on rank 0; under a sharding strategy every rank writes its shards with it (None elsewhere)."""
        return save_sharded(state, write) if self._sharded else write()

    def _save(self, kind: str, value: float | None) -> Path | None:
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
        state, meta = self._gather_state(), self._meta(kind, value)
        path = self._written(
            state, lambda: self.store.save(state, entry, meta, self._select, self._monitor, self.config.monitor_mode)
        )
        if path is None:
            return None  # a rank other than 0: its shards are in rank 0's folder
        self.last_checkpoint = path
        self.best_checkpoint = self.store.best()
        self._saved_at = progress
        return path

    def _gather_state(self) -> dict[str, Any]:
        trainer = self.trainer
        state = trainer.state_dict()
        state["model"] = dict(state["model"])
        state["rng"] = capture_rng()
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
        if monitor not in summary:
            if self.config.save_top_k == 0:
                return None  # nothing is ranked: a monitor that is not there does not matter
            keys = sorted(k for k in summary if k not in ("epoch", "step"))
            raise ConfigError(
                f"add-on 'state_manager': monitor {monitor!r} is not in the epoch summary{did_you_mean(monitor, keys)}; "
                f"available keys: {', '.join(keys)}"
            )
        self._monitor = monitor
        try:
            value = float(summary[monitor])
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    def _scored(self, entries: list[CheckpointEntry]) -> list[CheckpointEntry]:
        return [
            e
            for e in entries
            if e.kind == "epoch"
            and e.value is not None
            and e.monitor == self._monitor
            and e.mode == self.config.monitor_mode
        ]

    def _enters_top_k(self, value: float | None) -> bool:
        k = self.config.save_top_k
        if value is None or k == 0:
            return False
        if k < 0:
            return True
        sign = 1.0 if self.config.monitor_mode == "min" else -1.0
        at_least_as_good = [e for e in self._scored(self.store.entries()) if sign * e.value <= sign * value]
        return len(at_least_as_good) < k

    def _select(self, entries: list[CheckpointEntry]) -> list[CheckpointEntry]:
        """Which checkpoints stay: manual ones, the `keep_last` most recent, and the `save_top_k` best."""
        keep = [e for e in entries if e.kind == "manual"]
        rolling = [e for e in entries if e.kind != "manual"]
        if self.config.keep_last:
            keep += rolling[-self.config.keep_last :]
        if self._monitor is None:  # nothing ranked yet in this process: prune no scored checkpoint
            keep += [e for e in rolling if e.value is not None]
            return keep
        scored = self._scored(rolling)
        k = self.config.save_top_k
        if k < 0:
            keep += scored
        elif k > 0:
            sign = 1.0 if self.config.monitor_mode == "min" else -1.0
            order = {id(e): i for i, e in enumerate(scored)}
            keep += sorted(scored, key=lambda e: (sign * e.value, order[id(e)]))[:k]
        keep += [e for e in rolling if e.value is not None and e.monitor != self._monitor]  # other monitors: left alone
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


def _json_scalars(summary: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in summary.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[str(key)] = value
    return out
