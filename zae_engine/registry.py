"""The add-on registry: every add-on is a Python entry point in the group `zae_engine.addons`.

The core registers `state_manager` in its own pyproject.toml exactly like a plugin registers `mpu`, so there is
one path for all. Two operations, with different costs on purpose:

- `list_addons()` reads installed distributions' metadata and the add-on sources as text (see `addon_source`):
  it imports no add-on module, so `zae addons list` is fast and a broken plugin cannot crash it.
  Descriptions come from the class's `description` literal, else the distribution's Summary.
- `get_addon(name)` imports the one add-on asked for and checks it; any failure becomes an `AddOnError` naming
  the add-on, its distribution and the fix. Nothing else is imported, so one broken plugin harms no other.

Statuses: `ok`; `broken` (cannot be loaded: module or dependency missing, import raises, not an AddOnBase, ...);
`incompatible` (its `supported_engine` specifier excludes this zae-engine); `conflict` (several distributions
register the name; nothing is picked silently). A failure that only shows when the module runs (an exception at
import time) is found by `check=True` / `zae addons list --check`, and by `get_addon` when the add-on is used.
"""

from __future__ import annotations

import importlib.metadata as metadata
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from zae_engine._version import __version__
from zae_engine.addon_source import FieldInfo, SourceProblem, read_addon_class
from zae_engine.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from zae_engine.trainer.addons.base import AddOnBase

__all__ = [
    "GROUP",
    "AddOnError",
    "AddOnInfo",
    "addon_fields",
    "addon_names",
    "all_addon_fields",
    "find_info",
    "get_addon",
    "list_addons",
]

GROUP = "zae_engine.addons"
JSON_KEYS = ("name", "description", "distribution", "version", "status", "error")

# registry names of the first-party plugins -> pip extra, so a missing one gets the install command
KNOWN_PLUGINS = {"mpu": "mpu", "wandb": "wandb", "neptune": "neptune"}


