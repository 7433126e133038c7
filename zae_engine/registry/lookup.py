"""Loading what a registration names: the add-on class, or only its Config (cheaply, when one is registered)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zae_engine.errors import ConfigError
from zae_engine.registry.points import Registration

if TYPE_CHECKING:
    from pydantic import BaseModel

    from zae_engine.trainer.addons.base import AddOnBase


class AddOnError(ConfigError):
    """An add-on name that is unknown, or whose add-on cannot be used. `reason` is the short why."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def load_object(value: str, what: str, reg: Registration) -> Any:
    """Import `package.module:Attr`; any failure is an AddOnError naming the add-on and its distribution."""
    module_name, _, attr = value.partition(":")
    where = f"add-on '{reg.name}' (from {reg.provider}, {value})"
    try:
        obj: Any = importlib.import_module(module_name.strip())
        for part in attr.strip().split("."):
            obj = getattr(obj, part)
    except (Exception, SystemExit) as exc:  # a plugin's import failing must not take the caller down
        reason = f"importing its {what} failed: {type(exc).__name__}: {exc}"
        raise AddOnError(f"{where} is broken: {reason}", reason=reason) from exc
    return obj


def load_addon(reg: Registration) -> type[AddOnBase]:
    from zae_engine.trainer.addons.base import AddOnBase

    obj = load_object(reg.value, "add-on class", reg)
    where = f"add-on '{reg.name}' (from {reg.provider}, {reg.value})"
    if not (isinstance(obj, type) and issubclass(obj, AddOnBase)):
        reason = f"{reg.value} is not an add-on class (it does not subclass zae_engine's AddOnBase)"
        raise AddOnError(f"{where} is broken: {reason}", reason=reason)
    if obj.name != reg.name:
        reason = f"the class says name = {obj.name!r} but is registered as '{reg.name}'; make them equal"
        raise AddOnError(f"{where} is broken: {reason}", reason=reason)
    if reg.config_value and load_config(reg) is not obj.Config:
        reason = f"{reg.config_value} (in zae_engine.addon_configs) is not {obj.__name__}.Config; point it there"
        raise AddOnError(f"{where} is broken: {reason}", reason=reason)
    return obj


def load_config(reg: Registration) -> type[BaseModel]:
    """The add-on's Config: from `zae_engine.addon_configs` when registered (no torch), else from the class."""
    from pydantic import BaseModel

    if reg.config_value is None:
        return load_addon(reg).Config
    obj = load_object(reg.config_value, "Config", reg)
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        reason = f"{reg.config_value} is not a pydantic model"
        raise AddOnError(f"add-on '{reg.name}' is broken: {reason}", reason=reason)
    return obj
