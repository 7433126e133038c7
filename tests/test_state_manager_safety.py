"""Loading never runs code; damaged, foreign and mismatched checkpoints give errors naming the file and the fix."""

from __future__ import annotations

import json
import math
import os
import pickle

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.checkpoint.integrity import fingerprint as _fingerprint
from zae_engine.checkpoint.lock import LOCK_NAME
from zae_engine.checkpoint.tree import join_tensors, split_tensors
from zae_engine.errors import CheckpointError
from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon


class PlainTrainer(SeparableTrainer, Trainer):
    pass


Checkpointed = PlainTrainer.add_on(StateManagerAddon)


class Bomb:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def trained(save_path, save_format="ckpt", model=None, **kwargs):
    model = model if model is not None else nn.Linear(10, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = Checkpointed(
        model, "cpu", "train", optimizer, log_bar=False, save_path=str(save_path), save_format=save_format, **kwargs
    )
    trainer.run(1, DataLoader(make_dataset(64), batch_size=32))
    return trainer


def fresh(save_path, model=None, optimizer=None):
    model = model if model is not None else nn.Linear(10, 2)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-2)
    return Checkpointed(model, "cpu", "train", optimizer, log_bar=False, save_path=str(save_path))


def replace_file(path, data: bytes, fix_checksum: bool):
    """Swap a checkpoint file; with fix_checksum the attacker also rewrote checkpoint.json to match."""
    path.write_bytes(data)
    if fix_checksum:
        meta_path = path.parent / "checkpoint.json"
        meta = json.loads(meta_path.read_text())
        meta["files"][path.name] = _fingerprint(path)
        meta_path.write_text(json.dumps(meta))


