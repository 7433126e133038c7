"""`Trainer`, `ProgressChecker` and the add-on machinery.

The names are loaded on first use (PEP 562) so that `zae_engine.trainer.config` can be imported without torch:
the `zae schema` command needs the Trainer's options but must start fast.
"""

from typing import Any

__all__ = ["Trainer", "ProgressChecker"]


def __getattr__(name: str) -> Any:
    if name == "Trainer":
        from zae_engine.trainer.loop import Trainer

        return Trainer
    if name == "ProgressChecker":
        from zae_engine.trainer.progress import ProgressChecker

        return ProgressChecker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
