"""The model's blocks: what FSDP shards one by one and activation checkpointing recomputes.

By default a block is a child (that has parameters) of one of the model's `ModuleList`s or `Sequential`s, the
outermost ones: the layers of a transformer, the stages of a CNN. A user who knows better names the classes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import nn
from torch.utils.checkpoint import checkpoint

from zae_engine.errors import ConfigError, did_you_mean

_CONTAINERS = (nn.ModuleList, nn.Sequential)


def find_blocks(model: nn.Module, class_names: Sequence[str] | None = None) -> list[str]:
    """Qualified names of the blocks, deepest first (FSDP shards children before their parents)."""
    if class_names:
        names = _of_classes(model, class_names)
    else:
        names = []
        _collect_container_children(model, "", names)
    return sorted(names, key=lambda name: -name.count("."))


def outermost(names: Sequence[str]) -> list[str]:
    """The names not inside another one of `names` (nested blocks are recomputed with their parent)."""
    return [name for name in names if not any(name.startswith(other + ".") for other in names if other != name)]


def _collect_container_children(module: nn.Module, prefix: str, out: list[str]) -> None:
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(module, _CONTAINERS) and _has_parameters(child):
            out.append(path)  # a block: its insides are its own business
        else:
            _collect_container_children(child, f"{path}.", out)


def _of_classes(model: nn.Module, class_names: Sequence[str]) -> list[str]:
    wanted = set(class_names)
    found: dict[str, list[str]] = {}
    present: set[str] = set()
    for path, module in model.named_modules():
        cls = type(module)
        present.add(cls.__name__)
        for label in (cls.__name__, cls.__qualname__, f"{cls.__module__}.{cls.__qualname__}"):
            if label in wanted and path:  # the root is always sharded on its own
                found.setdefault(label, []).append(path)
    missing = [name for name in class_names if name not in found]
    if missing:
        raise ConfigError(
            f"MultiGPUAddon: block_classes names {missing[0]!r}, but the model ({type(model).__name__}) has no such "
            f"module below its root{did_you_mean(missing[0], sorted(present))}; its classes are: "
            f"{', '.join(sorted(present))}"
        )
    return sorted({path for paths in found.values() for path in paths})


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def checkpoint_blocks(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """Recompute these blocks' activations in backward (non-reentrant checkpointing); returns what was changed."""
    patched = []
    for name in outermost(names):
        block = model.get_submodule(name)
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
        patched.append(block)
    return patched


def restore_blocks(patched: Sequence[nn.Module]) -> None:
    """Undo `checkpoint_blocks`: the blocks' own forward again."""
    for block in patched:
        block.__dict__.pop("forward", None)
