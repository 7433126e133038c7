"""Sharded checkpoints: every rank writes the pieces of the state it holds (torch.distributed.checkpoint), no pickle.

A `sharded` checkpoint folder holds, besides `checkpoint.json` (size and SHA-256 of every file, as always):

- `shard-<rank>.safetensors`: the tensors, or the pieces of them, that rank held: one file per rank;
- `shards.json`: each tensor's dtype and whole size, and where its pieces are (offsets, sizes, file, key). It
  stands in for DCP's `.metadata` file, which is a pickle: DCP's `Metadata` is rebuilt from this JSON, which
  can only describe tensors, so no "bytes" entry (that DCP would `torch.load`) can ever be read;
- `state.json`: everything that is not a tensor (the skeleton of `zae_engine.checkpoint.tree`).

Saving is a collective (`save_sharded`): rank 0 makes the usual atomic save (a temp folder, the rename, the
manifest) and, once its temp folder exists, sends its name to the other ranks; every rank writes its file there.
DCP reports to rank 0 only when every rank's file is written and fsynced; only then does rank 0 write
`checkpoint.json` and rename the folder into place. A rank killed mid-save leaves an unlisted temp folder.

Loading reads the pieces each rank needs into tensors laid out as it wants them (`layout`): sharded for another
number of ranks, or whole in one process, where the checkpoint is assembled without torch.distributed.
Non-tensor values and plain (replicated) tensors are rank 0's.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, SavePlan, SavePlanner, WriteItemType
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from zae_engine.checkpoint.failures import first_line
from zae_engine.checkpoint.integrity import META_NAME, check_state, fingerprint, safetensors_keys, verify
from zae_engine.checkpoint.tree import join_tensors, split_tensors
from zae_engine.checkpoint.untrusted import MAX_JSON_BYTES, check_size, dump_json, open_regular, read_json
from zae_engine.errors import CheckpointError

SAVE_FORMAT = "sharded"
SHARDS_NAME = "shards.json"
STATE_NAME = "state.json"
SHARDS_FORMAT = "zae-engine shards"
SHARD_FILE = re.compile(r"shard-\d{5,}\.safetensors")
_MAX_DIMS = 64

DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
}

#: a function giving, for a tensor of the state (key, whole size, dtype), the empty tensor to load it into —
#: a DTensor for a rank that holds it sharded — or None for a whole tensor on the CPU
Layout = Callable[[str, torch.Size, torch.dtype], "torch.Tensor | None"]


def shard_file(rank: int) -> str:
    return f"shard-{rank:05d}.safetensors"


# ---------------------------------------------------------------------------------------------- saving
class _Announcer(threading.local):
    active = False  # rank 0 is inside save_sharded: the other ranks wait for the temp folder's name
    stage = "idle"  # "idle" -> "named" (followers know the folder) -> "written" (every rank's shards are on disk)


_announcer = _Announcer()


def save_sharded(state: dict[str, Any], write: Callable[[], Path]) -> Path | None:
    """Every rank calls this with its state: rank 0 runs `write()` — a `CheckpointStore.save` or `write_folder`
    of that state with save_format 'sharded' — and returns the folder; the other ranks write their shards into
    it and return None. If rank 0 fails before its folder exists, the others write nothing.
    """
    if not dist.is_initialized():
        raise CheckpointError("a sharded checkpoint is written by every rank of a process group; none is running")
    if dist.get_rank() != 0:
        _, tensors = split_tensors(state, keep=True)
        name = _receive_text()
        if name:
            _tensors_to_disk(Path(name), {key: t for key, t in tensors.items() if _is_sharded(t)})
            _receive_flag()  # wait until rank 0 has listed it (or failed to): every rank leaves together
        return None
    _announcer.active, _announcer.stage = True, "idle"
    try:
        folder = write()
    except BaseException:
        _tell_followers_after_failure()
        raise
    finally:
        _announcer.active = False
    _send_flag(True)
    return folder


def _tell_followers_after_failure() -> None:
    stage = _announcer.stage
    try:
        if stage == "idle":
            _send_text("")  # the others wait for a folder name: there will be none
        elif stage == "written":
            _send_flag(False)  # the others wait for the outcome: the checkpoint was not listed
        # "named": the failure came out of DCP's collective, which raised it on every rank already
    except Exception:
        pass  # the process group is gone too; rank 0's own error is the one to report


def write_sharded_checkpoint(folder: Path, state: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's part, in its temp folder: name it to the others, write all shards, then `state.json`.

    Returns the fingerprints of every file (checkpoint.json is written by the caller, last).
    """
    if not _announcer.active:
        raise CheckpointError(
            "a sharded checkpoint is written by every rank together: save through the state_manager add-on "
            "(or zae_engine.checkpoint.sharded.save_sharded on every rank)"
        )
    skeleton, tensors = split_tensors(state, keep=True)
    text = dump_json(skeleton, "the state of the checkpoint")  # everything that can fail alone fails before
    _send_text(os.path.abspath(folder))  # the others may run elsewhere: an absolute path on the shared disk
    _announcer.stage = "named"
    files = _tensors_to_disk(folder, tensors)
    _announcer.stage = "written"
    with open(folder / STATE_NAME, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    files[STATE_NAME] = fingerprint(folder / STATE_NAME)
    return files


def _tensors_to_disk(folder: Path, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """DCP's save: every rank writes its file; rank 0 gets every file's fingerprint back (others: {})."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import DefaultSavePlanner

    writer = _ShardWriter(folder)
    planner = DefaultSavePlanner(flatten_state_dict=False)
    with _dcp_errors(f"the sharded checkpoint {str(folder)!r} was not written", "earlier checkpoints are untouched"):
        dcp.save(tensors, storage_writer=writer, planner=planner)
    return writer.files


@dataclass(frozen=True)
class _Piece:
    """Where one piece of a tensor is: a file of the folder, and its key in that safetensors file."""

    file: str
    key: str
    file_bytes: int = 0
    file_sha256: str = ""


class _ShardWriter(StorageWriter):
    """DCP storage: one safetensors file per rank; the metadata as JSON (never a pickle)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.files: dict[str, Any] = {}

    def reset(self, checkpoint_id: Any = None) -> None:
        self.files = {}

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        pass

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        return [dataclasses.replace(plan, storage_data=shard_file(rank)) for rank, plan in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        from safetensors.torch import save_file

        name = plan.storage_data
        tensors: dict[str, torch.Tensor] = {}
        keys: list[tuple[Any, str, int]] = []
        for item in plan.items:
            if item.type == WriteItemType.BYTE_IO:
                raise CheckpointError(f"cannot checkpoint {item.index.fqn}: a sharded checkpoint holds tensors only")
            data = planner.resolve_data(item).detach().to("cpu").contiguous()
            if data.untyped_storage().nbytes() != data.numel() * data.element_size():
                data = data.clone()  # a view into a larger buffer (FSDP's padded shards): safetensors wants its own
            key = _piece_key(item.index.fqn, item.index.offset)
            tensors[key] = data
            keys.append((item.index, key, data.numel() * data.element_size()))
        results: list[WriteResult] = []
        if tensors:
            path = self.folder / name
            save_file(tensors, str(path))
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            record = fingerprint(path)
            for index, key, size in keys:
                piece = _Piece(name, key, record["bytes"], record["sha256"])
                results.append(WriteResult(index=index, size_in_bytes=size, storage_data=piece))
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        pieces = {result.index: result.storage_data for per_rank in results for result in per_rank}
        document = _document(metadata, pieces, len(results))
        path = self.folder / SHARDS_NAME
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(dump_json(document, str(path)))
            handle.flush()
            os.fsync(handle.fileno())
        files = {p.file: {"bytes": p.file_bytes, "sha256": p.file_sha256} for p in pieces.values()}
        files[SHARDS_NAME] = fingerprint(path)
        self.files = files

    def storage_meta(self) -> None:
        return None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return True


def _document(metadata: Metadata, pieces: dict[MetadataIndex, _Piece], world_size: int) -> dict[str, Any]:
    tensors = {}
    for key, entry in metadata.state_dict_metadata.items():
        if not isinstance(entry, TensorStorageMetadata):
            raise CheckpointError(f"cannot checkpoint {key}: a sharded checkpoint holds tensors only")
        dtype = str(entry.properties.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise CheckpointError(f"cannot checkpoint {key}: tensors of {entry.properties.dtype} are not supported")
        chunks = []
        for chunk in entry.chunks:
            piece = pieces[MetadataIndex(key, chunk.offsets)]
            chunks.append(
                {"offsets": list(chunk.offsets), "sizes": list(chunk.sizes), "file": piece.file, "key": piece.key}
            )
        tensors[key] = {"dtype": dtype, "size": list(entry.size), "pieces": chunks}
    return {"format": SHARDS_FORMAT, "version": 1, "world_size": world_size, "tensors": tensors}


def _piece_key(fqn: str, offsets: Any) -> str:
    return f"{fqn}@{','.join(str(int(o)) for o in offsets or ())}"


# ---------------------------------------------------------------------------------------------- rank 0 <-> others
def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _send_text(text: str) -> None:
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)
    length = torch.tensor([data.numel()], dtype=torch.int64, device=_collective_device())
    dist.broadcast(length, src=0)
    if data.numel():
        dist.broadcast(data.to(_collective_device()), src=0)


def _receive_text() -> str:
    length = torch.zeros(1, dtype=torch.int64, device=_collective_device())
    dist.broadcast(length, src=0)
    if not int(length.item()):
        return ""
    data = torch.empty(int(length.item()), dtype=torch.uint8, device=_collective_device())
    dist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).decode("utf-8")


def _send_flag(flag: bool) -> None:
    dist.broadcast(torch.tensor([int(flag)], dtype=torch.int64, device=_collective_device()), src=0)


def _receive_flag() -> bool:
    flag = torch.zeros(1, dtype=torch.int64, device=_collective_device())
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _is_sharded(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


# ---------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class _Stored:
    """One tensor of a sharded checkpoint, as shards.json describes it (checked)."""

    dtype: torch.dtype
    size: torch.Size
    pieces: tuple[tuple[torch.Size, torch.Size, _Piece], ...]


def expected_files(meta: dict[str, Any], folder: Path) -> list[str]:
    """The files a sharded checkpoint folder must hold, as its checkpoint.json lists them (names checked)."""
    names = sorted(str(name) for name in meta["files"])
    for required in (STATE_NAME, SHARDS_NAME):
        if required not in names:
            raise CheckpointError(f"{str(folder / META_NAME)!r} does not list {required}; the checkpoint is damaged")
    strays = [n for n in names if n not in (STATE_NAME, SHARDS_NAME) and not SHARD_FILE.fullmatch(n)]
    if strays:
        raise CheckpointError(
            f"{str(folder / META_NAME)!r} lists files a sharded checkpoint never holds: {', '.join(strays[:5])}"
        )
    return names


def unlisted_files(folder: Path, meta: dict[str, Any]) -> list[str]:
    """Files in a sharded folder that its checkpoint.json does not list (e.g. a DCP `.metadata` pickle): never read."""
    listed = {META_NAME, *map(str, meta["files"])}
    extra = sorted(entry.name for entry in os.scandir(folder) if entry.name not in listed)
    if not extra:
        return []
    return [f"holds files its {META_NAME} does not list, which are never read: {', '.join(extra[:5])}"]


def structure_problems(folder: Path, meta: dict[str, Any]) -> list[str]:
    """What is wrong inside a sharded folder whose files match their hashes: the index, the keys, the state."""

    files = meta["files"]
    try:
        stored = _read_shards_json(folder, files)
        skeleton = _read_verified_json(folder / STATE_NAME, files, "checkpoint state")
    except CheckpointError as exc:
        return [str(exc)]
    problems, keys = [], {}
    for name in sorted(n for n in files if SHARD_FILE.fullmatch(str(n))):
        found = safetensors_keys(folder / name)
        if isinstance(found, str):
            problems.append(f"{name} {found}")
        else:
            keys[name] = found
    for entry in stored.values():
        lost = next((p for _, _, p in entry.pieces if p.file in keys and p.key not in keys[p.file]), None)
        if lost is not None:
            problems.append(f"{lost.file} lacks {lost.key!r}, which {SHARDS_NAME} places there")
    missing = sorted(_referenced(skeleton) - set(stored))
    if missing:
        problems.append(f"{STATE_NAME} refers to tensor {missing[0]!r}, which {SHARDS_NAME} does not describe")
    progress = skeleton.get("progress") if isinstance(skeleton, dict) else None
    if not isinstance(progress, dict) or not all(type(progress.get(k)) is int for k in ("epoch", "step")):
        problems.append(f"{STATE_NAME} holds no training progress (whole numbers 'epoch' and 'step')")
    return problems


def read_sharded(
    folder: Path, meta: dict[str, Any], layout: Layout | None = None, only: str | None = None
) -> dict[str, Any]:
    """The state of a sharded checkpoint folder; every file is verified against checkpoint.json before parsing.

    Without `layout` it is assembled whole in this process (no collective, even in a distributed run). With one,
    it is a collective: every rank reads the pieces its layout needs. `only`: just that part of the state
    (e.g. "model"), read alone.
    """
    expected_files(meta, folder)
    files = meta["files"]
    stored = _read_shards_json(folder, files)
    skeleton = _read_verified_json(folder / STATE_NAME, files, "checkpoint state")
    source = repr(str(folder / STATE_NAME))
    if only is not None:
        if not isinstance(skeleton, dict) or only not in skeleton:
            raise CheckpointError(f"{source} holds no {only!r}; the checkpoint is damaged")
        skeleton = skeleton[only]
    wanted = _referenced(skeleton)
    missing = sorted(wanted - set(stored))
    if missing:
        raise CheckpointError(f"{source} refers to tensor {missing[0]!r}, which {SHARDS_NAME} does not describe")
    targets = {}
    for key in sorted(wanted):
        entry = stored[key]
        target = layout(key, entry.size, entry.dtype) if layout is not None else None
        targets[key] = target if target is not None else torch.zeros(entry.size, dtype=entry.dtype)
    _tensors_from_disk(folder, targets, stored, files, distributed=layout is not None)
    tree = join_tensors(skeleton, targets, source)
    if only is not None:
        return tree
    if not isinstance(tree, dict):
        raise CheckpointError(f"{source} does not hold a checkpoint state (a JSON object)")
    return check_state(tree, repr(str(folder)))


def _tensors_from_disk(
    folder: Path, targets: dict[str, torch.Tensor], stored: dict[str, _Stored], files: dict, distributed: bool
) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import DefaultLoadPlanner

    reader = _ShardReader(folder, stored, files)
    planner = DefaultLoadPlanner(flatten_state_dict=False)
    with (
        _dcp_errors(f"could not read the sharded checkpoint {str(folder)!r}", "load another checkpoint"),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", "torch.distributed is disabled")  # one process: what we asked for
        dcp.load(targets, storage_reader=reader, planner=planner, no_dist=not distributed)


@contextmanager
def _dcp_errors(what: str, advice: str) -> Iterator[None]:
    """DCP wraps what each rank raised in a CheckpointException (a BaseException): give our own error back, or
    one that says what failed, raised `from` the rank's error (a broken connection stays recognisable as one)."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as exc:
        first = _first_failure(exc)
        if isinstance(first, CheckpointError):
            raise first from None
        raise CheckpointError(
            f"{what}: not every rank finished its part ({type(first).__name__}: {first_line(first)}); {advice}"
        ) from first


def _first_failure(exc: BaseException) -> BaseException:
    failures = getattr(exc, "failures", None)  # CheckpointException: {rank: (exception, stack summary)}
    if isinstance(failures, dict):
        for _, failure in sorted(failures.items()):
            inner = failure[0] if isinstance(failure, tuple) and failure else failure
            if isinstance(inner, BaseException):
                return _first_failure(inner)
    return exc


def _referenced(skeleton: Any) -> set[str]:
    found: set[str] = set()

    def visit(node: Any, depth: int) -> None:
        if depth > 100:
            raise CheckpointError(f"{STATE_NAME} nests too deeply; the checkpoint is damaged or hostile")
        if isinstance(node, list):
            for value in node:
                visit(value, depth + 1)
        elif isinstance(node, dict):
            if len(node) == 1 and isinstance(node.get("$tensor"), str):
                found.add(node["$tensor"])
                return
            for value in node.values():
                visit(value, depth + 1)

    visit(skeleton, 0)
    return found


def _read_verified_json(path: Path, files: dict, what: str) -> Any:
    with open_regular(path) as handle:
        check_size(handle, path, MAX_JSON_BYTES, what)  # capped before hashing: its recorded size proves nothing
        verify(handle, path, files.get(path.name))
    return read_json(path, what)


def _read_shards_json(folder: Path, files: dict) -> dict[str, _Stored]:
    """shards.json, checked to describe nothing but tensors that its listed files can hold."""
    path = folder / SHARDS_NAME
    document = _read_verified_json(path, files, "shard index")
    source = repr(str(path))

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{source} is damaged or was not written by zae-engine: {why}")

    if not isinstance(document, dict) or document.get("format") != SHARDS_FORMAT or document.get("version") != 1:
        raise bad(f"no 'format': {SHARDS_FORMAT!r}, version 1")
    entries = document.get("tensors")
    if not isinstance(entries, dict):
        raise bad("'tensors' is not an object")
    shard_bytes = sum(
        record.get("bytes", 0) if isinstance(record, dict) and isinstance(record.get("bytes"), int) else 0
        for name, record in files.items()
        if SHARD_FILE.fullmatch(str(name))
    )
    stored: dict[str, _Stored] = {}
    total = 0
    for key, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
            raise bad(f"tensor {key!r} has no dtype of {sorted(DTYPES)}")
        size = _whole_numbers(entry.get("size"), f"the size of {key!r}", bad)
        dtype = DTYPES[entry["dtype"]]
        numel = math.prod(size)
        total += numel * torch.empty((), dtype=dtype).element_size()
        if total > shard_bytes:
            raise bad(f"its tensors would need more bytes than its shard files hold (at {key!r})")
        pieces = entry.get("pieces")
        if not isinstance(pieces, list) or not pieces:
            raise bad(f"tensor {key!r} lists no pieces")
        checked, covered = [], 0
        for piece in pieces:
            if not isinstance(piece, dict):
                raise bad(f"a piece of {key!r} is not an object")
            offsets = _whole_numbers(piece.get("offsets"), f"offsets of a piece of {key!r}", bad)
            sizes = _whole_numbers(piece.get("sizes"), f"sizes of a piece of {key!r}", bad)
            if len(offsets) != len(size) or len(sizes) != len(size):
                raise bad(f"a piece of {key!r} has {len(offsets)} offsets for {len(size)} dimensions")
            if any(o + s > d for o, s, d in zip(offsets, sizes, size)):
                raise bad(f"a piece of {key!r} reaches outside its size {list(size)}")
            name, piece_key = piece.get("file"), piece.get("key")
            if not isinstance(name, str) or not SHARD_FILE.fullmatch(name) or name not in files:
                raise bad(f"a piece of {key!r} is in {name!r}, which is not a listed shard file")
            if not isinstance(piece_key, str):
                raise bad(f"a piece of {key!r} has no key")
            covered += math.prod(sizes)
            checked.append((torch.Size(offsets), torch.Size(sizes), _Piece(name, piece_key)))
        if covered != numel or _overlap(checked):
            raise bad(f"the pieces of {key!r} do not cover it exactly once")
        stored[str(key)] = _Stored(dtype, torch.Size(size), tuple(checked))
    return stored


def _whole_numbers(value: Any, what: str, bad: Callable[[str], CheckpointError]) -> list[int]:
    if (
        not isinstance(value, list)
        or len(value) > _MAX_DIMS
        or not all(type(v) is int and 0 <= v < 2**62 for v in value)
    ):
        raise bad(f"{what} is not a list of whole numbers")
    return value


def _overlap(pieces: list[tuple[torch.Size, torch.Size, _Piece]]) -> bool:
    """Do two pieces share an element? (Pieces DCP writes are disjoint; a long list is checked by volume only.)"""
    if len(pieces) > 256:
        return False
    for i, (o1, s1, _) in enumerate(pieces):
        for o2, s2, _ in pieces[i + 1 :]:
            if all(a < c + d and c < a + b for a, b, c, d in zip(o1, s1, o2, s2)) and all(s1) and all(s2):
                return True
    return False


class _ShardReader(StorageReader):
    """DCP storage that reads the pieces from the shard files; the metadata comes from shards.json, not a pickle."""

    def __init__(self, folder: Path, stored: dict[str, _Stored], files: dict) -> None:
        super().__init__()
        self.folder, self.stored, self.files = folder, stored, files
        self.storage: dict[MetadataIndex, _Piece] = {}
        self.verified: set[str] = set()

    def reset(self, checkpoint_id: Any = None) -> None:
        pass

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        tensors, storage = {}, {}
        for key, entry in self.stored.items():
            chunks = []
            for offsets, sizes, piece in entry.pieces:
                chunks.append(ChunkStorageMetadata(offsets=offsets, sizes=sizes))
                storage[MetadataIndex(key, offsets)] = piece
            tensors[key] = TensorStorageMetadata(TensorProperties(dtype=entry.dtype), entry.size, chunks)
        return Metadata(state_dict_metadata=tensors, storage_data=storage)

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.storage = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        from safetensors import safe_open

        by_file: dict[str, list] = {}
        for item in plan.items:
            by_file.setdefault(self.storage[item.storage_index].file, []).append(item)
        for name, items in sorted(by_file.items()):
            path = self.folder / name
            with self._verified(path), safe_open(str(path), framework="pt", device="cpu") as shard:
                for item in items:
                    piece = self.storage[item.storage_index]
                    entry = self.stored[item.storage_index.fqn]
                    sizes = next(s for o, s, p in entry.pieces if p == piece)
                    if piece.key not in shard.keys():
                        raise CheckpointError(f"{str(path)!r} lacks {piece.key!r}, which {SHARDS_NAME} places there")
                    part = shard.get_slice(piece.key)
                    if tuple(part.get_shape()) != tuple(sizes) or part.get_dtype() != _safetensors_dtype(entry.dtype):
                        raise CheckpointError(
                            f"{str(path)!r} holds {piece.key!r} as {part.get_dtype()} {part.get_shape()}, not as "
                            f"{SHARDS_NAME} says ({entry.dtype}, {list(sizes)}); the checkpoint is damaged"
                        )
                    if list(item.storage_offsets) == [0] * len(sizes) and tuple(item.lengths) == tuple(sizes):
                        tensor = shard.get_tensor(piece.key)
                    else:
                        tensor = part[tuple(slice(o, o + n) for o, n in zip(item.storage_offsets, item.lengths))]
                    target = planner.resolve_tensor(item).detach()
                    target.copy_(tensor.reshape(target.shape))
                    planner.commit_tensor(item, target)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    @contextmanager
    def _verified(self, path: Path) -> Iterator[None]:
        """The file's size and SHA-256 are checked against checkpoint.json before safetensors parses it."""
        if path.name not in self.verified:
            with open_regular(path) as handle:
                verify(handle, path, self.files.get(path.name))
            self.verified.add(path.name)
        yield

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return True


def _safetensors_dtype(dtype: torch.dtype) -> str:
    return {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
        torch.complex64: "C64",
        torch.complex128: "C128",
    }[dtype]
