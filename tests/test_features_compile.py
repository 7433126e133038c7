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


def test_under_ddp_the_wrapped_module_is_compiled_not_the_other_way_round(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from zae_engine.trainer.addons import AddOnBase, LauncherAddon

    class OneRankDDP(LauncherAddon):
        """A launcher as zae-mpu's: wraps the model in DDP (one gloo rank here), then runs the loop."""

        name = "one_rank_ddp"

        def launch(self, n_epoch, loader, valid_loader=None, total=False):
            trainer = self.trainer
            dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
            user_model = trainer.model
            try:
                trainer.model = DistributedDataParallel(user_model)
                trainer.run_in_process(n_epoch, loader, valid_loader, total=total)
            finally:
                trainer.model = user_model
                dist.destroy_process_group()

    class SeesTheModel(AddOnBase):
        name = "sees_the_model"
        seen = None

        def on_epoch_start(self, epoch):
            SeesTheModel.seen = self.trainer.model

    trainer = make_trainer(OneRankDDP(), SeesTheModel(), compile_model=True)
    trainer.run(1, batches(16, 8))
    assert isinstance(SeesTheModel.seen._orig_mod, DistributedDataParallel)  # compile(DDP(model))
    assert isinstance(trainer.model, torch.nn.Linear)  # the user's module again after the run
