"""Rank 0 hands the trained state back to the launching process as safetensors + JSON: nothing read back is unpickled.

It is the checkpoint encoding of zae-engine (`zae_engine.checkpoint.tree`): tensors go into one safetensors file,
everything else into a JSON skeleton that refers to them. Each top-level part is encoded on its own, so a part
holding something else (a scheduler with a lambda, say) is left out with a warning instead of failing a
finished run; the launching process then keeps that part as it was before `run()`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from zae_engine.checkpoint.tree import join_tensors, split_tensors
from zae_engine.errors import CheckpointError

TENSORS = "handback.safetensors"
TREE = "handback.json"


def write_state(folder: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` into `folder`; the JSON file is written last, so its presence means the hand-back is whole."""
    skeleton: dict[str, Any] = {}
    tensors: dict = {}
    for part, value in state.items():
        try:
            skeleton[part], part_tensors = split_tensors(value, part)
        except CheckpointError as exc:
            warnings.warn(
                f"zae-mpu: '{part}' cannot be handed back to the launching process, which keeps its own from before "
                f"run(): {exc}",
                stacklevel=2,
            )
            continue
        tensors.update(part_tensors)  # keys start with the part's name: no clashes between parts
    folder = Path(folder)
    save_file(tensors, str(folder / TENSORS))
    (folder / TREE).write_text(json.dumps(skeleton), encoding="utf-8")


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The state `write_state` wrote; tensors land on the CPU."""
    folder = Path(folder)
    tensors = load_file(str(folder / TENSORS))
    skeleton = json.loads((folder / TREE).read_text(encoding="utf-8"))
    return join_tensors(skeleton, tensors, "the state rank 0 handed back")
