"""The run spec: YAML text (`source`) -> pydantic models (`models`) -> a built run (`build`); its JSON Schema (`schema`).

Importing this package is cheap (no torch, no add-on): `zae schema` and `zae validate` start from here.
"""

from zae_engine.spec.models import (
    AddOnEntry,
    Component,
    DataSpec,
    LoaderSpec,
    RunOptions,
    RunSpec,
    TrainerArgs,
    TrainerSpec,
    load_spec,
    validate_spec,
)
from zae_engine.spec.source import SpecError, SpecSource

__all__ = [
    "AddOnEntry",
    "Component",
    "DataSpec",
    "LoaderSpec",
    "RunOptions",
    "RunSpec",
    "SpecError",
    "SpecSource",
    "TrainerArgs",
    "TrainerSpec",
    "load_spec",
    "validate_spec",
]
