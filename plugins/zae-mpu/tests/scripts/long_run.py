"""A run long enough to be interrupted: prints one line per epoch (rank 0). Argument: the start method."""

import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zae_mpu_testkit import DDPTrainer, make_mlp  # noqa: E402

from zae_engine.testing import make_dataset  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    model = make_mlp()
    trainer = DDPTrainer(
        model,
        ["cpu", "cpu"],
        "train",
        torch.optim.SGD(model.parameters(), lr=0.01),
        log_bar=False,
        threads_per_worker=1,
        init_method="tcp://127.0.0.1:0",
        start_method=sys.argv[1],
    )
    trainer.run(100_000, DataLoader(make_dataset(64), batch_size=8))
