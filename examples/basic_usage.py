"""Basic usage on the CPU: a Trainer subclass with checkpoints (state_manager) and W&B logging, offline.

    python examples/basic_usage.py                  # 10 epochs, dict batches
    python examples/basic_usage.py --quick          # 2 epochs, for a smoke test
    python examples/basic_usage.py --batches tuple  # (x, y) batches instead of {"input": x, "target": y}

Needs the W&B plugin (from a checkout: pip install -e ".[wandb]" -e plugins/zae-wandb). Nothing leaves the
machine: W&B runs in offline mode and writes under --out; `wandb sync <out>/wandb/offline-run-*` uploads it
later if you want.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zae_engine.schedulers import CosineAnnealingScheduler
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import StateManagerAddon, WandBLoggerAddon


class NoisyBlobs(Dataset):
    """Two Gaussian blobs in 10 dimensions; items are dicts or (x, y) tuples."""

    def __init__(self, size: int, as_dict: bool, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (size,), generator=g)
        self.x = torch.randn(size, 10, generator=g) + (self.y[:, None] * 2 - 1) * 0.4
        self.as_dict = as_dict

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        if self.as_dict:
            return {"input": self.x[i], "target": self.y[i]}
        return self.x[i], self.y[i]


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Both batch shapes reach the steps already on the trainer's device."""
    if isinstance(batch, dict):
        return batch["input"], batch["target"]
    return batch


class BlobTrainer(Trainer):
    criterion = nn.CrossEntropyLoss()

    def train_step(self, batch):
        x, y = unpack(batch)
        return {"loss": self.criterion(self.model(x), y)}

    def test_step(self, batch):
        x, y = unpack(batch)
        logits = self.model(x)
        return {"loss": self.criterion(logits, y), "acc": (logits.argmax(1) == y).float().mean(), "output": logits}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 epochs on a small dataset")
    parser.add_argument("--batches", choices=["dict", "tuple"], default="dict")
    parser.add_argument("--out", default="runs/basic_usage", help="checkpoints and the offline W&B run go here")
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs
    size = 256 if args.quick else 2048
    out = Path(args.out)

    torch.manual_seed(0)
    as_dict = args.batches == "dict"
    train_loader = DataLoader(NoisyBlobs(size, as_dict, seed=1), batch_size=32, shuffle=True)
    valid_loader = DataLoader(NoisyBlobs(size // 4, as_dict, seed=2), batch_size=64)

    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = CosineAnnealingScheduler(optimizer, total_iters=epochs)

    # The seeds' composition: one class with both add-ons; their keywords go to the constructor.
    MyTrainer = BlobTrainer.add_on(StateManagerAddon, WandBLoggerAddon)
    trainer = MyTrainer(
        model=model,
        device="cpu",
        mode="train",
        optimizer=optimizer,
        scheduler=scheduler,
        log_bar=False,
        save_path=str(out / "checkpoints"),
        save_format="safetensors",
        web_logger={"wandb": {"project": "zae-basic-usage", "mode": "offline", "dir": str(out)}},
    )
    trainer.run(n_epoch=epochs, loader=train_loader, valid_loader=valid_loader)

    trainer.apply_weights()  # the best epoch's weights
    trainer.save_model(str(out / "best.safetensors"))
    predictions = torch.cat(trainer.inference(valid_loader)).argmax(1)
    accuracy = (predictions == valid_loader.dataset.y).float().mean().item()
    print(f"best {trainer.best['metric']} {trainer.best['value']:.4f} at epoch {trainer.best['epoch']}")
    print(f"accuracy with the best weights: {accuracy:.3f}; weights in {out / 'best.safetensors'}")
    return {"history": trainer.history, "accuracy": accuracy}


if __name__ == "__main__":
    main()
