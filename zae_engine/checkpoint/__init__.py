"""Checkpoints without pickle: folder formats, the manifest of complete checkpoints, RNG capture.

`zae_engine.trainer.addons.state_manager.StateManagerAddon` is the user-facing side; these modules are the
parts it is made of, usable on their own (e.g. `read_any(locate(path))` to inspect a checkpoint). Names load on
first use, so the torch-free parts (`atomic`, `folders`) can be imported without torch.
"""

import importlib
from typing import Any

_WHERE = {
    "read_checkpoint": "formats",
    "write_checkpoint": "formats",
    "CheckpointEntry": "manifest",
    "Manifest": "manifest",
    "read_manifest": "manifest",
    "write_manifest": "manifest",
    "capture_rng": "rng",
    "restore_rng": "rng",
    "CheckpointStore": "store",
    "locate": "store",
    "read_any": "store",
    "write_folder": "store",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"zae_engine.checkpoint.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
