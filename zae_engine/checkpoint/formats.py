"""Writing and reading one checkpoint folder, in either format, without ever unpickling.

A folder holds `checkpoint.json` (what, when, and the size and SHA-256 of every other file) and:

- ``safetensors``: `model.safetensors` (the model's weights, plain keys: `trainer.apply_weights(path)` reads it),
  `state.safetensors` (every other tensor: optimizer moments, RNG states, ...) and `state.json` (everything
  else, with references to those tensors; see `zae_engine.checkpoint.tree`).
- ``ckpt``: `state.ckpt`, one `torch.save` file of ``{"tensors": {key: tensor}, "skeleton_json": "..."}``: the
  same flat tensors and JSON skeleton as the safetensors format, read back with `torch.load(weights_only=True)`.
  Holding no nested Python containers, it cannot carry a pickle of shared references that expands to 2**60
  values or a list that contains itself; whatever else its pickle holds is refused after one shallow look.
  Files written by version 0.1 (the state pickled as nested containers) are still read, through a bounded walk.

Reading checks sizes, then hashes (a truncated or swapped file is named before any parser sees it, a 64 GiB
file is refused before a byte is hashed), then parses with loaders that cannot run code. No file in the folder
may be a symbolic link.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import IO, Any

import torch

from zae_engine.checkpoint.failures import first_line
from zae_engine.checkpoint.integrity import META_NAME, check_state, fingerprint, verify
from zae_engine.checkpoint.tree import check_bounded, join_tensors, split_tensors
from zae_engine.checkpoint.untrusted import (
    MAX_JSON_BYTES,
    check_size,
    dump_json,
    open_regular,
    parse_json,
    read_json,
)
from zae_engine.errors import CheckpointError

META_FORMAT = "zae-engine checkpoint"
FILES = {"safetensors": ("model.safetensors", "state.safetensors", "state.json"), "ckpt": ("state.ckpt",)}
#: every format a folder may have; "sharded" (files per rank) is `zae_engine.checkpoint.sharded`'s
SAVE_FORMATS = (*FILES, "sharded")
#: the two keys of a `state.ckpt` (version 0.2 on): flat tensors and the JSON skeleton that refers to them
CKPT_KEYS = frozenset({"tensors", "skeleton_json"})


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
        text = dump_json(skeleton, "the state of the checkpoint")
        save_file({k.removeprefix("model."): v for k, v in model_tensors.items()}, str(folder / "model.safetensors"))
        save_file(tensors, str(folder / "state.safetensors"))
        _write_text(folder / "state.json", text)
    elif save_format == "ckpt":
        skeleton, tensors = split_tensors(state)
        text = dump_json(skeleton, "the state of the checkpoint")
        with open(folder / "state.ckpt", "wb") as handle:  # a Python file: a full disk surfaces as OSError(ENOSPC)
            torch.save({"tensors": tensors, "skeleton_json": text}, handle)
    elif save_format != "sharded":
        raise CheckpointError(f"unknown save_format {save_format!r}; use 'ckpt' or 'safetensors'")
    if save_format == "sharded":  # every rank writes its own file, together
        from zae_engine.checkpoint.sharded import write_sharded_checkpoint

        files = write_sharded_checkpoint(folder, state, meta)
    else:
        for name in FILES[save_format]:
            _fsync(folder / name)
        files = {name: fingerprint(folder / name) for name in FILES[save_format]}
    record = dict(meta, format=META_FORMAT, save_format=save_format, files=files)
    _write_text(folder / META_NAME, dump_json(record, str(folder / META_NAME), indent=2))
    _fsync(folder / META_NAME)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------- reading
def is_checkpoint_folder(path: Path) -> bool:
    """A folder holding something named checkpoint.json (whether that is sound is read_meta's question)."""
    return path.is_dir() and os.path.lexists(path / META_NAME)


def read_meta(folder: Path) -> dict[str, Any]:
    """`checkpoint.json` of `folder`, checked to be ours."""
    path = folder / META_NAME
    if not os.path.lexists(path):
        raise CheckpointError(f"{str(folder)!r} is not a checkpoint folder: it has no {META_NAME}")
    meta = read_json(path, "checkpoint record")
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise CheckpointError(f"{str(path)!r} was not written by zae-engine (no 'format': {META_FORMAT!r})")
    if meta.get("save_format") not in SAVE_FORMATS or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"{str(path)!r} is damaged: 'save_format' or 'files' is missing or unknown")
    return meta


