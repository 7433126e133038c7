"""Hostile checkpoints: links out of the folder, files too big to hash or parse, nesting and pickles that explode.

Each test plants what an attacker (or a broken disk) could put into a checkpoint folder and checks that
loading stops with a CheckpointError naming the file, reads little, runs nothing and reveals nothing about
what a link points to.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.errors import CheckpointError
from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon

FIXTURES = Path(__file__).parent / "fixtures"


class PlainTrainer(SeparableTrainer, Trainer):
    pass


Checkpointed = PlainTrainer.add_on(StateManagerAddon)


def trained(save_path: Path, save_format: str = "safetensors", epochs: int = 1, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    trainer = Checkpointed(
        model,
        "cpu",
        "train",
        torch.optim.Adam(model.parameters(), lr=1e-2),
        log_bar=False,
        save_path=str(save_path),
        save_format=save_format,
        **kwargs,
    )
    trainer.run(epochs, DataLoader(make_dataset(64), batch_size=32))
    return trainer


def fresh(save_path: Path, cls=Checkpointed):
    model = nn.Linear(10, 2)
    return cls(
        model, "cpu", "train", torch.optim.Adam(model.parameters(), lr=1e-2), log_bar=False, save_path=str(save_path)
    )


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(path: Path, size: int | None = None, digest: str | None = None) -> None:
    """Rewrite checkpoint.json so it vouches for `path` as it now is (an attacker controls that file too)."""
    meta_path = path.parent / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["files"][path.name] = {"bytes": size if size is not None else path.stat().st_size, "sha256": digest}
    if digest is None:
        meta["files"][path.name]["sha256"] = sha256(path)
    meta_path.write_text(json.dumps(meta))


def bytes_read() -> int:
    """Bytes this process has read through read(2) so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


needs_proc_io = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts reads through /proc/self/io")


# ------------------------------------------------------------------------------------------ symbolic links
SECRET = "TOP-SECRET-" * 1000 + "END"  # 11003 bytes: neither its size nor its content may show up anywhere


@pytest.mark.parametrize(
    ("save_format", "victim"),
    [
        ("safetensors", "model.safetensors"),
        ("safetensors", "state.json"),
        ("safetensors", "checkpoint.json"),
        ("ckpt", "state.ckpt"),
    ],
)
def test_a_file_linked_out_of_the_checkpoint_is_refused_without_a_word_about_its_target(tmp_path, save_format, victim):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    trained(tmp_path / "run", save_format)
    target = tmp_path / "run" / "epoch-0001" / victim
    target.unlink()
    target.symlink_to(secret)
    for load in (lambda: fresh(tmp_path / "run").load_state(), lambda: fresh(tmp_path).apply_weights(target)):
        with pytest.raises(CheckpointError, match="is a symbolic link") as err:
            load()
        message = str(err.value)
        assert str(target) in message
        assert "TOP-SECRET" not in message and str(len(SECRET)) not in message and "secret.txt" not in message


def test_a_listed_checkpoint_folder_linked_out_of_the_save_path_is_refused(tmp_path):
    trained(tmp_path / "elsewhere")  # a whole, valid checkpoint outside the save_path
    trained(tmp_path / "run")
    listed = tmp_path / "run" / "epoch-0001"
    shutil.rmtree(listed)
    listed.symlink_to(tmp_path / "elsewhere" / "epoch-0001", target_is_directory=True)
    with pytest.raises(CheckpointError, match="is a symbolic link") as err:
        fresh(tmp_path / "run").load_state()
    assert "elsewhere" not in str(err.value)
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        trained(tmp_path / "run", resume=True)  # a resuming run stops too, before training


def test_a_manifest_linked_out_of_the_save_path_is_refused(tmp_path):
    trained(tmp_path / "elsewhere")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").symlink_to(tmp_path / "elsewhere" / "manifest.json")
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        fresh(tmp_path / "run").load_state()


@pytest.mark.parametrize("save_format", ["safetensors", "ckpt"])
def test_the_save_path_itself_may_be_a_symlink(tmp_path, save_format):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    first = trained(tmp_path / "link", save_format, epochs=2)
    again = fresh(tmp_path / "link")
    assert again.load_state() == tmp_path / "link" / "epoch-0002"
    assert again.progress_checker.get_epoch() == 3
    again.apply_weights()  # the best weights, refilled from the best checkpoint
    if save_format == "safetensors":
        again.apply_weights(tmp_path / "link" / "epoch-0002" / "model.safetensors")
        assert torch.equal(again.model.weight, first.model.weight)


@pytest.mark.parametrize("victim", ["manifest.json", "epoch-0001/checkpoint.json", "epoch-0001/state.json"])
def test_a_fifo_planted_as_a_file_is_refused_without_waiting_for_a_writer(tmp_path, victim):
    trained(tmp_path / "run")
    target = tmp_path / "run" / victim
    target.unlink()
    os.mkfifo(target)  # opening it for reading would block until someone writes
    with pytest.raises(CheckpointError, match="is not a regular file") as err:
        fresh(tmp_path / "run").load_state()
    assert str(target) in str(err.value)


