"""What every checkpoint format shares: the record file's name, the size-and-SHA-256 fingerprint of a file and
its check, the shape a trainer state must have, and a safetensors header read without loading a tensor.

Below every format module (`formats`, `sharded`) and the tools that inspect them, so they all agree.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

import torch

from zae_engine.checkpoint.failures import read_failure
from zae_engine.errors import CheckpointError

META_NAME = "checkpoint.json"


def fingerprint(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return {"bytes": os.fstat(handle.fileno()).st_size, "sha256": sha256_of(handle)}


def sha256_of(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def verify(handle: IO[bytes], path: Path, expected: Any) -> None:
    """Check an open file against its record in checkpoint.json: the size first (free), then the SHA-256."""
    if not isinstance(expected, dict):
        raise CheckpointError(f"{str(path.parent / META_NAME)!r} does not list {path.name}; the checkpoint is damaged")
    size = os.fstat(handle.fileno()).st_size
    if size != expected.get("bytes"):
        raise CheckpointError(
            f"checkpoint file {str(path)!r} has {size} bytes but {expected.get('bytes')} were saved: "
            "it is truncated or was replaced. Load another checkpoint"
        )
    try:
        digest = sha256_of(handle)
    except OSError as exc:
        raise read_failure(path, exc) from exc
    finally:
        handle.seek(0)
    if digest != expected.get("sha256"):
        raise CheckpointError(
            f"checkpoint file {str(path)!r} does not match the SHA-256 recorded when it was saved: it was changed "
            "or corrupted. Load another checkpoint"
        )


#: top-level parts of a state and the type each must have (None is allowed for all)
_PART_TYPES = {
    "optimizer": dict,
    "scheduler": dict,
    "scaler": dict,
    "best": dict,
    "addons": dict,
    "rng": dict,
    "history": list,
    "position": dict,
}


def check_state(state: Any, source: str) -> dict[str, Any]:
    """Make sure a parsed file has the shape of a trainer checkpoint before anything is loaded from it."""
    if not isinstance(state, dict) or "model" not in state or "progress" not in state:
        keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{source} is not a zae-engine checkpoint (expected keys 'model' and 'progress', found {keys}); "
            "for bare weights use trainer.apply_weights(path)"
        )
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise CheckpointError(f"{source}: 'model' is not a state dict of tensors")
    progress = state["progress"]
    if not isinstance(progress, dict) or not all(type(progress.get(k)) is int for k in ("epoch", "step")):
        raise CheckpointError(f"{source}: 'progress' must hold whole numbers 'epoch' and 'step'")
    for part, kind in _PART_TYPES.items():
        value = state.get(part)
        if value is not None and not isinstance(value, kind):
            raise CheckpointError(
                f"{source}: {part!r} must be a {kind.__name__} (or null), not a {type(value).__name__}; "
                "the checkpoint is damaged or was not written by zae-engine"
            )
    return state


def safetensors_keys(path: Path) -> set[str] | str:
    """The tensor names in a safetensors file's header (no tensor is read), or why the header is bad."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return set(handle.keys())
    except Exception as exc:  # SafetensorError and OSError, for any malformed header
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return f"is not a valid safetensors file ({text})"
