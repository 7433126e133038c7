"""Rank 0 hands the trained state back to the launching process as safetensors + JSON: nothing read back is unpickled.

It is the checkpoint encoding of zae-engine (`zae_engine.checkpoint.tree`): tensors go into one safetensors file,
everything else into a JSON skeleton that refers to them. The state is cut into small parts — weights, optimizer,
scheduler, scaler, progress, best, each add-on's state, history, best weights — and each is encoded on its own,
so one that holds something else (a scheduler with a lambda, an add-on keeping a file handle) is left out with a
warning naming it instead of failing a finished run; the launching process then keeps that part as it was.
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


def trainer_parts(trainer: Any) -> dict[str, Any]:
    """What the launching process needs to look as if it had trained itself, cut into parts."""
    state = trainer.state_dict()
    parts = {key: value for key, value in state.items() if key != "addons"}
    parts.update({f"addon:{name}": value for name, value in state["addons"].items()})
    parts["history"] = trainer.history
    parts["best_weights"] = trainer._best_weights
    return parts


def take_back(trainer: Any, parts: dict[str, Any]) -> None:
    """Load into `trainer` every part that came back (what did not keeps its value from before `run()`)."""
    addons = {key.removeprefix("addon:"): value for key, value in parts.items() if key.startswith("addon:")}
    state = {key: parts.get(key) for key in ("model", "optimizer", "scheduler", "scaler", "progress", "best")}
    state["addons"] = addons
    trainer.load_state_dict(state, "the state rank 0 handed back")
    if "history" in parts:
        trainer.history = list(parts["history"])
    if parts.get("best_weights") is not None:
        trainer._best_weights = parts["best_weights"]


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The state `write_state` wrote; tensors land on the CPU."""
    folder = Path(folder)
    tensors = load_file(str(folder / TENSORS))
    skeleton = json.loads((folder / TREE).read_text(encoding="utf-8"))
    return join_tensors(skeleton, tensors, "the state rank 0 handed back")
