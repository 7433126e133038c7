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
            "key": [int(k) for k in np_state["state"]["key"]],
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": int(version), "state": [int(v) for v in mt_state], "gauss": gauss},
    }


def restore_rng(state: dict[str, Any], source: str) -> None:
    """Put every stream back where `capture_rng` found it. CUDA streams are restored when the device count matches."""
    try:
        torch_state = state["torch"]
        if not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8:
            raise TypeError("torch state must be a uint8 tensor")
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
        # validate everything before touching any stream, so a bad file leaves them all as they were
        np.random.RandomState().set_state(numpy_tuple)
        random.Random().setstate(python_tuple)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CheckpointError(
            f"{source} holds malformed random-number states ({exc}); it was not written by zae-engine"
        ) from exc
    torch.set_rng_state(torch_state)
    np.random.set_state(numpy_tuple)
    random.setstate(python_tuple)
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