def test_state_manager_bomb_is_real(tmp_path):
    """Control: the payload used below does run when unpickled by plain pickle."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(Bomb(marker)))
    assert marker.exists()


@pytest.mark.parametrize("packing", ["torch_zip", "raw_pickle"])
@pytest.mark.parametrize("fix_checksum", [True, False])
def test_state_manager_pickle_bomb_in_checkpoint_is_refused(tmp_path, packing, fix_checksum):
    marker = tmp_path / "pwned"
    trained(tmp_path / "run")
    target = tmp_path / "run" / "epoch-0001" / "state.ckpt"
    if packing == "torch_zip":
        torch.save(Bomb(marker), tmp_path / "bomb.bin")
        data = (tmp_path / "bomb.bin").read_bytes()
    else:
        data = pickle.dumps(Bomb(marker))
    replace_file(target, data, fix_checksum)
    with pytest.raises(CheckpointError) as err:
        fresh(tmp_path / "run").load_state()
    assert str(target) in str(err.value)
    assert ("refused" if fix_checksum else "was replaced") in str(err.value)
    assert not marker.exists()


def test_state_manager_bare_pickle_bomb_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bomb = tmp_path / "model.ckpt"
    torch.save({"model": Bomb(marker), "progress": {"epoch": 1, "step": 1}}, bomb)
    with pytest.raises(CheckpointError, match="refused.*Nothing from it was executed") as err:
        fresh(tmp_path / "run").load_state(bomb)
    assert "posix.system" in str(err.value) or "system" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("victim", ["model.safetensors", "state.safetensors", "state.json"])
def test_state_manager_pickle_bomb_in_safetensors_checkpoint_is_refused(tmp_path, victim):
    marker = tmp_path / "pwned"
    trained(tmp_path / "run", "safetensors")
    target = tmp_path / "run" / "epoch-0001" / victim
    replace_file(target, pickle.dumps(Bomb(marker)), fix_checksum=True)
    with pytest.raises(CheckpointError) as err:
        fresh(tmp_path / "run").load_state()
    assert str(target) in str(err.value)
    assert not marker.exists()


def test_state_manager_pickled_manifest_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    trained(tmp_path / "run")
    manifest = tmp_path / "run" / "manifest.json"
    manifest.write_bytes(pickle.dumps(Bomb(marker)))
    with pytest.raises(CheckpointError, match="not a checkpoint manifest") as err:
        fresh(tmp_path / "run").load_state()
    assert str(manifest) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("save_format", ["ckpt", "safetensors"])
@pytest.mark.parametrize("damage", ["truncated", "random_bytes"])
@pytest.mark.parametrize("fix_checksum", [True, False])
def test_state_manager_damaged_file_is_named(tmp_path, save_format, damage, fix_checksum):
    trained(tmp_path / "run", save_format)
    folder = tmp_path / "run" / "epoch-0001"
    target = folder / ("state.ckpt" if save_format == "ckpt" else "model.safetensors")
    data = target.read_bytes()
    bad = data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data))
    replace_file(target, bad, fix_checksum)
    with pytest.raises(CheckpointError) as err:
        fresh(tmp_path / "run").load_state()
    message = str(err.value)
    assert str(target) in message
    assert "Traceback" not in message
    if not fix_checksum:
        assert ("SHA-256" if damage == "random_bytes" else "truncated") in message


def test_state_manager_foreign_files_and_paths(tmp_path):
    trainer = fresh(tmp_path / "run")
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        trainer.load_state()
    with pytest.raises(CheckpointError, match="does not exist"):
        trainer.load_state(tmp_path / "nowhere")
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint folder"):
        trainer.load_state(tmp_path / "folder")
    torch.save({"weight": torch.zeros(2, 10)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a zae-engine checkpoint.*apply_weights"):
        trainer.load_state(tmp_path / "foreign.pt")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="bare weights"):
        trainer.load_state(tmp_path / "weights.safetensors")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "checkpoint.json").write_text('{"hello": "world"}')
    with pytest.raises(CheckpointError, match="not written by zae-engine"):
        trainer.load_state(tmp_path / "fake")


def test_state_manager_mismatched_model_lists_keys_and_shapes(tmp_path):
    trained(tmp_path / "run")
    with pytest.raises(CheckpointError) as err:
        fresh(tmp_path / "run", model=nn.Linear(10, 3)).load_state()
    assert "shape mismatches: weight: checkpoint (2, 10) vs model (3, 10)" in str(err.value)
    assert "bias: checkpoint (2,) vs model (3,)" in str(err.value)
    with pytest.raises(CheckpointError) as err:
        fresh(tmp_path / "run", model=nn.Sequential(nn.Linear(10, 2))).load_state()
    assert "missing keys: 0.weight, 0.bias" in str(err.value)
    assert "unexpected keys: weight, bias" in str(err.value)


def test_state_manager_mismatched_optimizer_is_a_checkpoint_error(tmp_path):
    trained(tmp_path / "run")
    model = nn.Linear(10, 2)
    with pytest.raises(
        CheckpointError,
        match="optimizer group 0 has 2 parameters, this one 1; load it into the optimizer it was saved from",
    ):
        fresh(tmp_path / "run", model, torch.optim.Adam([model.weight], lr=1e-2)).load_state()


class OpaqueAddon(AddOnBase):
    name = "opaque"

    def state_dict(self):
        return {"handle": object()}


def test_state_manager_refuses_to_save_what_it_could_not_load_safely(tmp_path):
    cls = PlainTrainer.add_on(StateManagerAddon, OpaqueAddon)
    model = nn.Linear(10, 2)
    trainer = cls(model, "cpu", "train", torch.optim.SGD(model.parameters(), lr=0.1), save_path=str(tmp_path))
    for save_format in ("ckpt", "safetensors"):
        trainer.addon("state_manager").config.save_format = save_format
        with pytest.raises(CheckpointError, match=r"state\.addons\.opaque\.handle: a builtins\.object"):
            trainer.save_state()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # no folder, no temp, no manifest


def test_state_manager_tree_round_trip_is_exact():
    shared = torch.arange(6.0)
    tree = {
        "state": {0: {"exp_avg": shared, "step": torch.tensor(3.0)}, 1: {"view": shared[2:4]}},
        "groups": [{"betas": (0.9, 0.999), "lr": 1e-3, "params": [0, 1], "fused": None}],
        "best": {"value": math.inf, "low": -math.inf},
        "$odd": {"$tensor": "not a ref"},
        "flag": True,
    }
    skeleton, tensors = split_tensors(tree)
    json.dumps(skeleton, allow_nan=False)
    back = join_tensors(json.loads(json.dumps(skeleton)), tensors, "test")
    assert back["state"][0]["step"] == 3.0 and isinstance(back["groups"][0]["betas"], tuple)
    assert torch.equal(back["state"][1]["view"], torch.tensor([2.0, 3.0]))
    assert back["best"] == {"value": math.inf, "low": -math.inf}
    assert back["$odd"] == {"$tensor": "not a ref"} and back["flag"] is True
    from safetensors.torch import save

    save(tensors)  # shared and partial storage were copied apart, so safetensors accepts them


def test_state_manager_tied_weights_save_as_safetensors(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    trainer = Checkpointed(
        model,
        "cpu",
        "train",
        torch.optim.SGD(model.parameters(), lr=0.1),
        save_path=str(tmp_path),
        save_format="safetensors",
    )
    path = trainer.save_state()
    other = Checkpointed(model, "cpu", "train", torch.optim.SGD(model.parameters(), lr=0.1), save_path=str(tmp_path))
    assert other.load_state(path) == path


@pytest.mark.parametrize("field", ["name", "latest"])
def test_state_manager_manifest_cannot_point_outside_save_path(tmp_path, field):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "checkpoint.json").write_text("{}")  # looks like a checkpoint folder, but is not in save_path
    trained(tmp_path / "run")
    manifest_path = tmp_path / "run" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    if field == "name":
        data["checkpoints"][0]["name"] = "../victim"
    else:
        data["latest"] = "../victim"
    manifest_path.write_text(json.dumps(data))
    trainer = fresh(tmp_path / "run")
    with pytest.raises(CheckpointError, match="damaged checkpoint manifest.*not a plain checkpoint folder name"):
        trainer.load_state()
    with pytest.raises(CheckpointError, match="damaged checkpoint manifest"):
        trainer.save_state()  # pruning never follows such a name
    assert (victim / "checkpoint.json").is_file()
