"""Hyper-parameter search over run specs with Optuna: `zae sweep`, `zae sweep show`, and `optimize()` from Python.

Importing this package is cheap (no torch, no optuna): the spec models use `zae_engine.sweep.space`, and
`zae schema` must stay fast. `optimize` and the rest load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "optimize": "zae_engine.sweep.api",
    "SweepSpec": "zae_engine.sweep.space",
    "PrunerSpec": "zae_engine.sweep.space",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