# ------------------------------------------------------------------------------------------ bounded work
@needs_proc_io
def test_a_64_gib_sparse_file_is_refused_by_its_size_before_a_byte_is_hashed(tmp_path):
    trained(tmp_path / "run")
    target = tmp_path / "run" / "epoch-0001" / "model.safetensors"
    with open(target, "r+b") as handle:
        handle.truncate(64 << 30)  # sparse: no disk space, but hashing it would read 64 GiB of zeros
    for load in (lambda: fresh(tmp_path / "run").load_state(), lambda: fresh(tmp_path).apply_weights(target)):
        before = bytes_read()
        with pytest.raises(CheckpointError, match=f"has {64 << 30} bytes but .* were saved"):
            load()
        assert bytes_read() - before < 16 << 20, "the file was read before its size was compared"


@needs_proc_io
@pytest.mark.parametrize("victim", ["manifest.json", "epoch-0001/checkpoint.json", "epoch-0001/state.json"])
def test_a_json_side_file_over_64_mib_is_refused_unread(tmp_path, victim):
    trained(tmp_path / "run")
    target = tmp_path / "run" / victim
    text = target.read_text()
    target.write_text(text + " " * ((64 << 20) + 1 - len(text)))  # still valid JSON, one byte over the cap
    if victim.endswith("state.json"):
        record(target)
    before = bytes_read()
    with pytest.raises(CheckpointError, match="64 MiB") as err:
        fresh(tmp_path / "run").load_state()
    assert str(target) in str(err.value)
    assert bytes_read() - before < 16 << 20, "the file was read (or hashed) although its size is over the cap"


def nest(path: Path, depth: int) -> None:
    """Give the JSON object in `path` a key 'deep' holding lists nested `depth` deep."""
    text = json.dumps(dict(json.loads(path.read_text()), deep="@@"))
    path.write_text(text.replace('"@@"', "[" * depth + "]" * depth))


@needs_proc_io
def test_the_manifest_is_parsed_once_per_load_and_once_per_run(tmp_path):
    """A manifest padded to 8 MiB: reading it twice would show up as 16 MiB read."""
    save_path = tmp_path / "run"
    trained(save_path, keep_last=3)
    pad = 8 << 20
    padding = " " * pad

    def pad_manifest():
        text = (save_path / "manifest.json").read_text().rstrip()
        (save_path / "manifest.json").write_text(text + padding)

    pad_manifest()
    trainer = fresh(save_path)
    before = bytes_read()
    trainer.load_state()
    assert bytes_read() - before < 2 * pad, "load_state() read the manifest more than once"
    pad_manifest()
    before = bytes_read()
    trainer.run(3, DataLoader(make_dataset(64), batch_size=32))  # three saves: the writer keeps it in memory
    assert bytes_read() - before < 2 * pad, "a run read the manifest more than once"


@pytest.mark.parametrize("victim", ["manifest.json", "epoch-0001/checkpoint.json", "epoch-0001/state.json"])
def test_json_nested_100k_deep_is_a_checkpoint_error(tmp_path, victim):
    trained(tmp_path / "run")
    target = tmp_path / "run" / victim
    nest(target, 100_000)
    if victim.endswith("state.json"):
        record(target)
    with pytest.raises(CheckpointError, match="nests too deeply") as err:
        fresh(tmp_path / "run").load_state()
    assert str(target) in str(err.value)


@pytest.mark.parametrize("save_format", ["safetensors", "ckpt"])
def test_a_state_nested_deeper_than_100_containers_is_refused(tmp_path, save_format):
    trained(tmp_path / "run", save_format)
    folder = tmp_path / "run" / "epoch-0001"
    if save_format == "safetensors":
        nest(folder / "state.json", 500)  # Python's own JSON parser copes with 500; the state may not be that deep
        record(folder / "state.json")
    else:
        saved = torch.load(folder / "state.ckpt", weights_only=True)
        saved["skeleton_json"] = json.dumps(dict(json.loads(saved["skeleton_json"]), deep="@@")).replace(
            '"@@"', "[" * 500 + "]" * 500
        )
        torch.save(saved, folder / "state.ckpt")
        record(folder / "state.ckpt")
    with pytest.raises(CheckpointError, match="nest more than 100 deep"):
        fresh(tmp_path / "run").load_state()


def shared_reference_bomb(levels: int = 60) -> list:
    """A list of two references to a list of two references to ... : 120 pickle ops, 2**levels values as a tree."""
    node: list = [0.0]
    for _ in range(levels):
        node = [node, node]
    return node


def legacy_ckpt(tmp_path: Path) -> tuple[Path, dict]:
    """A save_path holding the version 0.1 `ckpt` checkpoint in tests/fixtures, and its state as torch reads it."""
    save_path = tmp_path / "run"
    shutil.copytree(FIXTURES / "checkpoint_v0_1", save_path)
    path = save_path / "epoch-0001" / "state.ckpt"
    return path, torch.load(path, weights_only=True)


