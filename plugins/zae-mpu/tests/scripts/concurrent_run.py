"""One of two runs started together on one init_method. Arguments: init_method, seed, weights file, meeting folder.

Prints "ready" once set up, trains when a line arrives on stdin (so both launchers reach the rendezvous at
the same moment) and, once training, waits for the other run to be training too; then saves the weights.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zae_mpu_testkit import MeetingDDPTrainer, make_mlp  # noqa: E402

from zae_engine.testing import make_dataset  # noqa: E402

if __name__ == "__main__":
    init_method, seed, out, meeting_folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    model = make_mlp(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = MeetingDDPTrainer(
        model, ["cpu", "cpu"], "train", optimizer, log_bar=False, threads_per_worker=1, init_method=init_method
    )
    trainer.meeting_folder = meeting_folder
    loader = DataLoader(make_dataset(128, seed=seed), batch_size=8, shuffle=False)
    print("ready", flush=True)
    sys.stdin.readline()
    trainer.run(2, loader)
    save_file(model.state_dict(), out)
