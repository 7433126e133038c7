"""The random streams a run draws from, captured as tensors and JSON values so a resume continues them exactly.

torch (CPU, and every CUDA device once CUDA is initialised), numpy's legacy global generator and python's
`random`. A DataLoader built without a `generator=` shuffles from torch's global stream, so restoring it
restores the data order of the next epoch as well.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from zae_engine.errors import CheckpointError


def capture_rng() -> dict[str, Any]:
    """The current state of every global random stream."""
    np_state = np.random.get_state(legacy=False)
    version, mt_state, gauss = random.getstate()
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = list(torch.cuda.get_rng_state_all())
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),  # python ints, in one C call
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": int(version), "state": list(mt_state), "gauss": gauss},
    }


def check_rng(state: Any, source: str) -> tuple[torch.Tensor, tuple, tuple]:
    """The streams of `state` ready to set, each validated: a bad file is refused before any stream is touched."""
    try:
        torch_state = state["torch"]
        if not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8:
            raise TypeError("torch state must be a uint8 tensor")
        if torch_state.shape != torch.get_rng_state().shape:
            raise ValueError(f"torch state has {torch_state.numel()} bytes, not {torch.get_rng_state().numel()}")
        np_state = state["numpy"]
        py_state = state["python"]
        numpy_tuple = (
            str(np_state["bit_generator"]),
            np.asarray(np_state["key"], dtype=np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["gauss"]),
        )
        python_tuple = (int(py_state["version"]), tuple(int(v) for v in py_state["state"]), py_state["gauss"])
        np.random.RandomState().set_state(numpy_tuple)  # on throw-away generators: they check what we will set
        random.Random().setstate(python_tuple)
        cuda = state.get("cuda")
        if cuda is not None and not (isinstance(cuda, list) and all(isinstance(c, torch.Tensor) for c in cuda)):
            raise TypeError("cuda states must be a list of tensors")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise CheckpointError(
            f"{source} holds malformed random-number states ({exc}); it was not written by zae-engine"
        ) from exc
    return torch_state, numpy_tuple, python_tuple


def restore_rng(state: dict[str, Any], source: str) -> None:
    """Put every stream back where `capture_rng` found it. CUDA streams are restored when the device count matches."""
    torch_state, numpy_tuple, python_tuple = check_rng(state, source)
    torch.set_rng_state(torch_state)
    np.random.set_state(numpy_tuple)
    random.setstate(python_tuple)
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def gather_rng() -> list[dict[str, Any]] | None:
    """Every rank's streams, in rank order (a collective: every rank calls it); None in one process."""
    from zae_engine.distributed import all_gather_objects

    return all_gather_objects(capture_rng())


def rng_of_this_rank(state: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The streams this rank should continue, and a note when the checkpoint was written by fewer ranks."""
    from zae_engine.distributed import get_rank, get_world_size

    by_rank = state.get("rng_by_rank")
    rank = get_rank()
    if isinstance(by_rank, list) and rank < len(by_rank):
        return by_rank[rank], None
    note = None
    if get_world_size() > 1:
        saved = len(by_rank) if isinstance(by_rank, list) else 1
        note = f"the checkpoint holds random streams of {saved} rank(s); rank {rank} continues rank 0's"
    return state.get("rng"), note
