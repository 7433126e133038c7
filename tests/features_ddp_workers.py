"""Worker side of the 2-process gloo tests in test_features_ddp.py (a module of its own so spawn can import it).

Each worker joins a real gloo process group, wraps the trainer's model in DDP itself and calls
`trainer.run_in_process`: the core loop under real DDP, independent of any launcher add-on.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from features_testing import Unsized, batches, merged
from torch.nn.parallel import DistributedDataParallel

from zae_engine.testing import SeparableTrainer, exit_worker, make_trainer
from zae_engine.trainer.addons import AddOnBase, EarlyStoppingAddon

WORLD = 2


def rank_batches(rank: int) -> list:
    """Each rank's own shard: 10 batches of 8."""
    return batches(80, 8, seed=100 + rank)


def poisoned(rank: int) -> list:
    data = rank_batches(rank)
    if rank == 1:
        x, y = data[2]
        x = x.clone()
        x[0, 0] = math.nan
        data[2] = (x, y)
    return data


def ddp_trainer(cls: type = SeparableTrainer, **kwargs) -> Any:
    trainer = make_trainer(trainer_cls=cls, **kwargs)
    trainer.model = DistributedDataParallel(trainer.model)
    trainer.handle_signals = False
    return trainer


def count_gradient_syncs(model: DistributedDataParallel) -> list[int]:
    """A DDP communication hook that all-reduces as usual and counts how often it had to."""
    calls = [0]

    def hook(state, bucket):  # unannotated: DDP checks annotations, which are strings here
        calls[0] += 1
        tensor = bucket.buffer().div_(WORLD)
        return dist.all_reduce(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])

    model.register_comm_hook(None, hook)
    return calls


def weights(trainer: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.unwrapped_model.state_dict().items()}


class RankLocalScore(AddOnBase):
    """Writes a per-rank score into the summary after the reduction: ranks would disagree without a reduced decision."""

    name = "rank_local_score"  # same phase as early stopping, attached before it: adds the key it then reads

    def on_epoch_end(self, epoch: int, summary: dict) -> None:
        scripts = {0: [5.0, 4.0, 3.0, 2.0, 1.0], 1: [1.0, 1.0, 1.0, 1.0, 1.0]}  # rank 1 stalls from epoch 2
        summary["local/score"] = scripts[dist.get_rank()][epoch - 1]


def scenario_accumulation(rank: int) -> dict:
    data = rank_batches(rank)
    accumulated = ddp_trainer(grad_accum_steps=4)
    syncs = count_gradient_syncs(accumulated.model)
    accumulated.run_in_process(1, data)

    one_big_step = ddp_trainer(grad_accum_steps=1)  # the same samples as 3 large batches, no accumulation
    one_big_step.run_in_process(1, [merged(data[0:4]), merged(data[4:8]), merged(data[8:10])])

    unsized = ddp_trainer(grad_accum_steps=4)  # length unknown: the last group is cut short under no_sync
    unsized.run_in_process(1, Unsized(data))
    return {
        "accumulated": weights(accumulated),
        "syncs": syncs[0],
        "steps": accumulated.progress_checker.get_step() - 1,
        "big_batches": weights(one_big_step),
        "unsized": weights(unsized),
    }


def scenario_nan_skip(rank: int) -> dict:
    trainer = ddp_trainer(nan_policy="skip")
    trainer.run_in_process(1, poisoned(rank))
    return {"weights": weights(trainer), "logged": len(trainer.log_train["loss"])}


def scenario_early_stopping(rank: int) -> dict:
    cls = SeparableTrainer.add_on(RankLocalScore, EarlyStoppingAddon)
    trainer = ddp_trainer(cls, monitor="local/score", patience=1)
    trainer.run_in_process(5, rank_batches(rank)[:2])
    stopper = trainer.addon("early_stopping")
    return {"epochs": len(trainer.history), "stopped_epoch": stopper.stopped_epoch, "bad_epochs": stopper.bad_epochs}


SCENARIOS = {
    "accumulation": scenario_accumulation,
    "nan_skip": scenario_nan_skip,
    "early_stopping": scenario_early_stopping,
}


def worker(rank: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD, timeout=timedelta(minutes=2))
    try:
        results = {name: run(rank) for name, run in SCENARIOS.items()}
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    exit_worker()  # torch 2.13 may abort at a gloo process's exit (see zae_engine.testing)
