"""An exponential moving average (EMA) of the model's weights, kept beside the live ones.

Every `update_every` optimizer steps: ema = decay * ema + (1 - decay) * weights, for every floating-point
entry of the model's state dict (parameters and buffers such as BatchNorm statistics); integer buffers are
copied. The average lives on the model's device and is updated in place with foreach kernels: no host sync.
With `evaluate_with_ema`, validation runs on the EMA weights and the live weights come back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from zae_engine.errors import CheckpointError
from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.addons.configs import EMAConfig


class EMAAddon(AddOnBase):
    """Keeps `weights` (name -> tensor), an EMA of the unwrapped model's state dict."""

    name = "ema"
    Config = EMAConfig
    config: EMAConfig

    def __init__(self, config: EMAConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.weights: dict[str, torch.Tensor] | None = None
        self.updates = 0
        self._live: dict[str, torch.Tensor] | None = None  # the live weights while EMA ones are swapped in

    # ------------------------------------------------------------------ the average
    def _model_state(self) -> dict[str, torch.Tensor]:
        return self.trainer.unwrapped_model.state_dict()

    def reset(self) -> None:
        """Start the average from the model's current weights."""
        self.weights = {k: v.detach().clone() for k, v in self._model_state().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step towards the model's current weights."""
        if self.weights is None:
            self.reset()
        state = self._model_state()
        averaged, current = [], []
        for key, value in state.items():
            ema = self.weights[key]
            if ema.is_floating_point():
                averaged.append(ema)
                current.append(value.detach())
            else:
                ema.copy_(value)
        if averaged:
            torch._foreach_lerp_(averaged, current, 1.0 - self.config.decay)
        self.updates += 1

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Overwrite the model's weights with the EMA (e.g. before exporting the final model)."""
        if self.weights is None:
            raise CheckpointError(f"{self.label()}: no EMA weights yet; run() in train mode first")
        self.trainer.unwrapped_model.load_state_dict(self.weights)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Run a block with the EMA weights in the model; the live weights are restored afterwards."""
        self._swap_in()
        try:
            yield
        finally:
            self._swap_out()

    @torch.no_grad()
    def _swap_in(self) -> None:
        if self.weights is None or self._live is not None:
            return
        self._live = {k: v.detach().clone() for k, v in self._model_state().items()}
        self.copy_to_model()

    @torch.no_grad()
    def _swap_out(self) -> None:
        if self._live is None:
            return
        self.trainer.unwrapped_model.load_state_dict(self._live)
        self._live = None

    # ------------------------------------------------------------------ hooks
    def on_run_start(self) -> None:
        if self.weights is None:
            self.reset()
            return
        model_state = self._model_state()  # the trainer may have moved (or sharded) it: the average follows the model
        like = self.trainer.strategy.laid_out_like
        self.weights = {k: like(v, model_state[k]) for k, v in self.weights.items()}

    def on_optimizer_step(self) -> None:
        if (self.trainer.progress_checker.get_step() - 1) % self.config.update_every == 0:
            self.update()

    def on_validation_start(self) -> None:
        if self.config.evaluate_with_ema:
            self._swap_in()

    def on_validation_end(self) -> None:
        self._swap_out()

    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        trainer = self.trainer
        measured_on_ema = self.config.evaluate_with_ema and str(trainer.best.get("metric")).startswith("valid/")
        improved = trainer.best.get("epoch") == epoch and trainer.config.keep_best_weights
        if measured_on_ema and improved and self.weights is not None:
            # the best value was measured with the EMA weights, so those are the best weights to keep (every rank
            # takes part: under a sharding strategy the average is sharded too)
            weights = trainer.strategy.rank_zero_copy(self.weights)
            if weights is not None:
                trainer._best_weights = weights

    def on_run_end(self, error: BaseException | None) -> None:
        self._swap_out()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.config.decay, "updates": self.updates, "weights": dict(self.weights or {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = state.get("weights") or {}
        model_state = self._model_state()
        missing = sorted(set(model_state) - set(weights))
        unexpected = sorted(set(weights) - set(model_state))
        reshaped = sorted(k for k in set(weights) & set(model_state) if weights[k].shape != model_state[k].shape)
        if weights and (missing or unexpected or reshaped):
            raise CheckpointError(
                f"{self.label()}: the checkpoint's EMA weights do not fit the model (missing: {missing[:5]}, "
                f"unexpected: {unexpected[:5]}, other shape: {reshaped[:5]}); load a checkpoint of this model"
            )
        like = self.trainer.strategy.laid_out_like
        self.weights = {k: like(v.detach(), model_state[k]).clone() for k, v in weights.items()} or None
        self.updates = int(state.get("updates", 0))
