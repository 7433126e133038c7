"""Rank 0 hands the trained state back to the launching process as safetensors + JSON: nothing read back is unpickled.

A nested state (dicts, lists, tuples, numbers, strings, tensors) becomes one safetensors file holding the tensors
and one JSON tree with references to them. Dict keys that are not strings (optimizer state is keyed by int) and
tuples are tagged so they come back as they went. A part of the state that holds anything else (a lambda in a
scheduler, say) is left out with a warning rather than failing a finished run.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TENSORS = "state.safetensors"
TREE = "state.json"
_REF, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"


class _Unencodable(TypeError):
    pass


def write_state(folder: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (top-level parts encoded independently) into `folder`."""
    tensors: dict[str, torch.Tensor] = {}
    tree: dict[str, Any] = {}
    for part, value in state.items():
        encoded: dict[str, torch.Tensor] = {}
        try:
            tree[part] = _encode(value, encoded, f"{part}.")
        except _Unencodable as exc:
            warnings.warn(
                f"zae-mpu: '{part}' cannot be handed back to the launching process ({exc}); it keeps its state "
                "from before run()",
                stacklevel=2,
            )
            continue
        tensors.update(encoded)
    folder = Path(folder)
    save_file(tensors, str(folder / TENSORS))
    (folder / TREE).write_text(json.dumps(tree), encoding="utf-8")  # written last: its presence means "complete"


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The state `write_state` wrote; tensors land on the CPU."""
    folder = Path(folder)
    tensors = load_file(str(folder / TENSORS))
    tree = json.loads((folder / TREE).read_text(encoding="utf-8"))
    return {part: _decode(value, tensors) for part, value in tree.items()}


def _encode(value: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"{prefix}{len(tensors)}"
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()  # a copy: safetensors refuses shared storage
        return {_REF: key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, tensors, prefix) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors, prefix) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in (_REF, _TUPLE, _ITEMS) for k in value):
            return {k: _encode(v, tensors, prefix) for k, v in value.items()}
        return {_ITEMS: [[_encode(k, tensors, prefix), _encode(v, tensors, prefix)] for k, v in value.items()]}
    raise _Unencodable(f"it holds a {type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if _REF in value:
        return tensors[value[_REF]]
    if _TUPLE in value:
        return tuple(_decode(v, tensors) for v in value[_TUPLE])
    if _ITEMS in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in value.items()}
