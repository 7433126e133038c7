"""Export a checkpoint's model weights as one file for inference elsewhere (no optimizer, no training state).

`.safetensors` gets plain parameter names and the `{"format": "pt"}` header metadata that loaders such as
Hugging Face's expect; `.pt` / `.pth` get a `torch.save` state dict (`torch.load(path, weights_only=True)`
reads it). The weights are verified against the checkpoint's recorded SHA-256 before they are written out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from zae_engine.checkpoint.atomic import atomic_path
from zae_engine.checkpoint.formats import read_checkpoint, read_meta
from zae_engine.checkpoint.inspect import file_problem
from zae_engine.checkpoint.sharded import read_sharded
from zae_engine.checkpoint.store import locate
from zae_engine.checkpoint.weights import load_weights, save_weights
from zae_engine.errors import CheckpointError

SUFFIXES = (".safetensors", ".pt", ".pth")


@dataclass
class Exported:
    folder: Path
    out: Path
    tensors: int
    bytes: int


def export_weights(source: str | os.PathLike, out: str | os.PathLike, force: bool = False) -> Exported:
    """Write the model weights of checkpoint `source` (a folder, or a save_path: its latest) to `out`."""
    target = Path(out)
    if target.is_dir():
        raise CheckpointError(f"{str(target)!r} is a folder; --out takes a file name such as model.safetensors")
    if target.suffix not in SUFFIXES:
        raise CheckpointError(
            f"cannot tell the format of {str(target)!r}: name it *.safetensors (recommended), *.pt or *.pth"
        )
    if target.exists() and not force:
        raise CheckpointError(f"{str(target)!r} already exists; pass --force to replace it, or choose another name")
    folder = locate(source)
    if not folder.is_dir():
        raise CheckpointError(
            f"{str(folder)!r} is a file; export takes a checkpoint folder or a save_path (its latest checkpoint)"
        )
    if target.resolve().parent == folder.resolve():
        raise CheckpointError(
            f"{str(target)!r} is inside the checkpoint folder it is exported from; write it somewhere else"
        )
    weights = read_weights(folder)
    if target.suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = _unshared(weights)
        with atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
    else:
        save_weights(weights, target)
    return Exported(folder, target, len(weights), target.stat().st_size)


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint folder, whole on the CPU, verified against its checkpoint.json."""
    meta = read_meta(folder)
    if meta["save_format"] == "sharded":  # assembled from every rank's pieces, in this process
        return read_sharded(folder, meta, only="model")
    if meta["save_format"] == "ckpt":
        return read_checkpoint(folder)[0]["model"]  # verifies the hash, then torch.load(weights_only=True)
    path = folder / "model.safetensors"
    why = file_problem(path, meta["files"].get(path.name))
    if why:
        raise CheckpointError(
            f"the weights of {str(folder)!r} are damaged: {path.name} {why}; export another checkpoint"
        )
    return load_weights(path)


def _unshared(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): give each its own copy."""
    seen: set[int] = set()
    out = {}
    for key, value in weights.items():
        value = value.detach().to("cpu").contiguous()
        pointer = value.untyped_storage().data_ptr()
        if value.numel() and (pointer in seen or value.untyped_storage().nbytes() != value.nbytes):
            value = value.clone()
        seen.add(value.untyped_storage().data_ptr())
        out[key] = value
    return out
