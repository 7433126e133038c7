"""Atomic file writes and safe weight files: a crash mid-write never leaves half a file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from zae_engine.errors import CheckpointError


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def save_weights(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a state dict atomically: safetensors for '.safetensors' paths, torch.save otherwise."""
    target = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(target) as tmp:
        if target.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp))
        else:
            torch.save(tensors, tmp)
    return target


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read weights without running code from the file (safetensors, or torch.load with weights_only=True)."""
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"weights file {str(source)!r} does not exist; check the path")
    try:
        if source.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(source), device="cpu")
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise CheckpointError(
            f"{str(source)!r} is not a readable weights file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "it may be truncated, corrupt, or not a checkpoint. Nothing from it was executed"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(source)!r} does not hold a state dict of tensors")
    return state


def apply_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """`model.load_state_dict` with one message listing every missing, unexpected and mis-shaped key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if shapes or (strict and (missing or unexpected)):
        lines = [f"the weights in {source} do not fit {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys: {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {', '.join(unexpected)}")
        if shapes:
            lines.append("  shape mismatches: " + "; ".join(shapes))
        lines.append("  load them into the model they were saved from, or pass strict=False to skip absent keys")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=strict)