def read_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of a checkpoint folder; every file is verified against checkpoint.json before parsing."""
    meta = read_meta(folder)
    save_format = meta["save_format"]
    if save_format == "sharded":  # assembled whole here; a sharded run reads its own pieces (strategy)
        from zae_engine.checkpoint.sharded import read_sharded

        return read_sharded(folder, meta), meta
    if save_format == "ckpt":
        path = folder / "state.ckpt"
        with open_regular(path) as handle:
            verify(handle, path, meta["files"].get("state.ckpt"))
            return read_torch_state(handle, path), meta
    for name in FILES[save_format]:
        with open_regular(folder / name) as handle:
            if name.endswith(".json"):  # capped before hashing too: its recorded size proves nothing
                check_size(handle, folder / name, MAX_JSON_BYTES, "checkpoint state")
            verify(handle, folder / name, meta["files"].get(name))
    model = _load_safetensors(folder / "model.safetensors")
    tensors = _load_safetensors(folder / "state.safetensors")
    json_path = folder / "state.json"
    skeleton = read_json(json_path, "checkpoint state")
    state = join_tensors(skeleton, tensors, repr(str(json_path)))
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(json_path)!r} does not hold a checkpoint state (a JSON object)")
    state["model"] = model
    return check_state(state, repr(str(folder))), meta


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, MemoryError... for a bad file
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({type(exc).__name__}: {first_line(exc)}); "
            "it is truncated, corrupt or not a checkpoint. Nothing from it was executed"
        ) from exc


_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_torch_file(source: IO[bytes] | Path, path: Path, what: str = "checkpoint") -> Any:
    """torch.load(weights_only=True) of an untrusted file; refusals and failures said in our words."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files: noise here
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _UNSAFE_GLOBAL.search(str(exc))
        held = f"a pickled Python object ({found.group(1)})" if found else "pickled data other than tensors"
        raise CheckpointError(
            f"{str(path)!r} was refused: it holds {held}, which a {what} may not contain; loading it could run code. "
            "Nothing from it was executed. Only load files written by zae-engine or torch.save of plain tensors"
        ) from exc
    except Exception as exc:  # zip errors (RuntimeError), OSError, MemoryError on absurd sizes, ...
        raise CheckpointError(
            f"{str(path)!r} is not a readable {what} ({type(exc).__name__}: {first_line(exc)}); "
            "it is truncated, corrupt or not a torch file. Nothing from it was executed"
        ) from exc


def read_torch_file(path: Path) -> dict[str, Any]:
    """A bare `.ckpt` file the user named (a link the user made is followed), read with weights_only=True."""
    with open_regular(path, "checkpoint file", follow=True) as handle:
        return read_torch_state(handle, path)


def read_torch_state(handle: IO[bytes], path: Path) -> dict[str, Any]:
    """The trainer state in an open `.ckpt` file: tensors + JSON skeleton, or a version 0.1 nested state."""
    source = repr(str(path))
    loaded = load_torch_file(handle, path)
    if isinstance(loaded, dict) and loaded.keys() == CKPT_KEYS:
        tensors, text = loaded["tensors"], loaded["skeleton_json"]
        if not isinstance(text, str) or not isinstance(tensors, dict):
            raise CheckpointError(f"{source} is damaged: 'tensors' must be a dict and 'skeleton_json' a string")
        if len(text) > MAX_JSON_BYTES:
            raise CheckpointError(
                f"{source} has a JSON skeleton over {MAX_JSON_BYTES >> 20} MiB; it is not one we wrote"
            )
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
            raise CheckpointError(f"{source} is damaged: 'tensors' must map names to tensors")
        state = join_tensors(parse_json(text, source, "checkpoint state"), tensors, source)
    else:
        check_bounded(loaded, source)  # version 0.1: nested containers straight from the pickle
        state = loaded
    return check_state(state, source)
