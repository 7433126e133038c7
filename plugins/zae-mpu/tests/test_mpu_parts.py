"""The plugin's pieces on their own (no processes): hand-back encoding, loader sharding, ports, registry."""

from __future__ import annotations

import math
import socket

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from zae_mpu.failures import is_transport_error, read_failures, record_failure, run_failed_error
from zae_mpu.handback import read_state, write_state
from zae_mpu.ports import hosted_rendezvous
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


def test_an_addon_part_that_cannot_be_handed_back_is_left_out_and_the_rest_comes_back(tmp_path):
    from zae_mpu.handback import take_back, trainer_parts

    from zae_engine.testing import make_loader, make_trainer
    from zae_engine.trainer.addons import AddOnBase

    class KeepsAFunction(AddOnBase):
        name = "keeps_a_function"

        def state_dict(self):
            return {"fn": lambda epoch: epoch}  # cannot be encoded without pickle

    worker = make_trainer(KeepsAFunction(), lr=0.5)
    worker.run(2, make_loader())
    with pytest.warns(UserWarning, match="'addon:keeps_a_function' cannot be handed back"):
        write_state(tmp_path, trainer_parts(worker))
    back = read_state(tmp_path)
    assert "addon:keeps_a_function" not in back and {"model", "optimizer", "progress", "history"} <= set(back)
    parent = make_trainer(KeepsAFunction(), lr=0.5)
    take_back(parent, back)  # the parent does not die on the missing part
    assert torch.equal(parent.model.weight, worker.model.weight)
    assert parent.progress_checker.get_epoch() == 3 and parent.history == worker.history


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


def test_the_launcher_takes_the_port_itself_so_a_second_run_moves_or_is_refused(capfd):
    with hosted_rendezvous("tcp://127.0.0.1:0", strict_port=True, timeout_s=5) as first:
        assert first.hosted and first.init_method != "tcp://127.0.0.1:0"
        port = int(first.init_method.rsplit(":", 1)[1])
        with hosted_rendezvous(first.init_method, strict_port=False, timeout_s=5) as second:
            assert second.hosted and second.init_method != first.init_method
        assert f"port {port} is in use" in capfd.readouterr().err
        with pytest.raises(ConfigError, match=f"port {port} .*already in use.*strict_port=False"):
            with hosted_rendezvous(first.init_method, strict_port=True, timeout_s=5):
                pass
    with hosted_rendezvous(first.init_method, strict_port=True, timeout_s=5) as again:  # released at the end
        assert again.init_method == first.init_method


def test_a_port_held_by_another_program_is_swapped_and_other_schemes_pass_through():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        with hosted_rendezvous(f"tcp://127.0.0.1:{busy}", strict_port=False, timeout_s=5) as moved:
            assert moved.init_method.startswith("tcp://127.0.0.1:") and not moved.init_method.endswith(f":{busy}")
    with hosted_rendezvous("env://", strict_port=True, timeout_s=5) as passed:
        assert passed.init_method == "env://" and not passed.hosted
    with pytest.raises(ConfigError, match="not 'tcp://HOST:PORT'"):
        with hosted_rendezvous("tcp://localhost", strict_port=False, timeout_s=5):
            pass


@pytest.mark.parametrize(
    ("error", "transport"),
    [
        (RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:10166."), True),
        (RuntimeError("[pair.cc:537] Read error [127.0.0.1]:47830: Connection reset by peer."), True),
        (RuntimeError("[unbound_buffer.cc:78] Timed out waiting 20000ms for recv operation to complete"), True),
        (torch.distributed.DistBackendError("NCCL communicator was aborted"), True),
        (ValueError("Connection closed by peer"), False),  # the user's own error, whatever it says
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x10 and 12x2)"), False),
    ],
)
def test_broken_collectives_are_told_apart_from_the_users_errors(error, transport):
    assert is_transport_error(error) is transport


def test_a_broken_collective_raised_while_handling_the_users_error_reports_the_users_error(tmp_path):
    try:
        try:
            raise ValueError("boom in train_step")
        except ValueError:
            raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:4745") from None
    except RuntimeError as broken:
        record_failure(tmp_path, 1, broken)  # `from None` hides the context from tracebacks, not from us
    (failure,) = read_failures(tmp_path)
    assert (failure.kind, failure.message, failure.transport) == ("ValueError", "boom in train_step", False)


def test_the_error_raised_names_the_cause(tmp_path):
    try:
        raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:4745")
    except RuntimeError as broken:
        record_failure(tmp_path, 0, broken)
    # rank 1 was killed (no report of its own): it is the cause, not rank 0 that lost it
    died = run_failed_error(tmp_path, {0: 1, 1: -9}, world_size=2)
    assert died.rank == 1 and "rank 1 of 2 was killed by SIGKILL" in str(died)
    # rank 1 reported its own error: named, whenever it came
    try:
        raise KeyError("label")
    except KeyError as own:
        record_failure(tmp_path, 1, own)
    raised = run_failed_error(tmp_path, {0: 1, 1: 1}, world_size=2)
    assert raised.rank == 1 and "KeyError: 'label'" in str(raised)


def test_registered_under_mpu_and_served_by_the_core_shim():
    from importlib.metadata import entry_points

    from zae_mpu import MultiGPUAddon

    from zae_engine.trainer.addons import MultiGPUAddon as from_package
    from zae_engine.trainer.addons.mpu import MultiGPUAddon as from_shim

    (entry,) = [e for e in entry_points(group="zae_engine.addons") if e.name == "mpu"]
    assert entry.load() is MultiGPUAddon is from_shim is from_package
    with pytest.raises(ConfigError, match="'backend'"):
        MultiGPUAddon.validate_config({"backend": "carrier-pigeon"})
