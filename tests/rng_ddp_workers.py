"""Worker side of test_rng_per_rank.py: 2 gloo ranks train, checkpoint, and resume in fresh processes; each rank
reports the random numbers it drew at the start of every epoch (a module of its own so that spawn imports it)."""

from __future__ import annotations

import faulthandler
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from zae_engine.testing import exit_worker, make_loader, make_trainer
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon

WORLD = 2


class Draws(AddOnBase):
    """What dropout or augmentation would draw: one number per rank at every epoch's start."""

    name = "draws"

    def __init__(self, **options):
        super().__init__(**options)
        self.seen: dict[int, float] = {}

    def on_epoch_start(self, epoch):
        self.seen[epoch] = float(torch.rand(()))


def worker(rank: int, init_method: str, save_path: str, epochs: int, resume: bool, out: str) -> None:
    # this test was seen to hang twice in ~30 runs under heavy load (one rank done, the other waiting): a rank
    # stuck for 2 minutes prints every thread's stack and exits, so the test fails fast and says where
    faulthandler.dump_traceback_later(120, exit=True)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD, timeout=timedelta(minutes=2))
    try:
        draws = Draws()
        trainer = make_trainer(draws, StateManagerAddon(save_path=save_path, resume=resume))
        torch.manual_seed(1000 + rank)  # every rank has its own streams, as zae-mpu seeds them
        trainer.model = DistributedDataParallel(trainer.model)
        trainer.handle_signals = False
        trainer.run_in_process(epochs, make_loader(seed=rank), total=True)
    finally:
        dist.destroy_process_group()
    torch.save(draws.seen, Path(out) / f"rank{rank}.pt")
    faulthandler.cancel_dump_traceback_later()
    exit_worker()  # torch 2.13 may abort at a gloo process's exit (see zae_engine.testing)
