"""Data-parallel training with MultiGPUAddon: one worker process per device, gradients averaged by DDP.

    python examples/multi_gpu.py                    # every visible GPU, or 2 CPU processes without GPUs
    python examples/multi_gpu.py --cpu 2 --quick    # 2 CPU processes (gloo), 2 epochs: what the smoke test runs
    python examples/multi_gpu.py --port 29511       # another rendezvous port

Needs the zae-mpu plugin (from a checkout: pip install -e ".[mpu]" -e plugins/zae-mpu). The same script runs
under torchrun, one process per device, e.g. `torchrun --nproc-per-node 2 examples/multi_gpu.py --cpu 2`: the
add-on then joins the process group torchrun set up instead of spawning its own workers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zae_engine.distributed import is_rank_zero
from zae_engine.schedulers import CosineAnnealingScheduler
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons.mpu import MultiGPUAddon


class MeanThresholdDataset(Dataset):
    """Points in [0, 1]^10, labelled by whether their mean is above 0.5."""

    def __init__(self, size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.data = torch.rand(size, 10, generator=g)
        self.labels = (self.data.mean(dim=1) > 0.5).long()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int):
        return self.data[idx], self.labels[idx]


class MultiGPUTrainer(Trainer.add_on(MultiGPUAddon)):
    def train_step(self, batch):
        data, labels = batch
        return {"loss": nn.functional.cross_entropy(self.model(data), labels)}

    def test_step(self, batch):
        data, labels = batch
        logits = self.model(data)
        return {"loss": nn.functional.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}


def pick_devices(cpu_workers: int | None) -> list[torch.device]:
    """All GPUs when there are at least two; otherwise `cpu_workers` CPU processes (2 by default)."""
    if cpu_workers is None and torch.cuda.device_count() > 1:
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")] * (cpu_workers or 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 epochs on a small dataset")
    parser.add_argument("--cpu", type=int, default=None, metavar="N", help="use N CPU processes even if GPUs exist")
    parser.add_argument(
        "--port", type=int, default=12355, help="rendezvous port (a busy one is swapped for a free one)"
    )
    parser.add_argument("--save", default="runs/multi_gpu/model.safetensors", help="where to write the trained weights")
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs
    size = 512 if args.quick else 4096

    torch.manual_seed(0)
    train_loader = DataLoader(MeanThresholdDataset(size, seed=1), batch_size=32, shuffle=True)
    valid_loader = DataLoader(MeanThresholdDataset(size // 4, seed=2), batch_size=64)

    model = nn.Linear(10, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scheduler = CosineAnnealingScheduler(optimizer=optimizer, total_iters=epochs)

    devices = pick_devices(args.cpu)
    trainer = MultiGPUTrainer(
        model=model,
        device=devices,
        mode="train",
        optimizer=optimizer,
        scheduler=scheduler,
        log_bar=False,
        init_method=f"tcp://localhost:{args.port}",
    )
    # Each worker sees its own shard of train_loader; when run() returns, `model` holds what rank 0 trained.
    trainer.run(n_epoch=epochs, loader=train_loader, valid_loader=valid_loader)

    if is_rank_zero():
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        trainer.save_model(args.save)
        last = trainer.history[-1]
        print(
            f"{len(devices)} workers on {devices[0].type}: valid/loss {last['valid/loss']:.4f}, "
            f"valid/acc {last['valid/acc']:.3f}; weights saved to {args.save}"
        )
    return {"history": trainer.history, "devices": len(devices)}


if __name__ == "__main__":
    main()
