"""A run spec as text: YAML with line numbers, `${ENV_VAR}` interpolation and `--set` overrides.

Every later stage reports problems against a field path such as `("data", "train", "batch_size")`; this module
turns that path back into where the user wrote it: `spec.yaml:12`, or the `--set` option that put it there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zae_engine.errors import ConfigError, did_you_mean
from zae_engine.spec import bounded_yaml

FieldPath = tuple[str | int, ...]

_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, and how to fix it."""

    path: FieldPath
    message: str


class SpecError(ConfigError):
    """A spec that cannot run: one line per problem, each naming the place, the field and the fix."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def dotted(path: FieldPath) -> str:
    """('addons', 1, 'save_path') -> 'addons[1].save_path'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(spec)"


@dataclass
class SpecSource:
    """The raw spec data plus what is needed to point at any field of it."""

    path: Path
    data: dict[str, Any]
    lines: dict[FieldPath, int] = field(default_factory=dict)
    env_templates: dict[FieldPath, str] = field(default_factory=dict)  # interpolated field -> its "${...}" text
    overrides: dict[FieldPath, str] = field(default_factory=dict)  # field set/created later -> e.g. "--set run.n_epoch"
    parts: dict[FieldPath, SpecSource] = field(default_factory=dict)  # a section written in another file -> its source

    def where(self, path: FieldPath) -> str:
        """'spec.yaml:12' or '--set run.n_epoch' for the field at `path` (or its closest written parent)."""
        for set_path, origin in self.overrides.items():
            if path[: len(set_path)] == set_path:
                return origin
        for section, source in self.parts.items():
            if path[: len(section)] == section:
                return source.where(path)
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)

    def error(self, problems: list[Problem]) -> SpecError:
        lines = []
        for problem in problems:
            where, field_path = self.where(problem.path), dotted(problem.path)
            lines.append(
                f"{where}: {problem.message}"
                if where == f"--set {field_path}"
                else f"{where}: {field_path}: {problem.message}"
            )
        return SpecError(lines)

    def fail(self, path: FieldPath, message: str) -> SpecError:
        return self.error([Problem(path, message)])


