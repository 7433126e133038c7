"""Writing and reading one checkpoint folder, in either format, without ever unpickling.

A folder holds `checkpoint.json` (what, when, and the size and SHA-256 of every other file) and:

- ``safetensors``: `model.safetensors` (the model's weights, plain keys: `trainer.apply_weights(path)` reads it),
  `state.safetensors` (every other tensor: optimizer moments, RNG states, ...) and `state.json` (everything
  else, with references to those tensors; see `zae_engine.checkpoint.tree`).
- ``ckpt``: `state.ckpt`, one `torch.save` file, read back with `torch.load(weights_only=True)`.

Reading checks sizes and hashes first (a truncated or swapped file is named before any parser sees it), then
parses with loaders that cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from zae_engine.checkpoint.tree import check_tree, join_tensors, split_tensors
from zae_engine.errors import CheckpointError

META_NAME = "checkpoint.json"
META_FORMAT = "zae-engine checkpoint"
FILES = {"safetensors": ("model.safetensors", "state.safetensors", "state.json"), "ckpt": ("state.ckpt",)}


# ---------------------------------------------------------------------------------------------- writing
def write_checkpoint(folder: Path, state: dict[str, Any], meta: dict[str, Any], save_format: str) -> None:
    """Write `state` into the (new, empty) `folder`, every file fsynced, `checkpoint.json` last."""
    model = state.get("model")
    if not isinstance(model, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
    ):
        raise CheckpointError("cannot checkpoint the model: its state_dict must map names to tensors")
    if save_format == "safetensors":
        from safetensors.torch import save_file

        _, model_tensors = split_tensors(dict(model), "model")
        rest = {k: v for k, v in state.items() if k != "model"}
        skeleton, tensors = split_tensors(rest)
        save_file({k.removeprefix("model."): v for k, v in model_tensors.items()}, str(folder / "model.safetensors"))
        save_file(tensors, str(folder / "state.safetensors"))
        _write_text(folder / "state.json", json.dumps(skeleton, allow_nan=False))
    elif save_format == "ckpt":
        check_tree(state)  # refuse now what torch.load(weights_only=True) would refuse later
        plain = dict(state, model={k: v.detach().to("cpu") for k, v in model.items()})
        torch.save(plain, folder / "state.ckpt")
    else:
        raise CheckpointError(f"unknown save_format {save_format!r}; use 'ckpt' or 'safetensors'")
    for name in FILES[save_format]:
        _fsync(folder / name)
    files = {name: _fingerprint(folder / name) for name in FILES[save_format]}
    _write_text(
        folder / META_NAME, json.dumps(dict(meta, format=META_FORMAT, save_format=save_format, files=files), indent=2)
    )
    _fsync(folder / META_NAME)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


# ---------------------------------------------------------------------------------------------- reading
def is_checkpoint_folder(path: Path) -> bool:
    return path.is_dir() and (path / META_NAME).is_file()


def read_meta(folder: Path) -> dict[str, Any]:
    """`checkpoint.json` of `folder`, checked to be ours."""
    path = folder / META_NAME
    if not path.is_file():
        raise CheckpointError(f"{str(folder)!r} is not a checkpoint folder: it has no {META_NAME}")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({exc}); the checkpoint is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise CheckpointError(f"{str(path)!r} was not written by zae-engine (no 'format': {META_FORMAT!r})")
    if meta.get("save_format") not in FILES or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"{str(path)!r} is damaged: 'save_format' or 'files' is missing or unknown")
    return meta


def read_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of a checkpoint folder; every file is verified against checkpoint.json before parsing."""
    meta = read_meta(folder)
    save_format = meta["save_format"]
    for name in FILES[save_format]:
        _verify(folder / name, meta["files"].get(name))
    if save_format == "ckpt":
        return read_torch_file(folder / "state.ckpt"), meta
    model = _load_safetensors(folder / "model.safetensors")
    tensors = _load_safetensors(folder / "state.safetensors")
    json_path = folder / "state.json"
    try:
        skeleton = json.loads(json_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(json_path)!r} is not valid JSON ({exc}); the checkpoint is damaged") from None
    state = join_tensors(skeleton, tensors, repr(str(json_path)))
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(json_path)!r} does not hold a checkpoint state (a JSON object)")
    state["model"] = model
    return check_state(state, repr(str(folder))), meta


def _verify(path: Path, expected: Any) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing; the checkpoint is incomplete")
    if not isinstance(expected, dict):
        raise CheckpointError(f"{str(path.parent / META_NAME)!r} does not list {path.name}; the checkpoint is damaged")
    actual = _fingerprint(path)
    if actual["bytes"] != expected.get("bytes"):
        raise CheckpointError(
            f"checkpoint file {str(path)!r} has {actual['bytes']} bytes but {expected.get('bytes')} were saved: "
            "it is truncated or was replaced. Load another checkpoint"
        )
    if actual["sha256"] != expected.get("sha256"):
        raise CheckpointError(
            f"checkpoint file {str(path)!r} does not match the SHA-256 recorded when it was saved: it was changed "
            "or corrupted. Load another checkpoint"
        )


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ... for a bad file
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({type(exc).__name__}: {_first_line(exc)}); "
            "it is truncated, corrupt or not a checkpoint. Nothing from it was executed"
        ) from None


def read_torch_file(path: Path) -> dict[str, Any]:
    """A `state.ckpt` read with torch.load(weights_only=True): objects that could run code are refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files: noise here
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines()]
        detail = next((line for line in lines if "unsupported" in line.lower()), "not allowed by weights_only=True")
        raise CheckpointError(
            f"{str(path)!r} was refused: it holds Python objects a checkpoint may not contain ({detail[:200]}). "
            "Nothing from it was executed. Only load checkpoints written by zae-engine from a source you trust"
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)}); "
            "it is truncated, corrupt or not a torch file. Nothing from it was executed"
        ) from None
    return check_state(state, repr(str(path)))


def check_state(state: Any, source: str) -> dict[str, Any]:
    """Make sure a parsed file has the shape of a trainer checkpoint before anything is loaded from it."""
    if not isinstance(state, dict) or "model" not in state or "progress" not in state:
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{source} is not a zae-engine checkpoint (expected keys 'model' and 'progress', found {keys}); "
            "for bare weights use trainer.apply_weights(path)"
        )
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise CheckpointError(f"{source}: 'model' is not a state dict of tensors")
    progress = state["progress"]
    if not isinstance(progress, dict) or not all(isinstance(progress.get(k), int) for k in ("epoch", "step")):
        raise CheckpointError(f"{source}: 'progress' must hold whole numbers 'epoch' and 'step'")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
