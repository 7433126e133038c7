"""YAML parsing with limits, so a hostile spec costs bounded time, memory and stack.

PyYAML's safe loader already refuses to build Python objects, but it will happily expand a few hundred bytes of
nested aliases ("billion laughs") into billions of nodes for whoever walks the result, and it composes nested
collections by recursion, so very deep nesting ends in a bare RecursionError. Here the composer counts as it
goes: how deep collections nest (aliases included, as they expand) and how many nodes aliases repeat in all;
past a limit it stops with the line where that happened.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_SPEC_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 100  # collections inside collections; a run spec needs a handful
MAX_REPEATED_NODES = 100_000  # nodes that aliases repeat, summed over every alias in the document

_YAML_TAG = "tag:yaml.org,2002:"
_PYTHON_TAG = _YAML_TAG + "python/"


class YAMLLimitError(Exception):
    """The text is valid YAML that we refuse to build; `line` is 1-based (None when not known)."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def compose(text: str) -> yaml.Node | None:
    """The node tree of one YAML document (with line numbers), or None for an empty one.

    Raises YAMLLimitError past the limits and yaml.YAMLError for text that is not YAML.
    """
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def construct(root: yaml.Node | None) -> Any:
    """Plain Python data from a composed tree (safe tags only). Merge keys (`<<`) are resolved in the tree itself,
    so read anything else you need from it first."""
    if root is None:
        return None
    constructor = yaml.SafeLoader("")
    try:
        return constructor.construct_document(root)
    finally:
        constructor.dispose()


def load(text: str) -> Any:
    """The data of one YAML document, within the limits."""
    return construct(compose(text))


def _line(mark: Any) -> int | None:
    return mark.line + 1 if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer keeps, per collection, how many nodes and how many levels it expands to."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: list[list[int]] = []  # per collection being composed: [nodes so far, deepest child so far]
        self._expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, levels) once composed
        self._repeated = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            return self._compose_alias(parent, index)
        event = self.peek_event()
        if (getattr(event, "tag", None) or "").startswith(_PYTHON_TAG):
            raise YAMLLimitError(
                f"tag '!!{event.tag[len(_YAML_TAG) :]}': tags that build Python objects are not allowed; write plain "
                "values (a class is named with class_path)",
                _line(event.start_mark),
            )
        if len(self._open) >= MAX_DEPTH:
            raise YAMLLimitError(
                f"collections nest more than {MAX_DEPTH} levels deep here; a spec needs far fewer, so flatten it",
                _line(event.start_mark),
            )
        self._open.append([1, 0])
        node = super().compose_node(parent, index)
        nodes, deepest = self._open.pop()
        self._expanded[id(node)] = (nodes, deepest + 1)
        self._count(nodes, deepest + 1)
        return node

    def _compose_alias(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        node = super().compose_node(parent, index)  # the anchored node itself (PyYAML shares it, never copies)
        expanded = self._expanded.get(id(node))
        if expanded is None:
            raise YAMLLimitError(
                f"alias *{event.anchor} points into the collection that holds it; a spec cannot contain itself",
                _line(event.start_mark),
            )
        nodes, levels = expanded
        self._repeated += nodes
        if self._repeated > MAX_REPEATED_NODES:
            raise YAMLLimitError(
                f"aliases repeat more than {MAX_REPEATED_NODES:,} nodes by here (alias *{event.anchor}); "
                "write the values out or use fewer aliases",
                _line(event.start_mark),
            )
        if len(self._open) + levels > MAX_DEPTH:
            raise YAMLLimitError(
                f"alias *{event.anchor} nests collections more than {MAX_DEPTH} levels deep; flatten the spec",
                _line(event.start_mark),
            )
        self._count(nodes, levels)
        return node

    def _count(self, nodes: int, levels: int) -> None:
        if self._open:
            enclosing = self._open[-1]
            enclosing[0] += nodes
            enclosing[1] = max(enclosing[1], levels)


# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-4` (or `--set optimizer.init_args.lr=1e-05`) would
# arrive as the text "1e-4" and fail deep inside the optimizer. YAML 1.2 and JSON read it as a number; so do we.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))
