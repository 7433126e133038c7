"""Bare weight files: written atomically, read without running code, applied with one clear message.

A weights file inside a checkpoint folder (`model.safetensors`) is checked against the size and SHA-256 that
the folder's `checkpoint.json` recorded, and may not be a symbolic link: a flipped byte or a planted link is
refused before it is parsed. A file elsewhere is the user's own choice and is read as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from zae_engine.checkpoint.atomic import atomic_path
from zae_engine.checkpoint.failures import first_line, read_failure, write_failure
from zae_engine.checkpoint.formats import CKPT_KEYS, META_FORMAT, load_torch_file
from zae_engine.checkpoint.integrity import META_NAME, verify
from zae_engine.checkpoint.manifest import MANIFEST_NAME
from zae_engine.checkpoint.untrusted import open_regular, read_json
from zae_engine.errors import CheckpointError


def save_weights(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a state dict atomically: safetensors for '.safetensors' paths, torch.save otherwise."""
    target = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    try:
        with atomic_path(target) as tmp:
            if target.suffix == ".safetensors":
                from safetensors.torch import save_file

                save_file(tensors, str(tmp))
            else:
                with open(tmp, "wb") as handle:  # a Python file: a full disk surfaces as OSError(ENOSPC)
                    torch.save(tensors, handle)
    except Exception as exc:  # OSError, torch's zip RuntimeError, SafetensorError, MemoryError
        raise write_failure(target, exc, "weights file") from exc
    return target


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read weights without running code from the file (safetensors, or torch.load with weights_only=True)."""
    source = Path(path)
    try:
        os.lstat(source)
    except FileNotFoundError:
        raise CheckpointError(f"weights file {str(source)!r} does not exist; check the path") from None
    except OSError as exc:
        raise read_failure(source, exc, "weights file") from exc
    guarded = _in_checkpoint_storage(source.parent)
    record = _recorded(source) if guarded else None
    with open_regular(source, "weights file", follow=not guarded) as handle:
        if record is not None:
            verify(handle, source, record)
        if source.suffix == ".safetensors":
            state: Any = _load_safetensors_weights(source)
        else:
            state = load_torch_file(handle, source, "weights file")
    if isinstance(state, dict) and state.keys() == CKPT_KEYS:
        raise CheckpointError(
            f"{str(source)!r} is a whole training state, not bare weights; load it with load_state() on its folder "
            "(or save_format='safetensors' and apply_weights on its model.safetensors)"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(source)!r} does not hold a state dict of tensors")
    return state


def _in_checkpoint_storage(folder: Path) -> bool:
    """A checkpoint folder or a save_path: its files are untrusted storage, links are not followed there."""
    return any(os.path.lexists(folder / name) for name in (META_NAME, MANIFEST_NAME))


def _recorded(source: Path) -> dict[str, Any] | None:
    """The size and SHA-256 the checkpoint folder of `source` recorded for it, or None if it is not one of ours."""
    meta_path = source.parent / META_NAME
    if not os.path.lexists(meta_path):
        return None
    meta = read_json(meta_path, "checkpoint record")  # refuses a link
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        return None  # another tool's checkpoint.json: nothing recorded about this file
    files = meta.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{str(meta_path)!r} is damaged: 'files' is missing")
    record = files.get(source.name)
    return record if isinstance(record, dict) else None


def _load_safetensors_weights(source: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(source), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, MemoryError for a bad file
        raise CheckpointError(
            f"{str(source)!r} is not a readable safetensors weights file ({type(exc).__name__}: {first_line(exc)}); "
            "it may be truncated, corrupt, or not weights. Nothing from it was executed"
        ) from exc


def check_weights(model: torch.nn.Module, state: Any, source: str, strict: bool = True) -> None:
    """One CheckpointError listing every missing, unexpected, mis-shaped and mis-typed key (nothing is loaded).

    Floating-point precision may differ (a float16 file into a float32 model is cast, as torch does); a tensor of
    another kind — integer, complex, bool for a float parameter, or the reverse — is refused, never cast.
    """
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"the weights in {source} are not a state dict of tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    kinds = [
        f"{k}: checkpoint {state[k].dtype} vs model {own[k].dtype}"
        for k in own
        if k in state and _kind(state[k]) != _kind(own[k])
    ]
    if shapes or kinds or (strict and (missing or unexpected)):
        lines = [f"the weights in {source} do not fit {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys: {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {', '.join(unexpected)}")
        if shapes:
            lines.append("  shape mismatches: " + "; ".join(shapes))
        if kinds:
            lines.append("  other kinds of numbers (refused, not cast): " + "; ".join(kinds))
        lines.append("  load them into the model they were saved from, or pass strict=False to skip absent keys")
        raise CheckpointError("\n".join(lines))


def apply_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """`model.load_state_dict` after `check_weights`: a state that does not fit is refused with one message."""
    check_weights(model, state, source, strict)
    model.load_state_dict(state, strict=strict)


def _kind(tensor: torch.Tensor) -> str:
    if tensor.is_complex():
        return "complex"
    if tensor.is_floating_point():
        return "float"
    return "bool" if tensor.dtype == torch.bool else "integer"
