"""Who registered which add-on: the `zae_engine.addons` entry points, read from distribution metadata only.

A distribution may also point at its add-ons' option models in `zae_engine.addon_configs` (same names), in
modules that import neither torch nor the add-on itself; the CLI reads descriptions and options from those.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
from dataclasses import dataclass
from functools import lru_cache

GROUP = "zae_engine.addons"
CONFIG_GROUP = "zae_engine.addon_configs"


@dataclass(frozen=True)
class Registration:
    """One add-on name as one distribution registers it."""

    name: str
    value: str  # "package.module:Class" of the add-on
    config_value: str | None  # "package.module:Config" in CONFIG_GROUP, if the distribution gives one
    distribution: str
    version: str
    summary: str
    requires: tuple[str, ...]  # the distribution's Requires-Dist lines

    @property
    def provider(self) -> str:
        return f"{self.distribution} {self.version}"


def registrations() -> tuple[Registration, ...]:
    """Every registered add-on, sorted by name then distribution; unreadable distributions are skipped.

    Read once per `sys.path` (a folder put on it, as tests and notebooks do, is seen at the next call).
    """
    return _read(tuple(sys.path))


@lru_cache(maxsize=4)
def _read(path: tuple[str, ...]) -> tuple[Registration, ...]:
    found: list[Registration] = []
    seen: set[str] = set()
    for dist in metadata.distributions():
        try:
            # the folder name gives the distribution's name without parsing METADATA (which only the few
            # distributions that register add-ons need)
            key = _normalized(getattr(dist, "_normalized_name", None) or dist.metadata["Name"] or "")
            if not key or key in seen:  # like importlib.metadata: the first copy on sys.path wins
                continue
            seen.add(key)
            points = [ep for ep in dist.entry_points if ep.group in (GROUP, CONFIG_GROUP)]
            if not points:
                continue
            meta = dist.metadata
            name = meta["Name"]
        except Exception:  # malformed metadata of some unrelated package must not break the listing
            continue
        configs = {ep.name: ep.value for ep in points if ep.group == CONFIG_GROUP}
        for ep in points:
            if ep.group == GROUP:
                found.append(
                    Registration(
                        name=ep.name,
                        value=ep.value,
                        config_value=configs.get(ep.name),
                        distribution=name,
                        version=dist.version or "?",
                        summary=meta.get("Summary") or "",
                        requires=tuple(dist.requires or ()),
                    )
                )
    return tuple(sorted(found, key=lambda r: (r.name, r.distribution)))


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def forget() -> None:
    """Drop the cached listing (after installing a plugin in this process, e.g. in tests)."""
    _read.cache_clear()
