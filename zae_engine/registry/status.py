"""Whether a registered add-on can be used, judged without importing it.

From metadata: a malformed entry point, a module the import system cannot find (asked finder by finder, so no
package `__init__` runs), a dependency of the distribution that is missing, or a zae-engine outside the versions
the distribution requires. The add-on's description comes from its Config (in `zae_engine.addon_configs`, a
torch-free module by contract), else from the distribution's summary. What only running the module shows is
found by `check` (`zae addons list --check`) and by `get_addon` when the add-on is used.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
from dataclasses import dataclass, replace
from typing import Any

from zae_engine._version import __version__
from zae_engine.registry.points import Registration

JSON_KEYS = ("name", "description", "distribution", "version", "status", "error")


@dataclass(frozen=True)
class AddOnInfo:
    """One registered add-on as `zae addons list` shows it."""

    name: str
    value: str
    description: str
    distribution: str
    version: str
    status: str  # "ok" | "broken" | "incompatible" | "conflict"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def provider(self) -> str:
        return f"{self.distribution} {self.version}"

    def as_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in JSON_KEYS}


def judge(reg: Registration, describe: bool = True) -> AddOnInfo:
    """Everything knowable about one registration without importing its add-on module."""
    info = AddOnInfo(reg.name, reg.value, reg.summary, reg.distribution, reg.version, "ok")
    module, _, attr = reg.value.partition(":")
    if not attr.strip() or not module.strip():
        return replace(info, status="broken", error=f"entry point value {reg.value!r} is not 'package.module:Class'")
    problem = missing_module(module.strip())
    if problem:
        return replace(info, status="broken", error=problem)
    for line in reg.requires:
        verdict = _requirement_problem(line)
        if verdict:
            status, why = verdict
            return replace(info, status=status, error=why)
    if describe and reg.config_value:
        from zae_engine.registry.lookup import AddOnError, load_config

        try:
            info = replace(info, description=_first_line(load_config(reg).__doc__) or info.description)
        except AddOnError as exc:
            return replace(info, status="broken", error=exc.reason)
    return info


def missing_module(dotted: str) -> str | None:
    """Why `dotted` cannot be imported, or None; asks the finders level by level and executes nothing."""
    parts = dotted.split(".")
    search_path = None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        loaded = sys.modules.get(name)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        if spec is None:
            spec = _ask_finders(name, search_path)
        if spec is None:
            where = "" if i == 0 else f" (package '{'.'.join(parts[:i])}' has no module '{parts[i]}')"
            return f"no module named '{name}'{where}"
        search_path = spec.submodule_search_locations
        if search_path is None and i < len(parts) - 1:
            return f"'{name}' is a module, not a package, so '{dotted}' cannot exist"
    return None


def _ask_finders(name: str, path: Any) -> Any:
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(name, path)
        except Exception:  # a third-party finder that cannot answer for this name
            continue
        if spec is not None:
            return spec
    return None


def _requirement_problem(line: str) -> tuple[str, str] | None:
    """('broken' | 'incompatible', why) when a Requires-Dist line that applies here is not met."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(line)
    except InvalidRequirement:
        return None
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return None  # an optional extra's dependency, or another platform's
    try:
        found = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return "broken", f"needs {req.name}, which is not installed (pip install '{line.split(';')[0].strip()}')"
    if req.specifier and not req.specifier.contains(found, prereleases=True):
        if req.name.lower().replace("_", "-") == "zae-engine":
            return "incompatible", (
                f"supports zae-engine {req.specifier}, this is {__version__}; upgrade the plugin or install a "
                "matching zae-engine"
            )
        return "broken", f"needs {req.name}{req.specifier}, found {found}"
    return None


def _first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
