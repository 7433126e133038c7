"""Run under torchrun (or srun): every rank saves its final weights and what it saw, so the test can compare them.

`python torchrun_job.py OUT [STRATEGY]`; STRATEGY is ddp (default) or fsdp.
"""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zae_mpu_testkit import DDPTrainer, make_mlp  # noqa: E402

from zae_engine.distributed import get_world_size  # noqa: E402
from zae_engine.testing import make_dataset  # noqa: E402


class RecordingTrainer(DDPTrainer):
    def train_step(self, batch):
        self.seen_world_size = get_world_size()  # the process group lives only during run()
        return super().train_step(batch)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    strategy = sys.argv[2] if len(sys.argv) > 2 else "ddp"
    model = make_mlp(seed=0)  # the same start everywhere; DDP would broadcast rank 0's weights anyway
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = RecordingTrainer(model, "cpu", "train", optimizer, log_bar=False, strategy=strategy)

    trainer.run(3, DataLoader(make_dataset(128), batch_size=8, shuffle=True))
    rank = os.environ.get("RANK") or os.environ["SLURM_PROCID"]
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    report = {
        "history": trainer.history,
        "world_size": trainer.seen_world_size,
        "model_is_users": trainer.model is model,
        "plain_parameters": all(type(p) is torch.nn.Parameter for p in model.parameters()),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    # torch 2.13: once DTensor (FSDP2) has used the default gloo group, that group outlives destroy_process_group,
    # and now and then the interpreter aborts at exit ("terminate called without an active exception", exit -6)
    # after all work is done; plain torch with fully_shard under torchrun does it too. Leave without the teardown.
    sys.stdout.flush()
    os._exit(0)
