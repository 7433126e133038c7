"""Bare weight files: written atomically, read without running code, applied with one clear message."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from zae_engine.checkpoint.atomic import atomic_path
from zae_engine.errors import CheckpointError


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
