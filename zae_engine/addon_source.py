"""Reading an add-on class from its source file without running it.

`zae addons list` and `zae addons show` must not import add-on modules (importing one usually imports torch,
and a broken one may raise). So they locate the module through the import system's finders (which never execute
it), parse it with `ast`, and read what the class declares as literals: `description`, `supported_engine` and the
fields of its pydantic `Config`. Names imported from other modules are followed the same way. Whatever cannot be
read statically is reported as unknown, never guessed; the real check happens when the add-on is imported.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib.machinery import ModuleSpec

ADDON_BASE = ("zae_engine.trainer.addons.base", "AddOnBase")
_MAX_HOPS = 8


class SourceProblem(Exception):
    """The add-on's module or class certainly cannot be loaded; the message says why."""


@dataclass(frozen=True)
class FieldInfo:
    """One keyword of an add-on's Config, as written in the source."""

    name: str
    type: str
    default: str  # source text of the default; "" when the field is required
    description: str
    required: bool


@dataclass(frozen=True)
class _Module:
    name: str
    is_package: bool
    tree: ast.Module
    text: str


@dataclass(frozen=True)
class _Class:
    module: _Module
    node: ast.ClassDef


@dataclass(frozen=True)
class ClassReport:
    """What the source says about an add-on class. `None` means "not readable without importing"."""

    description: str | None
    supported_engine: str | None
    is_addon: bool | None
    fields: tuple[FieldInfo, ...] | None


def find_spec_without_import(dotted: str) -> ModuleSpec:
    """The module's spec, asking each finder level by level, so no package `__init__` is executed."""
    parts = dotted.split(".")
    search_path = None
    spec = None
    for i in range(len(parts)):
        fullname = ".".join(parts[: i + 1])
        loaded = sys.modules.get(fullname)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        if spec is None:
            spec = _ask_finders(fullname, search_path)
        if spec is None:
            where = "" if i == 0 else f" (package '{'.'.join(parts[:i])}' has no module '{parts[i]}')"
            raise SourceProblem(f"no module named '{fullname}'{where}")
        search_path = spec.submodule_search_locations
        if search_path is None and i < len(parts) - 1:
            raise SourceProblem(f"'{fullname}' is a module, not a package, so '{dotted}' cannot exist")
    assert spec is not None
    return spec


def _ask_finders(fullname: str, search_path: list[str] | None) -> ModuleSpec | None:
    if search_path is None:
        return importlib.util.find_spec(fullname)  # top-level names: finding never executes anything
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = find(fullname, list(search_path))
        if spec is not None:
            return spec
    return None


