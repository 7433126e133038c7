"""Train 3 epochs with the tensorboard add-on and SIGKILL this process right after epoch 2 was written.

Usage: python killed_run.py LOG_DIR. Nothing gets to clean up after a SIGKILL, so what the event files hold then is
exactly what the add-on had flushed.
"""

import os
import signal
import sys

from zae_tensorboard import TensorBoardLoggerAddon

from zae_engine.testing import make_loader, make_trainer
from zae_engine.trainer.addons import AddOnBase


class KillAfterEpoch2(AddOnBase):
    name = "kill_after_epoch_2"
    phase = "report"  # attached after the tracker: runs after its epoch-end hook

    def on_epoch_end(self, epoch, summary):
        if epoch == 2:
            print("history", [h["valid/loss"] for h in self.trainer.history], flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


trainer = make_trainer(TensorBoardLoggerAddon(log_dir=sys.argv[1]), KillAfterEpoch2(), log_interval=2)
trainer.run(3, make_loader(), make_loader(seed=1))
