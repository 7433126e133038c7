"""The add-on registry: every add-on is a Python entry point in the group `zae_engine.addons`.

The core registers `state_manager` in its own pyproject.toml exactly like a plugin registers `mpu`, so there is
one path for all. What each operation costs, on purpose:

- `list_addons()` reads distribution metadata (and each add-on's torch-free Config module, when the add-on
  registers one under `zae_engine.addon_configs`): it imports no add-on module, so `zae addons list` is fast
  and a broken plugin cannot crash it. `check=True` also imports each add-on (slower, finds more).
- `addon_config(name)` returns the add-on's pydantic Config — the one source of truth for its options, which
  `zae addons show` and `zae schema` print — importing only that module when it is registered.
- `get_addon(name)` imports the add-on class and checks it; a failure is an `AddOnError` naming the add-on, its
  distribution and the fix. Nothing else is imported, so one broken plugin harms no other.

Statuses: `ok`; `broken` (cannot be loaded: module or dependency missing, import raises, not an AddOnBase, ...);
`incompatible` (the distribution requires another zae-engine); `conflict` (several distributions register the
name; nothing is picked silently).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from zae_engine.errors import did_you_mean
from zae_engine.registry.lookup import AddOnError, load_addon, load_config
from zae_engine.registry.points import CONFIG_GROUP, GROUP, Registration, forget, registrations
from zae_engine.registry.status import JSON_KEYS, AddOnInfo, judge

if TYPE_CHECKING:
    from pydantic import BaseModel

    from zae_engine.trainer.addons.base import AddOnBase

__all__ = [
    "CONFIG_GROUP",
    "GROUP",
    "JSON_KEYS",
    "AddOnError",
    "AddOnInfo",
    "addon_config",
    "addon_configs",
    "addon_names",
    "find_info",
    "forget",
    "get_addon",
    "list_addons",
    "option_owner",
    "unknown_message",
]

# registry names of the first-party plugins -> pip extra, so a missing one gets the install command
KNOWN_PLUGINS = {"mpu": "mpu", "wandb": "wandb", "neptune": "neptune", "tensorboard": "tensorboard", "mlflow": "mlflow"}


def list_addons(check: bool = False) -> list[AddOnInfo]:
    """All registered add-ons, sorted by name. `check=True` also imports each one (slower, catches more)."""
    by_name: dict[str, list[Registration]] = {}
    for reg in registrations():
        by_name.setdefault(reg.name, []).append(reg)
    result = []
    for name, regs in by_name.items():
        infos = [judge(reg) for reg in regs]
        if len(infos) > 1:
            providers = " and ".join(r.provider for r in regs)
            message = f"'{name}' is registered by {providers}; uninstall all but one"
            infos = [replace(i, status="conflict", error=message) for i in infos]
        elif check and infos[0].ok:
            try:
                get_addon(name)
            except AddOnError as err:
                infos = [replace(infos[0], status="broken", error=err.reason)]
        result.extend(infos)
    return result


def addon_names() -> list[str]:
    """Registered names (without importing anything)."""
    return sorted({reg.name for reg in registrations()})


def find_info(name: str) -> AddOnInfo:
    """The listing entry for `name`; AddOnError with "did you mean" (and the pip extra) when unknown."""
    return judge(_registration(name))


def _registration(name: str) -> Registration:
    regs = [reg for reg in registrations() if reg.name == name]
    if not regs:
        raise AddOnError(unknown_message(name), reason="not installed")
    if len(regs) > 1:
        providers = " and ".join(r.provider for r in regs)
        raise AddOnError(f"add-on '{name}' is registered by {providers}; uninstall all but one", "registered twice")
    return regs[0]


def _usable(name: str) -> Registration:
    reg = _registration(name)
    info = judge(reg, describe=False)
    if not info.ok:
        raise AddOnError(
            f"add-on '{name}' (from {reg.provider}, {reg.value}) is {info.status}: {info.error}", info.error
        )
    return reg


def unknown_message(name: str) -> str:
    names = addon_names()
    message = f"unknown add-on '{name}'{did_you_mean(name, names)}"
    if name in KNOWN_PLUGINS:
        extra = KNOWN_PLUGINS[name]
        message += f"; it is provided by the '{extra}' extra: pip install \"zae-engine[{extra}]\""
    else:
        message += f"; installed add-ons: {', '.join(names) or 'none'} (see `zae addons list`)"
    return message


_LOADED: dict[str, type[AddOnBase]] = {}


def get_addon(name: str) -> type[AddOnBase]:
    """Import and return the add-on class registered as `name`; AddOnError says why it cannot be used."""
    if name not in _LOADED:
        _LOADED[name] = load_addon(_usable(name))
    return _LOADED[name]


def addon_config(name: str) -> type[BaseModel]:
    """The pydantic Config of add-on `name` (imports only its Config module when one is registered)."""
    return load_config(_usable(name))


def addon_configs() -> dict[str, type[BaseModel]]:
    """Config of every usable add-on, by name; add-ons that cannot be loaded are left out."""
    configs = {}
    for info in list_addons():
        if info.ok:
            try:
                configs[info.name] = addon_config(info.name)
            except AddOnError:
                continue
    return configs


def option_owner(key: str) -> tuple[str, str] | None:
    """(name, class name) of an installed add-on whose Config has option `key` (for "did you mean" errors)."""
    for name, config in addon_configs().items():
        if key in config.model_fields:
            reg = _registration(name)
            return name, reg.value.partition(":")[2].strip()
    return None