@lru_cache(maxsize=256)
def _read_module(dotted: str) -> _Module | None:
    """The parsed source of a module; None for modules without Python source (extensions, frozen)."""
    spec = find_spec_without_import(dotted)
    origin = spec.origin
    if not origin or not origin.endswith(".py"):
        return None
    try:
        with open(origin, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise SourceProblem(f"cannot read {origin}: {exc.strerror}") from None
    try:
        tree = ast.parse(text, filename=origin)
    except SyntaxError as exc:
        raise SourceProblem(f"syntax error in {origin}, line {exc.lineno}: {exc.msg}") from None
    return _Module(dotted, spec.submodule_search_locations is not None, tree, text)


def check_module(dotted: str) -> None:
    """Raise SourceProblem if the module certainly fails on import: a top-level import of a package that is not
    installed, or an unconditional top-level `raise`."""
    module = _read_module(dotted)
    if module is None:
        return
    for stmt in module.tree.body:
        if isinstance(stmt, ast.Raise):
            raised = ast.get_source_segment(module.text, stmt.exc) if stmt.exc else "an exception"
            raise SourceProblem(f"{dotted} raises {raised} when imported (line {stmt.lineno})")
        if isinstance(stmt, ast.Import):
            names = [alias.name for alias in stmt.names]
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            names = [stmt.module]
        else:
            continue  # imports inside try/if blocks are optional by intent
        for name in names:
            top = name.split(".")[0]
            if top not in sys.modules and importlib.util.find_spec(top) is None:
                raise SourceProblem(f"{dotted} imports '{name}', which is not installed (No module named '{top}')")


def read_addon_class(module_name: str, class_name: str, with_fields: bool = True) -> ClassReport:
    """Read an add-on class statically; raises SourceProblem when it certainly cannot load.

    `with_fields=False` skips reading the Config (listing needs only the class facts)."""
    check_module(module_name)
    module = _read_module(module_name)
    if module is None:
        return ClassReport(None, None, None, None)
    found = _lookup(module, class_name, hops=0)
    if found is None:
        return ClassReport(None, None, None, None)
    if not isinstance(found, _Class):
        raise SourceProblem(f"'{module_name}:{class_name}' is not a class")
    is_addon = _is_addon(found, hops=0)
    if is_addon is False:
        raise SourceProblem(f"{class_name} is not an add-on: it does not subclass zae_engine's AddOnBase")
    return ClassReport(
        description=_class_literal(found, "description", hops=0),
        supported_engine=_class_literal(found, "supported_engine", hops=0),
        is_addon=is_addon,
        fields=_config_fields(found) if with_fields else None,
    )


# ---------------------------------------------------------------------------------------------- name resolution
def _lookup(module: _Module, name: str, hops: int) -> _Class | _Module | None:
    """What `module.name` is, following assignments and imports; None if not knowable without running code."""
    if hops > _MAX_HOPS:
        return None
    dynamic = False
    for stmt in _top_level(module.tree):
        if isinstance(stmt, ast.ClassDef) and stmt.name == name:
            return _Class(module, stmt)
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets):
            return _resolve_expr(module, stmt.value, hops + 1)
        if isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                if alias.name == "*":
                    dynamic = True
                elif (alias.asname or alias.name) == name:
                    source = _absolute(module, stmt)
                    return _lookup_in(source, alias.name, hops + 1) if source else None
        if isinstance(stmt, ast.FunctionDef) and stmt.name in (name, "__getattr__"):
            return None  # a function, or a module-level __getattr__ that decides at run time
    if dynamic:
        return None
    raise SourceProblem(f"module '{module.name}' has no attribute '{name}'")


def _lookup_in(dotted: str, name: str, hops: int) -> _Class | _Module | None:
    try:
        module = _read_module(dotted)
    except SourceProblem:
        return None
    if module is None:
        return None
    try:
        found = _lookup(module, name, hops)
    except SourceProblem:
        found = None
    if found is None and module.is_package:  # `from package import name` may name a submodule
        try:
            return _read_module(f"{dotted}.{name}")
        except SourceProblem:
            return None
    return found


def _resolve_expr(module: _Module, expr: ast.expr, hops: int) -> _Class | _Module | None:
    if isinstance(expr, ast.Name):
        try:
            return _lookup(module, expr.id, hops)
        except SourceProblem:
            return None
    if isinstance(expr, ast.Attribute):
        owner = _resolve_expr(module, expr.value, hops + 1)
        if isinstance(owner, _Module):
            return _lookup_in(owner.name, expr.attr, hops + 1)
        if isinstance(owner, _Class):
            inner = _class_body_assign(owner, expr.attr)
            return inner
    return None


def _absolute(module: _Module, stmt: ast.ImportFrom) -> str | None:
    if stmt.level == 0:
        return stmt.module
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    if stmt.level - 1 > len(package):
        return None
    base = package[: len(package) - (stmt.level - 1)]
    return ".".join([*base, stmt.module] if stmt.module else base) or None


def _top_level(tree: ast.Module):
    """Top-level statements, including those inside `if`/`try` blocks (conditional definitions)."""
    for stmt in tree.body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try)):
            for block in (stmt.body, getattr(stmt, "orelse", []), getattr(stmt, "finalbody", [])):
                yield from block


# ---------------------------------------------------------------------------------------------- class facts
def _bases(cls: _Class, hops: int) -> list[_Class | _Module | None]:
    return [_resolve_expr(cls.module, base, hops + 1) for base in cls.node.bases]