def read_spec(path: str | Path) -> SpecSource:
    """Parse a spec file, remember each field's line, and expand `${ENV_VAR}` / `${ENV_VAR:-default}`."""
    path = Path(path)
    if not path.exists():
        hint = did_you_mean(path.name, [p.name for p in path.parent.glob("*.y*ml")]) if path.parent.is_dir() else ""
        raise SpecError([f"{path}: no such spec file{hint}"])
    if path.is_dir():
        raise SpecError([f"{path}: is a folder; give the path of a .yaml spec file"])
    text = _read_text(path)
    lines: dict[FieldPath, int] = {}
    try:
        root = bounded_yaml.compose(text)
        duplicates = _record_lines(root, (), lines) if root is not None else []  # before merge keys are resolved
        data = bounded_yaml.construct(root)
    except bounded_yaml.YAMLLimitError as exc:
        line = f":{exc.line}" if exc.line is not None else ""
        raise SpecError([f"{path}{line}: {exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            what += f" ({context} that started at line {context_mark.line + 1})"
        if isinstance(exc, yaml.constructor.ConstructorError):  # e.g. an unknown tag such as `!foo`
            raise SpecError([f"{path}{line}: cannot build this YAML value: {what}; write plain values"]) from None
        raise SpecError([f"{path}{line}: YAML syntax error: {what}; check the indentation and quoting there"]) from None
    if not isinstance(data, dict):
        got = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError([f"{path}: a spec must be a mapping with trainer, model, data, run, ... (this file is {got})"])
    source = SpecSource(path=path, data=data, lines=lines)
    if duplicates:
        raise SpecError([f"{path}:{line}: {dotted(p)}: written twice; keep one" for p, line in duplicates])
    source.data = _interpolate(source, data, ())
    return source


SWEEP_FILE_KEYS = ("spec", "sweep")


def read_spec_or_sweep_file(path: str | Path) -> SpecSource:
    """A spec, or a sweep file (`spec: run.yaml` plus `sweep:`): then the named spec with that sweep section added.

    The named spec is found relative to the sweep file's folder; errors in the sweep section point at the sweep
    file, all others at the spec.
    """
    source = read_spec(path)
    if "spec" not in source.data:
        return source
    unknown = [key for key in source.data if key not in SWEEP_FILE_KEYS]
    if unknown:
        raise source.fail(
            (unknown[0],),
            f"unknown key in a sweep file{did_you_mean(str(unknown[0]), SWEEP_FILE_KEYS)}; a sweep file holds only "
            "`spec:` (the run spec to search over) and `sweep:`",
        )
    named = source.data["spec"]
    if not isinstance(named, str) or not named.strip():
        raise source.fail(("spec",), f"expected the path of a run spec, e.g. spec: quickstart.yaml (got {named!r})")
    if "sweep" not in source.data:
        raise source.fail((), "a sweep file needs a `sweep:` section (metric, direction, params)")
    target = (source.path.parent / named).resolve() if not Path(named).is_absolute() else Path(named)
    if target == source.path.resolve():
        raise source.fail(("spec",), "a sweep file cannot name itself; name the run spec to search over")
    try:
        run = read_spec(target)
    except SpecError as exc:
        raise SpecError([f"{source.where(('spec',))}: spec: {line}" for line in exc.lines]) from None
    for key in SWEEP_FILE_KEYS:
        if key in run.data:
            raise source.fail(
                ("spec",),
                f"{target} has a `{key}:` section of its own; name a plain run spec, or run that file directly",
            )
    run.data["sweep"] = source.data["sweep"]
    run.parts[("sweep",)] = source
    return run


def _read_text(path: Path) -> str:
    """The spec's text, refusing files too large to be a spec before reading them whole."""
    limit = bounded_yaml.MAX_SPEC_BYTES
    too_large = f"{path}: larger than {limit // 2**20} MiB, far more than a run spec needs; is this the right file?"
    try:
        if path.stat().st_size > limit:
            raise SpecError([too_large])
        with path.open("rb") as stream:
            raw = stream.read(limit + 1)  # a device or pipe reports no size: read no more than the limit
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec: {exc}"]) from None
    if len(raw) > limit:
        raise SpecError([too_large])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: cannot read the spec: {exc}"]) from None


def _record_lines(node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int]) -> list[tuple[FieldPath, int]]:
    duplicates = []
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a collection as a key: no field path can name it (building the data refuses it)
            key = key_node.value
            child = (*path, key)
            if key in seen:
                duplicates.append((child, key_node.start_mark.line + 1))
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            duplicates += _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            duplicates += _record_lines(item, (*path, index), lines)
    return duplicates


def _interpolate(source: SpecSource, value: Any, path: FieldPath) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(source, v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(source, v, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name, default)
        if found is None:
            raise source.fail(
                path, f"environment variable '{name}' is not set; export it, or write ${{{name}:-default}}"
            )
        return found

    expanded = _ENV.sub(substitute, value)
    if expanded != value:
        source.env_templates[path] = value
    return expanded


def apply_overrides(source: SpecSource, assignments: list[str]) -> None:
    """Apply `--set dotted.key=value` options; values are YAML (`2`, `true`, `[cpu, cpu]`, `null`)."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError([f"--set {assignment}: expected key.path=value, e.g. --set run.n_epoch=3"])
        try:
            value = bounded_yaml.load(raw) if raw.strip() else ""
        except bounded_yaml.YAMLLimitError as exc:
            raise SpecError([f"--set {key}: {exc}"]) from None
        except yaml.YAMLError:
            value = raw
        set_field(source, key, value, f"--set {key}")


def with_env_templates(data: Any, source: SpecSource) -> Any:
    """`data` (the spec's fields as plain data) with every `${VAR}` field put back to its placeholder, so what is
    written out or sent to a tracker never holds a value read from the environment."""
    for path, template in source.env_templates.items():
        parent = data
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                break
        else:
            last = path[-1]
            if (
                isinstance(parent, dict)
                and last in parent
                or (isinstance(parent, list) and isinstance(last, int) and last < len(parent))
            ):
                parent[last] = template
    return data


def set_field(source: SpecSource, key: str, value: Any, origin: str) -> FieldPath:
    """Put a Python value (not YAML text) at the dotted `key`, the way `--set` does; `origin` is what error messages
    name as the place the value came from. Returns the field's path."""
    path = _override_path(source, key, origin)
    parent = source.data
    for i, part in enumerate(path[:-1]):
        nxt = parent[part] if isinstance(parent, list) else parent.get(part)
        if nxt is None:
            nxt = parent[part] = {}
            source.overrides.setdefault(path[: i + 1], origin)
        if not isinstance(nxt, (dict, list)):
            raise SpecError(
                [f"{origin}: '{dotted(path[: i + 1])}' is {nxt!r}, not a section; set it as a whole instead"]
            )
        parent = nxt
    parent[path[-1]] = value
    source.overrides[path] = origin
    source.env_templates.pop(path, None)
    return path


def _override_path(source: SpecSource, key: str, origin: str) -> FieldPath:
    """'addons.state_manager.save_path' -> ('addons', 0, 'save_path'); list items by index or add-on name."""
    path: list[str | int] = []
    node: Any = source.data
    for part in key.split("."):
        if not part:
            raise SpecError([f"{origin}: empty part in the key; write it like run.n_epoch"])
        if path == ["addons"] and not isinstance(node, list):
            raise SpecError([f"{origin}: the spec has no add-on entries; add `- {{name: ...}}` under addons first"])
        if isinstance(node, list):
            index = _list_index(origin, path, node, part)
            path.append(index)
            node = node[index]
            continue
        path.append(part)
        node = node.get(part) if isinstance(node, dict) else None
    return tuple(path)


def _list_index(origin: str, path: list, items: list, part: str) -> int:
    if part.isdigit():
        if int(part) >= len(items):
            raise SpecError([f"{origin}: '{dotted(tuple(path))}' has {len(items)} entries; there is no [{part}]"])
        return int(part)
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if part in names:
        return names.index(part)
    raise SpecError(
        [
            f"{origin}: no entry named '{part}' in '{dotted(tuple(path))}'"
            f"{did_you_mean(part, [n for n in names if n])}; use its name or index (0..{len(items) - 1})"
        ]
    )
