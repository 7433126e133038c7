"""state_manager under DDP: rank 0 alone writes, with plain parameter names, and a single process can resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from zae_mpu_testkit import DDPTrainer, make_mlp

from zae_engine.testing import SeparableTrainer, assert_same_weights, make_dataset
from zae_engine.trainer.addons import StateManagerAddon


@pytest.mark.timeout(120)
def test_one_checkpoint_with_unwrapped_keys_that_a_single_process_loads(tmp_path):
    save_path = tmp_path / "ckpt"
    model = make_mlp()
    trainer = DDPTrainer.add_on(StateManagerAddon)(
        model,
        ["cpu", "cpu"],
        "train",
        torch.optim.Adam(model.parameters(), lr=0.01),
        log_bar=False,
        threads_per_worker=1,
        save_path=str(save_path),
        save_format="safetensors",
        save_top_k=0,
        keep_last=1,
    )
    loader = DataLoader(make_dataset(128), batch_size=16, shuffle=True, num_workers=1)  # loader workers inside DDP ones
    trainer.run(2, loader, DataLoader(make_dataset(64, seed=1), batch_size=32))

    folders = sorted(p.name for p in save_path.iterdir() if p.is_dir())
    assert folders == ["epoch-0002"]  # one set: rank 1 wrote nothing
    leftovers = [p for p in save_path.rglob("*") if p.name.startswith(".") and p.name != ".zae-writer.lock"]
    assert not leftovers  # no temp files left over (the writer's lock file stays, unlocked)
    manifest = json.loads((save_path / "manifest.json").read_text())
    assert "epoch-0002" in json.dumps(manifest)
    weights = load_file(str(save_path / "epoch-0002" / "model.safetensors"))
    assert set(weights) == set(make_mlp().state_dict())  # "0.weight", not "module.0.weight"

    plain_model = make_mlp(seed=9)
    plain = SeparableTrainer.add_on(StateManagerAddon)(
        plain_model, "cpu", "train", torch.optim.Adam(plain_model.parameters()), log_bar=False, save_path=str(save_path)
    )
    plain.load_state()
    assert_same_weights(plain_model, model)  # = what rank 0 trained, handed back to this process
    assert plain.progress_checker.get_epoch() == 3