def _is_addon(cls: _Class, hops: int) -> bool | None:
    if (cls.module.name, cls.node.name) == ADDON_BASE:
        return True
    if hops > _MAX_HOPS:
        return None
    if not cls.node.bases:
        return False
    answers = [_is_addon(base, hops + 1) if isinstance(base, _Class) else None for base in _bases(cls, hops)]
    if any(answer is True for answer in answers):
        return True
    return False if all(answer is False for answer in answers) else None


def _class_literal(cls: _Class, attr: str, hops: int) -> str | None:
    """A string class attribute, looked up along the bases like Python would."""
    for stmt in cls.node.body:
        target, value = _assignment(stmt)
        if target == attr:
            return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
    if hops > _MAX_HOPS:
        return None
    for base in _bases(cls, hops):
        if isinstance(base, _Class):
            found = _class_literal(base, attr, hops + 1)
            if found is not None:
                return found
    return None


def _assignment(stmt: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id, stmt.value
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return stmt.target.id, stmt.value
    return None, None


def _class_body_assign(cls: _Class, attr: str) -> _Class | _Module | None:
    for stmt in cls.node.body:
        if isinstance(stmt, ast.ClassDef) and stmt.name == attr:
            return _Class(cls.module, stmt)
        target, value = _assignment(stmt)
        if target == attr and value is not None:
            return _resolve_expr(cls.module, value, 1)
    return None


def _config_fields(addon: _Class) -> tuple[FieldInfo, ...] | None:
    config = _find_config(addon, hops=0)
    if config is None:
        return None
    return _fields_of(config, hops=0)


def _find_config(cls: _Class, hops: int) -> _Class | None:
    for stmt in cls.node.body:
        if isinstance(stmt, ast.ClassDef) and stmt.name == "Config":
            return _Class(cls.module, stmt)
        target, value = _assignment(stmt)
        if target == "Config" and value is not None:
            found = _resolve_expr(cls.module, value, hops + 1)
            return found if isinstance(found, _Class) else None
    if hops > _MAX_HOPS:
        return None
    for base in _bases(cls, hops):
        if isinstance(base, _Class):
            found = _find_config(base, hops + 1)
            if found is not None:
                return found
    return None


def _fields_of(config: _Class, hops: int) -> tuple[FieldInfo, ...] | None:
    """Fields of a pydantic model class, bases first; None if a base cannot be read."""
    inherited: dict[str, FieldInfo] = {}
    for base_expr, base in zip(config.node.bases, _bases(config, hops)):
        name = base_expr.attr if isinstance(base_expr, ast.Attribute) else getattr(base_expr, "id", "")
        if name == "BaseModel":
            continue
        if not isinstance(base, _Class) or hops > _MAX_HOPS:
            return None
        base_fields = _fields_of(base, hops + 1)
        if base_fields is None:
            return None
        inherited.update({f.name: f for f in base_fields})
    for stmt in config.node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        name = stmt.target.id
        annotation = ast.get_source_segment(config.module.text, stmt.annotation) or ""
        if name.startswith("_") or name == "model_config" or annotation.startswith(("ClassVar", "typing.ClassVar")):
            continue
        inherited[name] = _field_info(config.module.text, name, annotation, stmt.value)
    return tuple(inherited.values())


def _field_info(text: str, name: str, annotation: str, value: ast.expr | None) -> FieldInfo:
    description = ""
    default_expr: ast.expr | None = value
    factory = False
    if isinstance(value, ast.Call) and _called_name(value) == "Field":
        default_expr = value.args[0] if value.args else None
        for keyword in value.keywords:
            if keyword.arg == "default":
                default_expr = keyword.value
            elif keyword.arg == "default_factory":
                default_expr, factory = keyword.value, True
            elif keyword.arg == "description" and isinstance(keyword.value, ast.Constant):
                description = str(keyword.value.value)
    required = default_expr is None or (isinstance(default_expr, ast.Constant) and default_expr.value is Ellipsis)
    default = "" if required else (ast.get_source_segment(text, default_expr) or "?")
    if factory and not required:
        default = f"{default}()"
    return FieldInfo(name, annotation, default, description, required)


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
