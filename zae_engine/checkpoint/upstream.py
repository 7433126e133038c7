"""Convert an upstream zae-engine 0.7 save folder into a checkpoint `load_state()` resumes from.

Upstream's StateManagerAddon keeps one set of files in its save_path, overwritten at every improvement:
`model.ckpt` (torch.save of the state dict; `model.safetensor` with save_format="safetensor"), and
`optimizer.zae` / `scheduler.zae` written with plain `pickle.dump`. The weights are read here without
running code (torch.load(weights_only=True), or safetensors). The two pickles are left behind unless the
caller trusts them, and even then they go through `trusted_pickle`, which admits only state-dict values.
Upstream records no epoch or step, so the checkpoint starts at epoch 1 unless told otherwise.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zae_engine._version import __version__
from zae_engine.checkpoint.formats import META_NAME
from zae_engine.checkpoint.manifest import MANIFEST_NAME, CheckpointEntry
from zae_engine.checkpoint.store import CheckpointStore
from zae_engine.checkpoint.trusted_pickle import read_state_pickle
from zae_engine.errors import CheckpointError

# model.ckpt / model.safetensor (0.7), and the model_<epoch>.<format> files of earlier releases
_MODEL_FILE = re.compile(r"model(?:_(\d+))?\.(ckpt|safetensors?)")
_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers


@dataclass
class Part:
    """One upstream file and what became of it."""

    file: str
    carried: bool
    note: str

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "carried": self.carried, "note": self.note}


@dataclass
class Imported:
    source: Path
    save_path: Path
    checkpoint: Path
    save_format: str
    epoch: int
    tensors: int
    parts: list[Part] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "save_path": str(self.save_path),
            "checkpoint": str(self.checkpoint),
            "format": self.save_format,
            "next_epoch": self.epoch,
            "tensors": self.tensors,
            "parts": [part.as_json() for part in self.parts],
        }


def import_upstream(
    old: str | os.PathLike,
    new: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    epoch: int = 1,
    save_format: str = "safetensors",
) -> Imported:
    """Write the upstream save folder `old` as a checkpoint in the new save_path `new`; nothing is written on error.

    `epoch`: the epoch the next `run()` trains (upstream records none). `trust_pickle`: also carry
    optimizer.zae and scheduler.zae, read by the restricted unpickler (only for files you made yourself).
    """
    source, target = Path(old), Path(new)
    _check_source(source)
    _check_target(target)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise CheckpointError(f"--epoch must be a whole number >= 1 (the epoch training continues with), got {epoch!r}")
    model_file, parts = _model_file(source)
    weights, note = read_upstream_weights(model_file)
    parts.insert(0, Part(model_file.name, True, f"{len(weights)} tensors{note}"))
    optimizer, part = _carry(source / "optimizer.zae", "optimizer", trust_pickle, _check_optimizer_state)
    parts.append(part)
    scheduler, part = _carry(source / "scheduler.zae", "scheduler", trust_pickle, _check_scheduler_state)
    parts.append(part)

    done = epoch - 1
    state = {
        "model": weights,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": None,
        "progress": {"epoch": epoch, "step": 1},
        "best": {"metric": None, "value": math.inf, "epoch": None},
        "addons": {},
        "history": [],
    }
    entry = CheckpointEntry(
        name=f"imported-epoch-{done:04d}", kind="manual", epoch=done, step=0, save_format=save_format
    )
    meta = {
        "kind": "manual",
        "interrupted": False,
        "epoch": done,
        "step": 0,
        "monitor": None,
        "mode": "min",
        "value": None,
        "imported_from": str(source.resolve()),
        "imported": {part.file: part.carried for part in parts},
        "zae_engine": __version__,
        "torch": torch.__version__,
    }
    created = not target.exists()
    try:
        folder = CheckpointStore(target).save(state, entry, meta)
    except (CheckpointError, RecursionError) as exc:
        if created and target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # leave no trace of a failed import
        if isinstance(exc, RecursionError):
            raise CheckpointError(f"the states in {str(source)!r} are nested too deeply to be checkpointed") from None
        raise
    return Imported(source, target, folder, save_format, epoch, len(weights), parts)


def _check_source(source: Path) -> None:
    if not source.exists():
        raise CheckpointError(f"no upstream save folder at {str(source)!r}: the path does not exist")
    if not source.is_dir():
        raise CheckpointError(f"{str(source)!r} is a file; pass the upstream save_path folder that holds model.ckpt")
    if (source / MANIFEST_NAME).is_file() or (source / META_NAME).is_file():
        raise CheckpointError(
            f"{str(source)!r} already holds a zae-engine checkpoint; load_state() reads it as it is, no import needed"
        )


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CheckpointError(
            f"{str(target)!r} already exists and is not an empty folder; choose a new save_path for the import "
            "(nothing was written)"
        )


def _model_file(source: Path) -> tuple[Path, list[Part]]:
    """The upstream weights file; when there are several, the most recently written one."""
    found = [p for p in source.iterdir() if _MODEL_FILE.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    if not found:
        raise CheckpointError(
            f"{str(source)!r} holds no model.ckpt or model.safetensor: it is not an upstream zae-engine save folder "
            "(upstream's StateManagerAddon writes model.<save_format>, optimizer.zae and scheduler.zae)"
        )
    found.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    chosen, older = found[-1], found[:-1]
    return chosen, [Part(p.name, False, f"older than {chosen.name}, which was imported") for p in older]


def read_upstream_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """A state dict from an upstream weights file, read without running code; and a note on what was changed."""
    try:
        if path.suffix in (".safetensor", ".safetensors"):
            from safetensors.torch import load_file

            weights = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                weights = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{str(path)!r} was refused: it holds Python objects other than tensors (upstream saves "
            "model.state_dict(); this file holds more, e.g. a whole pickled model). Nothing from it was run. "
            "Save only the state dict with the code that made it, then import again"
        ) from None
    except Exception as exc:  # torch and safetensors raise many types for a damaged file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a readable weights file ({type(exc).__name__}: {first}); it is truncated or "
            "corrupt. Nothing from it was run"
        ) from None
    if (
        not isinstance(weights, dict)
        or not weights
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items())
    ):
        raise CheckpointError(f"{str(path)!r} does not hold a model state dict (parameter names mapped to tensors)")
    for prefix in _PREFIXES:
        if all(key.startswith(prefix) for key in weights):
            weights = {key[len(prefix) :]: value for key, value in weights.items()}
            return weights, f"; the {prefix!r} prefix of a wrapped model was removed from every name"
    return weights, ""


_LEFT_BEHIND = {
    "optimizer": "the optimizer starts fresh (your learning rate, no momentum or running averages yet)",
    "scheduler": "the schedule starts again from its first step",
}


def _carry(path: Path, kind: str, trust_pickle: bool, check: Any) -> tuple[Any, Part]:
    if not path.exists():
        return None, Part(path.name, False, f"not found, so {_LEFT_BEHIND[kind]}")
    if not trust_pickle:
        return None, Part(
            path.name,
            False,
            f"upstream wrote it with pickle, which can run code when it is read, so {_LEFT_BEHIND[kind]}. "
            "If you made this file yourself, import again with --trust-pickle to carry it",
        )
    if path.is_symlink() or not path.is_file():
        raise CheckpointError(f"{str(path)!r} is not a regular file; nothing was imported")
    try:
        state = read_state_pickle(path, {"optimizer": "an optimizer state", "scheduler": "a scheduler state"}[kind])
        check(state, path)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{exc}. Nothing was imported; without --trust-pickle the weights come over alone"
        ) from None
    return state, Part(path.name, True, "read with the restricted unpickler (tensors and plain values only)")


def _check_optimizer_state(state: Any, path: Path) -> None:
    if not (
        isinstance(state, dict)
        and isinstance(state.get("state"), dict)
        and isinstance(state.get("param_groups"), list)
        and all(isinstance(group, dict) for group in state["param_groups"])
    ):
        raise CheckpointError(
            f"{str(path)!r} does not hold an optimizer state dict (a dict with 'state' and 'param_groups')"
        )


def _check_scheduler_state(state: Any, path: Path) -> None:
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise CheckpointError(f"{str(path)!r} does not hold a scheduler state dict (a dict with string keys)")
