"""One training batch and one validation batch through the whole pipeline — Lightning's `fast_dev_run`, ours.

The steps, the loss, backward, the optimizer step, the validation pass, `metric_on_epoch_end` and the add-ons that
update state all run for real; the add-ons that persist or report (checkpoints, run records, trackers) are
attached — so their settings were checked — but not called, so nothing is written. Then every add-on's `monitor`
is looked up in the summary the batches really produced, and the trainer gets its weights, optimizer, progress
and history back as they were.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from zae_engine.errors import ConfigError, did_you_mean
from zae_engine.trainer.compose import HookTable


class _FirstBatch:
    """A loader cut down to its first batch (and saying so through len())."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), 1)

    def __len__(self) -> int:
        return 1


def dry_run(trainer: Any, loader: Iterable, valid_loader: Iterable | None = None) -> dict[str, Any]:
    """Run one batch of each; returns the epoch summary; ConfigError names a `monitor` the steps never produce."""
    saved = copy.deepcopy(trainer.state_dict())
    history = [dict(h) for h in trainer.history]
    best, best_weights, hooks = dict(trainer.best), trainer._best_weights, trainer._hooks
    trainer._hooks = HookTable([a for a in trainer.addons.values() if type(a).phase == "update"])
    try:
        trainer.run_in_process(1, _FirstBatch(loader), None if valid_loader is None else _FirstBatch(valid_loader))
        summary = dict(trainer.history[-1])
    finally:
        trainer._hooks = hooks
        trainer.load_state_dict(saved, "the state before the dry run")
        trainer.history, trainer.best, trainer._best_weights = history, best, best_weights
    keys = sorted(k for k in summary if k not in ("epoch", "step"))
    for addon in trainer.addons.values():
        monitor = getattr(addon.config, "monitor", None)
        if monitor is not None and monitor not in summary:
            raise ConfigError(
                f"{addon.label()}: monitor {monitor!r} is not in what the steps produce{did_you_mean(monitor, keys)}; "
                f"the epoch summary holds: {', '.join(keys)}"
            )
    return summary
