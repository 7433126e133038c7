"""Worker side of test_distributed_gather.py: 2 gloo ranks evaluate shards of one data set and gather per-sample
values in metric_on_epoch_end (a module of its own so that spawn can import it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from zae_engine.testing import SeparableTrainer, exit_worker, make_dataset, make_model

WORLD = 2
SIZE = 37  # not a multiple of the world size: DistributedSampler repeats samples to even the shards out


def dataset() -> TensorDataset:
    x, y = make_dataset(SIZE).tensors
    return TensorDataset(x, y, torch.arange(SIZE))


class GatheringTrainer(SeparableTrainer):
    def test_step(self, batch):
        x, y, index = batch
        return {"loss": torch.tensor(0.0), "pred": self.model(x).argmax(1), "label": y, "index": index}

    def metric_on_epoch_end(self):
        preds, labels = self.gather(self.log_test["pred"]), self.gather(self.log_test["label"])
        indices = self.gather(self.log_test["index"])
        self.gathered = {"preds": preds, "labels": labels, "indices": indices}
        return {"f1": f1(preds, labels), "samples": float(len(indices))}


def f1(preds: torch.Tensor, labels: torch.Tensor) -> float:
    tp = ((preds == 1) & (labels == 1)).sum().item()
    fp = ((preds == 1) & (labels == 0)).sum().item()
    fn = ((preds == 0) & (labels == 1)).sum().item()
    return 2 * tp / max(1, 2 * tp + fp + fn)


def worker(rank: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD, timeout=timedelta(minutes=2))
    try:
        sampler = DistributedSampler(dataset(), num_replicas=WORLD, rank=rank, shuffle=True, seed=7)
        trainer = GatheringTrainer(make_model(seed=3), "cpu", "test", log_bar=False)
        trainer.handle_signals = False
        trainer.run_in_process(1, DataLoader(dataset(), batch_size=5, sampler=sampler))
        order = list(sampler)
        result = {**trainer.gathered, "summary": trainer.history[-1], "local": order}
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    exit_worker()  # torch 2.13 may abort at a gloo process's exit (see zae_engine.testing)
