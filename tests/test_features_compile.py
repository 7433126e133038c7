"""torch.compile: the compiled model trains like the eager one and checkpoints carry the original module's keys."""

from __future__ import annotations

import torch
from features_testing import batches

from zae_engine.checkpoint.weights import load_weights
from zae_engine.testing import assert_same_weights, make_trainer


def test_compiled_model_trains_like_eager_and_saves_under_the_original_keys(tmp_path):
    data = batches(32, 8)  # one tiny epoch: the compile (~20 s on CPU) dominates this test
    eager = make_trainer()
    eager.run(1, data)
    compiled = make_trainer(compile_model=True)
    compiled.run(1, data)

    assert compiled.model is not compiled.unwrapped_model  # the OptimizedModule wraps the user's Linear
    assert isinstance(compiled.unwrapped_model, torch.nn.Linear)
    assert list(compiled.state_dict()["model"]) == ["weight", "bias"]
    assert_same_weights(compiled.unwrapped_model.state_dict(), eager.model.state_dict(), atol=1e-5, rtol=1e-5)

    compiled.save_model(str(tmp_path / "model.safetensors"))
    saved = load_weights(str(tmp_path / "model.safetensors"))
    assert sorted(saved) == ["bias", "weight"]
    fresh = make_trainer(compile_model=True)
    fresh.apply_weights(str(tmp_path / "model.safetensors"))
    assert_same_weights(fresh.unwrapped_model.state_dict(), saved, atol=1e-6, rtol=1e-5)