def test_a_version_0_1_ckpt_checkpoint_still_loads_and_resumes(tmp_path):
    path, legacy = legacy_ckpt(tmp_path)
    assert "model" in legacy and "tensors" not in legacy  # the nested layout of version 0.1
    trainer = fresh(path.parent.parent)
    assert trainer.load_state() == path.parent
    assert torch.equal(trainer.model.weight, legacy["model"]["weight"])
    assert trainer.progress_checker.get_epoch() == legacy["progress"]["epoch"]
    trainer.apply_weights()  # the best weights came back too
    trainer.run(1, DataLoader(make_dataset(64), batch_size=32))
    saved = torch.load(path.parent.parent / "epoch-0002" / "state.ckpt", weights_only=True)
    assert set(saved) == {"tensors", "skeleton_json"}  # new saves use the flat layout


def test_a_pickle_of_shared_references_is_refused_not_expanded(tmp_path):
    """In a version 0.1 layout file: before, optimizer.load_state_dict walked 2**60 values (a hang)."""
    path, state = legacy_ckpt(tmp_path)
    state["optimizer"]["state"][0]["bomb"] = shared_reference_bomb()
    torch.save(state, path)
    assert path.stat().st_size < 64 << 10
    record(path)
    with pytest.raises(CheckpointError, match="expands to more than"):
        fresh(path.parent.parent).load_state()


def test_a_flat_ckpt_file_with_anything_else_in_its_pickle_is_refused(tmp_path):
    trained(tmp_path / "run", "ckpt")
    path = tmp_path / "run" / "epoch-0001" / "state.ckpt"
    saved = torch.load(path, weights_only=True)
    saved["tensors"]["state.extra"] = shared_reference_bomb()
    torch.save(saved, path)
    record(path)
    with pytest.raises(CheckpointError, match="'tensors' must map names to tensors"):
        fresh(tmp_path / "run").load_state()


class LoopingAddon(AddOnBase):
    """An add-on whose state_dict returns a list that contains itself."""

    name = "looping"

    def state_dict(self):
        loop: list = [1, 2]
        loop.append(loop)
        return {"queue": loop}


@pytest.mark.parametrize("save_format", ["safetensors", "ckpt"])
def test_a_self_referencing_list_is_an_error_when_saving(tmp_path, save_format):
    trainer = fresh(tmp_path / "run", PlainTrainer.add_on(StateManagerAddon, LoopingAddon))
    trainer.addon("state_manager").config.save_format = save_format
    with pytest.raises(CheckpointError, match=r"state\.addons\.looping\.queue\[2\]: it contains itself"):
        trainer.save_state()


def test_a_self_referencing_list_is_an_error_when_loading(tmp_path):
    path, state = legacy_ckpt(tmp_path)
    loop: list = [1]
    loop.append(loop)
    state["addons"]["state_manager"]["loop"] = loop
    torch.save(state, path)
    record(path)
    trainer = fresh(path.parent.parent)
    with pytest.raises(CheckpointError, match="contains itself"):
        trainer.load_state()
    trainer.save_state()  # nothing half-loaded stops the next save


# ------------------------------------------------------------------------------------------ weights files
@pytest.mark.parametrize("where", ["data", "header"])
def test_apply_weights_refuses_a_file_of_a_checkpoint_with_a_flipped_byte(tmp_path, where):
    trainer = trained(tmp_path / "run")
    target = tmp_path / "run" / "epoch-0001" / "model.safetensors"
    trainer.apply_weights(target)  # untouched: loads
    data = bytearray(target.read_bytes())
    data[-1 if where == "data" else 12] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the SHA-256") as err:
        trainer.apply_weights(target)
    assert str(target) in str(err.value)


def test_apply_weights_on_a_pickled_object_says_so_in_our_words(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2, 10), "hook": Path("x")}, path)
    with pytest.raises(CheckpointError) as err:
        fresh(tmp_path).apply_weights(path)
    message = str(err.value)
    assert "pickled Python object (pathlib" in message and "Nothing from it was executed" in message
    assert "PyTorch 2.6" not in message and "weights_only" not in message and "add_safe_globals" not in message


# ------------------------------------------------------------------------------------------ NaN in the manifest
def test_a_nan_best_value_in_the_manifest_does_not_stop_later_saves(tmp_path):
    trainer = trained(tmp_path / "run", keep_last=3)
    manifest_path = tmp_path / "run" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["checkpoints"][0]["value"] = math.nan  # as another writer (or a hand edit) might leave it
    manifest_path.write_text(json.dumps(data))  # Python writes NaN: not JSON, but Python's reader takes it
    assert "NaN" in manifest_path.read_text()
    trainer.run(1, DataLoader(make_dataset(64), batch_size=32))
    trainer.save_state()
    strict = json.loads(manifest_path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the manifest"))
    assert [e["name"] for e in strict["checkpoints"]][-2:] == ["epoch-0002", "manual-epoch-0002-step-000004"]
    assert strict["checkpoints"][0]["value"] is None
    assert strict["best"] == "epoch-0002"
