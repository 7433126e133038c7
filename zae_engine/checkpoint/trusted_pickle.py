"""A pickle reader that admits only what an optimizer or scheduler state dict is made of.

Plain pickle runs whatever callable a file names. This reader refuses every global except the few a
pickled `optimizer.state_dict()` / `scheduler.state_dict()` needs: torch's tensor rebuild function (wrapped,
so its arguments are checked first), its storage loader (replaced by one that reads the storage with
`torch.load(weights_only=True)`), `collections.OrderedDict`, `torch.Size` and torch dtypes. Numbers, strings,
lists, tuples and dicts are pickle opcodes and need no global at all. Anything else is a `CheckpointError`
raised before it could be called, so no code from the file runs.

It is still meant for files you made yourself: it keeps code from running, not wrong numbers from loading.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from zae_engine.errors import CheckpointError

_DTYPES = {str(value).removeprefix("torch."): value for value in vars(torch).values() if isinstance(value, torch.dtype)}
_STORAGES = (torch.UntypedStorage, torch.TypedStorage)


class Refused(Exception):
    """Something in the pickle that a state dict never holds."""


def _load_storage(data: Any) -> Any:
    """Stands in for torch.storage._load_from_bytes, whose torch.load would unpickle without limits."""
    if not isinstance(data, bytes):
        raise Refused(f"a storage given as {type(data).__name__} instead of bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise Refused("a tensor storage whose bytes hold Python objects instead of tensor data") from None
    except Exception as exc:
        raise Refused(f"a tensor storage that cannot be read ({type(exc).__name__})") from None
    if not isinstance(storage, _STORAGES):
        raise Refused(f"a tensor storage that holds a {type(storage).__name__}")
    return storage


def _rebuild(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, *rest: Any) -> Any:
    """torch._utils._rebuild_tensor_v2/_v3 with every argument checked: a dense view inside its storage."""
    if not isinstance(storage, _STORAGES):
        raise Refused(f"a tensor built from a {type(storage).__name__} instead of a storage")
    if not (_whole(offset) and _ints(size) and _ints(stride) and len(size) == len(stride)):
        raise Refused("a tensor with a malformed shape, stride or offset")
    if not isinstance(requires_grad, bool) or (hooks is not None and (not isinstance(hooks, dict) or hooks)):
        raise Refused("a tensor carrying gradient hooks")
    dtype = storage.dtype if isinstance(storage, torch.TypedStorage) else None
    for extra in rest:  # v3 passes the dtype; both may pass metadata (conj/neg bits), which state dicts never set
        if isinstance(extra, torch.dtype) and dtype is None:
            dtype = extra
        elif not (isinstance(extra, dict) and not any(extra.values())):
            raise Refused("a tensor with unexpected rebuild arguments")
    if dtype is None:
        raise Refused("a tensor without a dtype")
    untyped = storage._untyped_storage if isinstance(storage, torch.TypedStorage) else storage
    numel = 1
    for n in size:
        numel *= n
    if numel * dtype.itemsize > untyped.nbytes():  # a state tensor never repeats its storage (stride 0)
        raise Refused("a tensor with more elements than its storage holds")
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if (last + 1) * dtype.itemsize > untyped.nbytes():
            raise Refused("a tensor that reaches past the end of its storage")
    tensor = torch.empty((0,), dtype=dtype)
    tensor.set_(untyped, offset, tuple(size), tuple(stride))
    return tensor.clone()  # its own compact memory, apart from whatever else the file put in that storage


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ints(values: Any) -> bool:
    return isinstance(values, (tuple, list, torch.Size)) and all(_whole(v) for v in values)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch", "Size"): torch.Size,
    **{("torch", name): dtype for name, dtype in _DTYPES.items()},
}


class StateUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only the globals in `_ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise Refused(f"{module}.{name}, a Python object that is not part of a state dict") from None

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("a persistent reference (the file was not written by plain pickle.dump)")


def _check_plain(root: Any) -> None:
    """Walk the result (without recursion): only plain values and compact tensors may remain."""
    stack = [root]
    while stack:
        value = stack.pop()
        if isinstance(value, (str, int, float, bool, type(None))):
            continue
        if isinstance(value, torch.Tensor):
            if type(value) is not torch.Tensor or not value.is_contiguous() or value._backward_hooks:
                raise Refused("a tensor that was altered after it was built")
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        else:
            raise Refused(
                f"a {type(value).__module__}.{type(value).__qualname__} value, which a state dict never holds"
            )


def read_state_pickle(path: Path, what: str) -> Any:
    """Unpickle `path` (a state dict written by pickle.dump) admitting only tensors and plain values."""
    try:
        with open(path, "rb") as handle:
            state = StateUnpickler(handle).load()
        _check_plain(state)
        return state
    except Refused as exc:
        reason = f"it holds {exc}"
    except RecursionError:
        reason = "it is nested too deeply to be a state dict"
    except OSError as exc:
        raise CheckpointError(f"cannot read {str(path)!r} ({exc.strerror or type(exc).__name__})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        reason = f"it is not a readable pickle ({type(exc).__name__}: {str(exc)[:160]})"
    except RuntimeError as exc:  # torch refusing a tensor that does not fit its storage, and the like
        reason = f"it holds a malformed tensor ({str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''})"
    except MemoryError:
        reason = "it needs more memory than is available"
    raise CheckpointError(
        f"{str(path)!r} was refused: {reason}. Only tensors, numbers, strings, lists, tuples and dicts are "
        f"admitted from {what}; nothing from the file was run"
    )
