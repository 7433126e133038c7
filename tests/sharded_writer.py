"""Writes a sharded checkpoint the way two FSDP ranks do, for the tests of zae_engine.checkpoint.sharded.

    python tests/sharded_writer.py FOLDER

Two gloo processes shard a small MLP (layer sizes 17 and 3: pieces of unequal length) with FSDP2, take an Adam
step and save `FOLDER/epoch-0001` together; rank 0 also writes the whole weights to `FOLDER/expected.safetensors`.
"""

import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file
from torch import nn
from torch.distributed.fsdp import fully_shard

from zae_engine.checkpoint.rng import capture_rng
from zae_engine.checkpoint.sharded import save_sharded
from zae_engine.checkpoint.store import write_folder
from zae_engine.testing import exit_worker


def rank_main(rank: int, folder: str, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 17), nn.Tanh(), nn.Linear(17, 3))
        fully_shard(model[0])
        fully_shard(model[2])
        fully_shard(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        model(torch.randn(4, 10)).sum().backward()
        optimizer.step()
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "progress": {"epoch": 2, "step": 2},
            "best": {"metric": "train/loss", "value": 0.5, "epoch": 1},
            "rng": capture_rng(),
            "history": [{"epoch": 1, "train/loss": 0.5}],
        }
        target = Path(folder) / "epoch-0001"
        meta = {"kind": "manual", "epoch": 1, "step": 1}
        save_sharded(state, lambda: write_folder(target, state, meta, "sharded"))
        whole = {key: value.full_tensor().contiguous() for key, value in model.state_dict().items()}
        if rank == 0:
            save_file(whole, str(Path(folder) / "expected.safetensors"))
    finally:
        dist.destroy_process_group()
    exit_worker()  # torch 2.13 may abort at a gloo process's exit (see zae_engine.testing)


if __name__ == "__main__":
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(rank_main, args=(sys.argv[1], port), nprocs=2)
