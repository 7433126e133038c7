"""A process that records a run with `RunRecorder`, for tests that end it in different ways.

    python runs_writer.py ROOT NAME MODE EPOCHS [LR]

MODE: `done`, `failed` (raises after the epochs), `stopped_early` (finishes with that status), `hold`
(prints "ready" after the epochs and sleeps until it is signalled or killed).
"""

from __future__ import annotations

import signal
import sys
import time

from zae_engine.runs import RunRecorder

# SIGINT raises KeyboardInterrupt even when this process was started with it ignored (a job started with `&`
# from a script inherits SIG_IGN, and Python then installs no handler of its own)
signal.signal(signal.SIGINT, signal.default_int_handler)

root, name, mode, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lr = float(sys.argv[5]) if len(sys.argv) > 5 else 0.1
spec = {
    "model": {"class_path": "zae_engine.demo.toy.TinyNet", "init_args": {"hidden": 8}},
    "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": lr}},
    "addons": [{"name": "state_manager", "save_path": f"{root}/ckpt-{name}"}],
    "run": {"n_epoch": epochs, "seed": 0},
}
STEPS = 4

with RunRecorder(root).start(name=name, options={"trainer": {"gradient_clip": 1.0}}, spec=spec, devices=["cpu"]) as run:
    for epoch in range(1, epochs + 1):
        for i in range(1, STEPS + 1):
            run.log({"train/loss": 1.0 / (epoch + lr * i)}, step=(epoch - 1) * STEPS + i, epoch=epoch, kind="step")
        run.log(
            {"train/loss": 1.0 / (epoch + lr), "valid/loss": 1.2 / (epoch + lr), "valid/acc": 1 - 0.5 / epoch},
            step=epoch * STEPS,
            epoch=epoch,
        )
    if mode == "failed":
        raise ValueError(f"loss exploded after epoch {epochs}\nsecond line of detail")
    if mode == "stopped_early":
        run.finish("stopped_early")
    if mode == "hold":
        print("ready", flush=True)
        time.sleep(600)
