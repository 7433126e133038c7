"""Sharded checkpoints (zae_engine.checkpoint.sharded) as files: assembled whole offline, verified, never unpickled.

The checkpoint is written once, by two real gloo ranks holding FSDP2 shards (tests/sharded_writer.py); each
test works on a copy, and the hostile ones re-sign checkpoint.json after tampering, as an attacker would, so
that only the reader's own checks stand between the file and memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from zae_engine.checkpoint.export import read_weights
from zae_engine.checkpoint.store import read_any
from zae_engine.errors import CheckpointError

pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 is needed to write the shards")
HERE = Path(__file__).resolve().parent
_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]


def zae(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([*ZAE, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(HERE / "sharded_writer.py"), str(folder)], env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return folder


@pytest.fixture
def folder(written, tmp_path) -> Path:
    shutil.copytree(written, tmp_path / "copy")
    return tmp_path / "copy" / "epoch-0001"


def expected(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder.parent / "expected.safetensors"))


def resign(folder: Path) -> None:
    """Recompute checkpoint.json's size and SHA-256 of every listed file, as someone forging a checkpoint would."""
    meta_path = folder / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    for name in meta["files"]:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    meta_path.write_text(json.dumps(meta))


def edit_index(folder: Path, change) -> None:
    path = folder / "shards.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    resign(folder)


def test_two_ranks_pieces_are_assembled_whole_in_one_process(folder):
    state, meta = read_any(folder)  # no process group here
    assert meta["save_format"] == "sharded"
    for key, value in expected(folder).items():
        assert type(state["model"][key]) is torch.Tensor
        torch.testing.assert_close(state["model"][key], value, rtol=0, atol=0)
    moments = state["optimizer"]["state"]
    assert moments[0]["exp_avg"].shape == (17, 10) and moments[3]["exp_avg"].shape == (3,)  # whole, not halves
    assert state["progress"] == {"epoch": 2, "step": 2}
    assert state["history"] == [{"epoch": 1, "train/loss": 0.5}]


def test_the_weights_alone_are_read_without_the_rest(folder):
    weights = read_weights(folder)
    assert set(weights) == set(expected(folder))
    for key, value in expected(folder).items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=0)


def test_the_cli_verifies_and_exports_it(folder, tmp_path):
    verified = zae("checkpoint", "verify", folder)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "sharded, 5 files" in verified.stdout
    out = tmp_path / "model.safetensors"
    exported = zae("checkpoint", "export", folder, "--out", out)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert set(load_file(str(out))) == set(expected(folder))


def test_a_flipped_byte_in_one_rank_file_is_named(folder):
    path = folder / "shard-00001.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="shard-00001.safetensors.*does not match the SHA-256"):
        read_any(folder)
    verified = zae("checkpoint", "verify", folder)
    assert verified.returncode == 1
    assert "shard-00001.safetensors does not match the SHA-256" in verified.stdout


def test_a_missing_rank_file_is_named(folder):
    (folder / "shard-00001.safetensors").unlink()
    with pytest.raises(CheckpointError, match="shard-00001.safetensors.*is missing"):
        read_any(folder)


def test_a_rank_file_that_is_a_link_is_refused_unread(folder, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(folder / "shard-00001.safetensors", outside)
    (folder / "shard-00001.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match="symbolic link"):
        read_any(folder)


@pytest.mark.parametrize("name", ["../outside.safetensors", ".metadata", "shard-1.bin"])
def test_checkpoint_json_may_list_no_other_files(folder, name):
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta["files"][name] = {"bytes": 1, "sha256": "0" * 64}
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="lists files a sharded checkpoint never holds"):
        read_any(folder)


def first(document: dict) -> dict:
    return next(iter(document["tensors"].values()))


HOSTILE_INDEXES = {
    "a size beyond the files": (lambda d: first(d).update(size=[10**12, 10]), "more bytes than its shard files hold"),
    "a piece outside its tensor": (
        lambda d: first(d)["pieces"][1].update(offsets=[16, 0]),
        "reaches outside its size",
    ),
    "a piece in an unlisted file": (
        lambda d: first(d)["pieces"][1].update(file="shard-00009.safetensors"),
        "not a listed shard file",
    ),
    "a piece in a path": (lambda d: first(d)["pieces"][1].update(file="../x.safetensors"), "not a listed shard file"),
    "a dtype that is no tensor's": (lambda d: first(d).update(dtype="object"), "has no dtype"),
    "a hole": (lambda d: first(d)["pieces"].pop(), "do not cover it exactly once"),
    "two pieces over one place": (
        lambda d: first(d)["pieces"][1].update(offsets=[0, 0]),
        "do not cover it exactly once",
    ),
    "nesting for a size": (lambda d: first(d).update(size=[[[1]]]), "is not a list of whole numbers"),
    "a foreign format": (lambda d: d.update(format="torch dcp"), "no 'format'"),
    "tensors as a list": (lambda d: d.update(tensors=[]), "'tensors' is not an object"),
}


@pytest.mark.parametrize("case", HOSTILE_INDEXES)
def test_a_forged_index_is_refused_before_anything_is_allocated(folder, case):
    change, words = HOSTILE_INDEXES[case]
    edit_index(folder, change)
    with pytest.raises(CheckpointError, match=words) as caught:
        read_any(folder)
    assert "shards.json" in str(caught.value)
    verified = zae("checkpoint", "verify", folder)
    assert verified.returncode == 1 and words in verified.stdout


def test_a_piece_stored_other_than_the_index_says_is_refused(folder):
    path = folder / "shard-00000.safetensors"
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.startswith("state.model.0.weight"))
    tensors[key] = tensors[key].to(torch.float64)
    save_file(tensors, str(path))
    resign(folder)
    with pytest.raises(CheckpointError, match="not as shards.json says"):
        read_any(folder)


def test_a_planted_dcp_metadata_pickle_is_never_opened(folder, tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / ".metadata").write_bytes(pickle.dumps(Payload()))  # where DCP keeps its (pickled) index
    state, _ = read_any(folder)
    assert set(state["model"]) == set(expected(folder))
    assert not marker.exists()
    verified = zae("checkpoint", "verify", folder)
    assert verified.returncode == 1
    assert "never read: .metadata" in verified.stdout
