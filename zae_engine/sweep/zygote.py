"""The sweep's zygote: the fork server every trial process is forked from, with the heavy imports done once.

A trial forked from here starts with torch (and the part of it the first optimizer imports), optuna and the engine
already imported (3-5 s saved per trial) and shares their memory pages until it writes to them. This module is
imported only in that fork server
(`multiprocessing`'s "forkserver" start method preloads it), never by the sweep process itself.

Forking is safe here because the server does nothing but import: it runs no torch operation, so no OpenMP or
intra-op thread pool exists to be copied half-alive into a child, and it touches no GPU. It also leaves the
terminal's process group, so Ctrl-C reaches the sweep process alone, which passes it on exactly once to each trial
(a trial that got it twice would abort instead of stopping after its step).
"""

import contextlib
import json
import os
import sys

with contextlib.suppress(OSError):
    os.setpgrp()

import optuna  # noqa: E402,F401
import torch  # noqa: E402,F401
import torch._dynamo  # noqa: E402,F401  (the first optimizer a process builds imports it: ~2-3 s)
import torch.optim  # noqa: E402,F401
import torch.utils.data  # noqa: E402,F401

import zae_engine.registry  # noqa: E402,F401
import zae_engine.runs.environment  # noqa: E402,F401
import zae_engine.runs.recorder  # noqa: E402,F401
import zae_engine.spec.build  # noqa: E402,F401
import zae_engine.sweep.study  # noqa: E402,F401
import zae_engine.sweep.worker  # noqa: E402,F401
import zae_engine.trainer.addons.early_stopping  # noqa: E402,F401
import zae_engine.trainer.addons.optuna_pruning  # noqa: E402,F401
import zae_engine.trainer.addons.run_log  # noqa: E402,F401
import zae_engine.trainer.addons.state_manager  # noqa: E402,F401
import zae_engine.trainer.loop  # noqa: E402,F401

# what every trial would read again from package metadata (~0.1-0.2 s): read it once here; forks inherit it
with contextlib.suppress(Exception):  # a trial reads them itself if this fails
    zae_engine.runs.environment.versions()
    # the registry caches its listing per sys.path: warm it for the sys.path trials will have (the sweep's)
    sys.path[:] = json.loads(os.environ.get(zae_engine.sweep.worker.SYS_PATH_VARIABLE, "null")) or sys.path
    zae_engine.registry.addon_names()
    zae_engine.registry.get_addon("run_log")  # also imports what judging an add-on's requirements needs
