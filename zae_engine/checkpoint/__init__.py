"""Checkpoints without pickle: folder formats, the manifest of complete checkpoints, RNG capture.

`zae_engine.trainer.addons.state_manager.StateManagerAddon` is the user-facing side; these modules are the
parts it is made of, usable on their own (e.g. `read_any(locate(path))` to inspect a checkpoint).
"""

from zae_engine.checkpoint.formats import read_checkpoint, write_checkpoint
from zae_engine.checkpoint.manifest import CheckpointEntry, Manifest, read_manifest, write_manifest
from zae_engine.checkpoint.rng import capture_rng, restore_rng
from zae_engine.checkpoint.store import CheckpointStore, locate, read_any, write_folder

__all__ = [
    "CheckpointEntry",
    "CheckpointStore",
    "Manifest",
    "capture_rng",
    "locate",
    "read_any",
    "read_checkpoint",
    "read_manifest",
    "restore_rng",
    "write_checkpoint",
    "write_folder",
    "write_manifest",
]
