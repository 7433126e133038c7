"""Nested state <-> (JSON skeleton, flat dict of tensors): how a checkpoint avoids pickle.

A trainer's state is a tree of dicts, lists, tuples, tensors and plain scalars (an optimizer's state is keyed
by int, its betas are a tuple, a best value may be inf). `split_tensors` turns it into a JSON-able skeleton in
which every tensor is replaced by a reference into a flat dict that safetensors can store; `join_tensors`
reverses it exactly. Anything else (a custom object, a function) is refused when saving, naming its place,
so a checkpoint never holds something that could not be read back safely.

Skeleton tags (a dict with one key starting with '$'):
``{"$tensor": key}``, ``{"$tuple": [...]}``, ``{"$float": "inf" | "-inf" | "nan"}``,
``{"$dict": [[key, value], ...]}`` for dicts whose keys are not all plain strings.

Both directions are bounded: containers nest at most `MAX_DEPTH` deep and a container that contains itself
is refused by name, so neither a hostile file nor a slip in an add-on's `state_dict()` ends in a
`RecursionError` somewhere later.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from zae_engine.errors import CheckpointError

_SCALARS = (str, int, bool, type(None))

#: containers in a state nest at most this deep (a trainer's state needs about six)
MAX_DEPTH = 100
#: a decoded `.ckpt` file of version 0.1 may hold at most this many values, counted as a tree: shared
#: references in a pickle could otherwise stand for 2**60 of them
MAX_NODES = 5_000_000


def check_tree(tree: Any, where: str = "state") -> None:
    """Raise CheckpointError naming the first value a safe checkpoint cannot hold."""
    split_tensors(tree, where)


def check_bounded(tree: Any, source: str) -> None:
    """Refuse a tree decoded from a file that nests too deep, contains itself or expands to too many values.

    Counted as a tree (a value reachable twice counts twice), because that is how every later consumer
    (optimizer.load_state_dict, the next save) walks it.
    """
    count = 0
    on_path: set[int] = set()

    def visit(value: Any, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise CheckpointError(
                f"{source} expands to more than {MAX_NODES} values (shared references in its pickle?); "
                "it is hostile or not a checkpoint. Nothing from it was used"
            )
        if not isinstance(value, (dict, list, tuple)):
            return
        if depth >= MAX_DEPTH:
            raise CheckpointError(f"{source} nests containers more than {MAX_DEPTH} deep; it is damaged or hostile")
        if id(value) in on_path:
            raise CheckpointError(f"{source} holds a container that contains itself; it is damaged or hostile")
        on_path.add(id(value))
        for item in value.values() if isinstance(value, dict) else value:
            visit(item, depth + 1)
        on_path.discard(id(value))

    visit(tree, 0)


def split_tensors(tree: Any, where: str = "state", keep: bool = False) -> tuple[Any, dict[str, torch.Tensor]]:
    """`tree` -> (JSON-able skeleton, {key: CPU tensor}); tensors sharing memory are copied apart.

    `keep=True` leaves the tensors where and as they are (a device, a DTensor's shard): for a writer that
    places them itself (sharded checkpoints).
    """
    tensors: dict[str, torch.Tensor] = {}
    seen_storage: set[tuple[int, int]] = set()

    def tensor_ref(value: torch.Tensor, path: str) -> dict[str, str]:
        if value.is_sparse or value.layout != torch.strided:
            raise CheckpointError(f"cannot checkpoint {path}: sparse tensors are not supported; store it dense")
        data = value.detach() if keep else value.detach().to("cpu").contiguous()
        if data.numel() and not keep:
            storage = (data.untyped_storage().data_ptr(), data.storage_offset())
            if storage in seen_storage or data.untyped_storage().nbytes() != data.numel() * data.element_size():
                data = data.clone()  # safetensors refuses shared or partial storage; a copy is exact
            seen_storage.add((data.untyped_storage().data_ptr(), data.storage_offset()))
        key = path
        n = 1
        while key in tensors:
            n += 1
            key = f"{path}#{n}"
        tensors[key] = data
        return {"$tensor": key}

    on_path: set[int] = set()  # the containers being encoded: meeting one again means it contains itself

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            return tensor_ref(value, path)
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, _SCALARS):
            return value
        if isinstance(value, (dict, list, tuple)):
            if id(value) in on_path:
                raise CheckpointError(f"cannot checkpoint {path}: it contains itself (a reference cycle)")
            if len(on_path) >= MAX_DEPTH:
                raise CheckpointError(f"cannot checkpoint {path}: containers nest more than {MAX_DEPTH} deep")
            on_path.add(id(value))
            try:
                return encode_container(value, path)
            finally:
                on_path.discard(id(value))
        raise CheckpointError(
            f"cannot checkpoint {path}: a {type(value).__module__}.{type(value).__qualname__} is neither a tensor nor "
            "a JSON value (dict, list, tuple, str, int, float, bool, None). Return only such values from state_dict()"
        )

    def encode_container(value: dict | list | tuple, path: str) -> Any:
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: encode(v, f"{path}.{k}") for k, v in value.items()}
            for k in value:
                if not isinstance(k, (str, int)):
                    raise CheckpointError(
                        f"cannot checkpoint {path}: dict key {k!r} of type {type(k).__name__}; keys must be str or int"
                    )
            return {"$dict": [[k, encode(v, f"{path}.{k}")] for k, v in value.items()]}
        if isinstance(value, list):
            return [encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return {"$tuple": [encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}

    return encode(tree, where), tensors


def join_tensors(skeleton: Any, tensors: dict[str, torch.Tensor], source: str) -> Any:
    """Rebuild the tree `split_tensors` took apart; a malformed skeleton is a CheckpointError naming `source`."""

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{source} is not a valid zae-engine checkpoint: {why}")

    def decode(node: Any, depth: int) -> Any:
        """`depth`: Python containers above `node`, counted as `split_tensors` counts them when saving."""
        if isinstance(node, (str, int, float, bool, type(None))):
            return node
        if depth >= MAX_DEPTH:
            raise bad(f"containers nest more than {MAX_DEPTH} deep")
        if isinstance(node, list):
            return [decode(v, depth + 1) for v in node]
        if not isinstance(node, dict):
            raise bad(f"unexpected JSON value of type {type(node).__name__}")
        if len(node) == 1:
            ((tag, body),) = node.items()
            if tag == "$tensor":
                if not isinstance(body, str) or body not in tensors:
                    raise bad(f"it refers to tensor {str(body)[:100]!r}, which its tensor file does not hold")
                return tensors[body]
            if tag == "$tuple" and isinstance(body, list):
                return tuple(decode(v, depth + 1) for v in body)
            if tag == "$float" and body in ("inf", "-inf", "nan"):
                return float(body)
            if tag == "$dict" and isinstance(body, list):
                if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], (str, int)) for p in body):
                    raise bad("a '$dict' entry is not a [key, value] pair")
                return {k: decode(v, depth + 1) for k, v in body}
        if any(isinstance(k, str) and k.startswith("$") for k in node):
            raise bad(f"unknown tag in {sorted(node)[:5]}")
        return {k: decode(v, depth + 1) for k, v in node.items()}

    return decode(skeleton, 0)
