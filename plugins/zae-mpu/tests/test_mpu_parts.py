"""The plugin's pieces on their own (no processes): hand-back encoding, loader sharding, ports, registry."""

from __future__ import annotations

import math
import socket

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from zae_mpu.handback import read_state, write_state
from zae_mpu.ports import port_is_free, resolve_init_method
from zae_mpu.sharding import shard_loader

from zae_engine.errors import ConfigError
from zae_engine.testing import make_dataset


def test_handback_round_trip_keeps_int_keys_tuples_and_infinities(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "best": {"value": math.inf}, "history": [{"train/loss": 0.5}]}
    write_state(tmp_path, state)
    back = read_state(tmp_path)
    assert back["best"]["value"] == math.inf and back["history"] == state["history"]
    assert sorted(back["optimizer"]["state"]) == [0, 1]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    torch.testing.assert_close(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    optimizer.load_state_dict(back["optimizer"])  # what the launching process does with it


def test_a_part_that_cannot_be_handed_back_is_left_out_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="'scheduler' cannot be handed back"):
        write_state(tmp_path, {"model": {"w": torch.ones(2)}, "scheduler": {"fn": lambda e: e}})
    back = read_state(tmp_path)
    assert list(back) == ["model"]


def _collate(items):
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def test_sharding_keeps_the_loader_options_and_splits_the_data():
    dataset = make_dataset(20)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, collate_fn=_collate, drop_last=True, pin_memory=False)
    shards = [shard_loader(loader, rank, 2, seed=7, what="training loader") for rank in (0, 1)]
    for sharded, sampler in shards:
        assert isinstance(sampler, DistributedSampler) and sampler.shuffle
        assert sharded.batch_size == 4 and sharded.collate_fn is _collate and sharded.drop_last
        assert len(sharded) == 2  # 10 samples per rank, batches of 4, the last partial one dropped
    indices = [list(sampler) for _, sampler in shards]
    assert sorted(indices[0] + indices[1]) == list(range(20))
    shards[0][1].set_epoch(2)
    assert list(shards[0][1]) != indices[0]  # another epoch, another shuffle


def test_sharding_keeps_order_without_shuffle_and_refuses_what_it_cannot_split():
    loader = DataLoader(make_dataset(8), batch_size=2)
    sharded, sampler = shard_loader(loader, 1, 2, seed=0, what="validation loader")
    assert list(sampler) == [1, 3, 5, 7]
    with pytest.raises(ConfigError, match="not a torch DataLoader.*shard_data=False"):
        shard_loader([(torch.ones(1), torch.ones(1))], 0, 2, seed=0, what="training loader")
    by_sampler = DataLoader(TensorDataset(torch.ones(4)), batch_sampler=[[0, 1], [2, 3]])
    with pytest.raises(ConfigError, match="custom batch_sampler"):
        shard_loader(by_sampler, 0, 2, seed=0, what="training loader")


def test_ports_busy_free_and_any():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        assert port_is_free("127.0.0.1", busy) is False
        swapped = resolve_init_method(f"tcp://127.0.0.1:{busy}", strict_port=False)
        assert swapped.startswith("tcp://127.0.0.1:") and swapped != f"tcp://127.0.0.1:{busy}"
    assert resolve_init_method("tcp://localhost:0", strict_port=True) != "tcp://localhost:0"
    assert resolve_init_method("env://", strict_port=True) == "env://"
    with pytest.raises(ConfigError, match="not 'tcp://HOST:PORT'"):
        resolve_init_method("tcp://localhost", strict_port=False)


def test_registered_under_mpu_and_served_by_the_core_shim():
    from importlib.metadata import entry_points

    from zae_mpu import MultiGPUAddon

    from zae_engine.trainer.addons import MultiGPUAddon as from_package
    from zae_engine.trainer.addons.mpu import MultiGPUAddon as from_shim

    (entry,) = [e for e in entry_points(group="zae_engine.addons") if e.name == "mpu"]
    assert entry.load() is MultiGPUAddon is from_shim is from_package
    with pytest.raises(ConfigError, match="'backend'"):
        MultiGPUAddon.validate_config({"backend": "carrier-pigeon"})
