"""The seeds' multi-GPU example as written, on two CPU processes instead of CUDA devices.

Two lines differ from the seed: the device list, and the assert is about that list. Three are added
(marked "test:") so the test can compare the weights before and after, and the losses.
"""

import json

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, Dataset

from zae_engine.schedulers import CosineAnnealingScheduler
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons.mpu import MultiGPUAddon


class DummyDataset(Dataset):
    def __init__(self, size):
        self.data = torch.rand(size, 10)
        self.labels = (self.data.mean(dim=1) > 0.5).long()

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        return self.data[idx], self.labels[idx]


class MultiGPUTrainer(Trainer.add_on(MultiGPUAddon)):
    def train_step(self, batch):
        data, labels = batch
        outputs = self.model(data)
        loss = nn.CrossEntropyLoss()(outputs, labels)
        return {"loss": loss}

    def test_step(self, batch):
        return self.train_step(batch)


def main():
    device_list = [torch.device("cpu"), torch.device("cpu")]
    assert len(device_list) > 1, "This script must be run with multiple devices."

    dataset = DummyDataset(1000)
    train_loader = DataLoader(dataset, batch_size=32, shuffle=True)

    model = nn.Linear(10, 2)
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    scheduler = CosineAnnealingScheduler(optimizer=optimizer, total_iters=100)
    torch.save(model.state_dict(), "initial.pth")  # test:

    trainer = MultiGPUTrainer(
        model=model,
        device=device_list,
        mode="train",
        optimizer=optimizer,
        scheduler=scheduler,
        init_method="tcp://localhost:12355",
    )

    trainer.run(n_epoch=10, loader=train_loader)

    torch.save(model.state_dict(), "dummy_model_mgpu.pth")
    print("Model saved as 'dummy_model_mgpu.pth'.")
    json.dump(trainer.history, open("history.json", "w"))  # test:
    json.dump(
        {"optimizer_steps": len(optimizer.state), "scheduler_epoch": scheduler.last_epoch}, open("state.json", "w")
    )  # test:


if __name__ == "__main__":
    main()