class AddOnError(ConfigError):
    """An add-on name that is unknown, or whose add-on cannot be used. `reason` is the short why."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class AddOnInfo:
    """One registered add-on as `zae addons list` shows it."""

    name: str
    value: str  # the entry point's "package.module:Class"
    description: str
    distribution: str
    version: str
    status: str  # "ok" | "broken" | "incompatible" | "conflict"
    error: str | None = None
    supported_engine: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def provider(self) -> str:
        return f"{self.distribution} {self.version}"

    def as_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in JSON_KEYS}


def _entry_points() -> list[metadata.EntryPoint]:
    """Every `zae_engine.addons` entry point; one unreadable distribution is skipped, not fatal."""
    found, seen = [], set()
    for dist in metadata.distributions():
        try:
            name = dist.metadata["Name"]
            points = [ep for ep in dist.entry_points if ep.group == GROUP]
        except Exception:  # malformed metadata of some unrelated package must not break the listing
            continue
        key = (name or "").lower().replace("_", "-")
        if not name or key in seen:  # like importlib.metadata: the first copy on sys.path wins
            continue
        seen.add(key)
        found += points
    return sorted(found, key=lambda ep: (ep.name, _dist_name(ep)))


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "?"


def _inspect(ep: metadata.EntryPoint) -> AddOnInfo:
    """Everything knowable about one entry point without importing it."""
    dist = ep.dist
    summary = (dist.metadata["Summary"] or "") if dist is not None else ""
    info = AddOnInfo(
        name=ep.name,
        value=ep.value,
        description=summary,
        distribution=_dist_name(ep),
        version=dist.version if dist is not None else "?",
        status="ok",
    )
    module_name, _, attr = ep.value.partition(":")
    if not attr or ep.extras:
        return replace(info, status="broken", error=f"entry point value {ep.value!r} is not 'package.module:Class'")
    try:
        report = read_addon_class(module_name.strip(), attr.strip(), with_fields=False)
    except SourceProblem as problem:
        return replace(info, status="broken", error=str(problem))
    info = replace(info, description=report.description or summary, supported_engine=report.supported_engine)
    return _check_engine(info)


def _check_engine(info: AddOnInfo) -> AddOnInfo:
    if not info.supported_engine:
        return info
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        accepted = SpecifierSet(info.supported_engine)
    except InvalidSpecifier:
        return replace(
            info,
            status="broken",
            error=f"supported_engine {info.supported_engine!r} is not a PEP 440 specifier such as '>=0.1,<1'",
        )
    if not accepted.contains(__version__, prereleases=True):
        return replace(
            info,
            status="incompatible",
            error=f"supports zae-engine {info.supported_engine}, this is {__version__}; "
            f"upgrade {info.distribution} or install a matching zae-engine",
        )
    return info


def list_addons(check: bool = False) -> list[AddOnInfo]:
    """All registered add-ons, sorted by name. `check=True` also imports each one (slower, catches more)."""
    infos = [_inspect(ep) for ep in _entry_points()]
    by_name: dict[str, list[AddOnInfo]] = {}
    for info in infos:
        by_name.setdefault(info.name, []).append(info)
    result = []
    for name, group in by_name.items():
        if len(group) > 1:
            providers = " and ".join(i.provider for i in group)
            message = f"'{name}' is registered by {providers}; uninstall all but one"
            group = [replace(i, status="conflict", error=message) for i in group]
        elif check and group[0].ok:
            try:
                get_addon(name)
            except AddOnError as err:
                group = [replace(group[0], status="broken", error=err.reason)]
        result.extend(group)
    return result


def addon_names() -> list[str]:
    """Registered names (without importing anything)."""
    return sorted({ep.name for ep in _entry_points()})


def find_info(name: str) -> AddOnInfo:
    """The listing entry for `name`; AddOnError with "did you mean" (and the pip extra) when unknown."""
    return _inspect(_single_entry_point(name))


def _single_entry_point(name: str) -> metadata.EntryPoint:
    eps = [ep for ep in _entry_points() if ep.name == name]
    if not eps:
        raise AddOnError(unknown_message(name), reason="not installed")
    if len(eps) > 1:
        providers = " and ".join(f"{_dist_name(ep)} {ep.dist.version}" for ep in eps)
        raise AddOnError(
            f"add-on '{name}' is registered by {providers}; uninstall all but one", reason="registered twice"
        )
    return eps[0]


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
    if name in _LOADED:
        return _LOADED[name]
    ep = _single_entry_point(name)
    where = f"add-on '{name}' (from {_dist_name(ep)} {ep.dist.version}, {ep.value})"
    try:
        obj = ep.load()
    except (Exception, SystemExit) as exc:  # a plugin's import failing must not take the caller down
        reason = f"importing it failed: {type(exc).__name__}: {exc}"
        raise AddOnError(f"{where} is broken: {reason}", reason=reason) from exc

    from zae_engine.trainer.addons.base import AddOnBase

    if not (isinstance(obj, type) and issubclass(obj, AddOnBase)):
        reason = f"{ep.value} is not an add-on class (it must subclass zae_engine's AddOnBase)"
        raise AddOnError(f"{where} is broken: {reason}", reason=reason)
    if obj.name != name:
        reason = f"the class says name = {obj.name!r} but is registered as '{name}'; make them equal"
        raise AddOnError(f"{where} is broken: {reason}", reason=reason)
    info = _check_engine(
        AddOnInfo(name, ep.value, "", _dist_name(ep), ep.dist.version, "ok", None, obj.supported_engine or None)
    )
    if not info.ok:
        raise AddOnError(f"{where} is {info.status}: {info.error}", reason=info.error or "")
    _LOADED[name] = obj
    return obj


def all_addon_fields() -> dict[str, tuple[FieldInfo, ...] | None]:
    """Config fields of every usable add-on, read from source (for the spec's JSON Schema)."""
    fields = {}
    for info in list_addons():
        if info.ok:
            module_name, _, attr = info.value.partition(":")
            try:
                fields[info.name] = read_addon_class(module_name.strip(), attr.strip()).fields
            except SourceProblem:
                fields[info.name] = None
    return fields


def addon_fields(name: str) -> tuple[AddOnInfo, tuple[FieldInfo, ...] | None]:
    """The listing entry and the Config fields of `name`, read from source (no import)."""
    info = find_info(name)
    if info.status == "broken":
        return info, None
    module_name, _, attr = info.value.partition(":")
    try:
        return info, read_addon_class(module_name.strip(), attr.strip()).fields
    except SourceProblem:
        return info, None
