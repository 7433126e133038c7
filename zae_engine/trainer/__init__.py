"""`Trainer`, `ProgressChecker` and the add-on machinery."""

from zae_engine.trainer.loop import Trainer
from zae_engine.trainer.progress import ProgressChecker

__all__ = ["Trainer", "ProgressChecker"]
