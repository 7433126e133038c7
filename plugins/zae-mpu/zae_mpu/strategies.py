"""How a rank holds the model: DDP (a whole replica per rank) or FSDP (FSDP2 shards); one object per kind.

`rank.run_rank` makes one from the add-on's options once the process group is up, calls `setup(trainer, loader)`,
lets the loop run (the loop asks `trainer.strategy` whether a micro-batch syncs and how to copy weights whole;
an fp16 loss scaler needs nothing: DTensor's inf check agrees across ranks by itself), then calls `teardown(trainer, completed)` before leaving the group: the trainer holds
the user's own module again, with the trained weights, and the user's optimizer holds whole state.

FSDP never touches the user's module: it shards a copy made on the meta device (no memory), materialises only
this rank's shards, and fills them from rank 0's weights. The user's optimizer is pointed at the sharded
parameters for the run (so a scheduler bound to it keeps working) and back at the user's ones afterwards.
"""

from __future__ import annotations

import copy
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from zae_engine.errors import ConfigError
from zae_engine.trainer.strategy import Strategy
from zae_mpu.blocks import checkpoint_blocks, find_blocks, restore_blocks

if TYPE_CHECKING:
    from zae_engine.trainer.loop import Trainer
    from zae_mpu.config import MultiGPUConfig

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def make_strategy(config: MultiGPUConfig, device: torch.device) -> DDPStrategy | FSDPStrategy:
    return FSDPStrategy(config, device) if config.strategy == "fsdp" else DDPStrategy(config, device)


def fsdp_available() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (FSDP2: torch >= 2.6)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- DDP
class DDPStrategy(Strategy):
    """Every rank holds the whole model; DistributedDataParallel averages the gradients in backward."""

    name = "ddp"

    def __init__(self, config: MultiGPUConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.user_model: nn.Module | None = None
        self._patched: list[nn.Module] = []

    def setup(self, trainer: Trainer, loader: Iterable) -> None:
        trainer.set_device(self.device)
        model = trainer.model.to(self.device)  # set_device moves nothing where the trainer named this device already
        self.user_model = trainer.model = model
        if self.config.activation_checkpointing:
            self._patched = checkpoint_blocks(model, find_blocks(model, self.config.block_classes))
        if any(p.requires_grad for p in model.parameters()):  # DDP refuses a module with nothing to train
            options = {"find_unused_parameters": self.config.find_unused_parameters, **self.config.ddp_options}
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            trainer.model = DistributedDataParallel(model, device_ids=device_ids, **options)
        trainer.strategy = self

    def teardown(self, trainer: Trainer, completed: bool, keep: bool = True) -> None:
        restore_blocks(self._patched)
        self._patched = []
        if self.user_model is not None:
            trainer.model = self.user_model  # the user's module again: usable after the process group is gone
        trainer.strategy = Strategy()


# ---------------------------------------------------------------------------------------------- FSDP
class FSDPStrategy(Strategy):
    """Parameters, gradients and optimizer state sharded over the ranks (FSDP2 `fully_shard`, DTensor)."""

    name = "fsdp"
    sharded = True

    def __init__(self, config: MultiGPUConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.user_model: nn.Module | None = None
        self.module: nn.Module | None = None  # the sharded copy the loop trains
        self._user_params: list[list[nn.Parameter]] = []
        self._user_state: Any = None

    # ------------------------------------------------------------------ setting up
    def setup(self, trainer: Trainer, loader: Iterable) -> None:
        check_fsdp_run(trainer, loader)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        user = trainer.model
        self.user_model = user
        self.module = self._shard(user, trainer.config.precision)
        self._point_optimizer_at_shards(trainer.optimizer, user, self.module)
        trainer.model = self.module
        trainer.strategy = self
        trainer.set_device(self.device, move_model=False)  # the shards are in place; the user's module stays put

    def _shard(self, user: nn.Module, precision: str) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        blocks = find_blocks(user, self.config.block_classes)
        module = meta_copy(user)
        if self.config.activation_checkpointing:
            checkpoint_blocks(module, blocks)
        half = _HALF.get(precision)
        policy = MixedPrecisionPolicy()
        if half is not None:
            policy = MixedPrecisionPolicy(
                param_dtype=half, reduce_dtype=torch.float32 if self.config.reduce_in_fp32 else half
            )
        options = {
            "mesh": init_device_mesh(self.device.type, (dist.get_world_size(),)),
            "reshard_after_forward": self.config.reshard_after_forward,
            "mp_policy": policy,
            "offload_policy": CPUOffloadPolicy() if self.config.cpu_offload else OffloadPolicy(),
        }
        for name in blocks:  # children before parents, the root last
            fully_shard(module.get_submodule(name), **options)
        fully_shard(module, **options)
        module.to_empty(device="cpu" if self.config.cpu_offload else self.device)  # only this rank's shards
        _fill_from_rank_zero(module, user, self.device)
        return module

    def _point_optimizer_at_shards(self, optimizer: Any, user: nn.Module, module: nn.Module) -> None:
        """The user's optimizer updates the shards for the run; its state, if any, is sharded like them."""
        if optimizer is None:
            return
        check_fsdp_optimizer(optimizer, user)
        names = {id(p): name for name, p in user.named_parameters()}
        shards = dict(module.named_parameters())
        self._user_params = [list(group["params"]) for group in optimizer.param_groups]
        self._user_state = optimizer.state
        state: defaultdict = defaultdict(dict)
        for param, values in optimizer.state.items():
            shard = shards[names[id(param)]]
            state[shard] = {key: _shard_like(value, param, shard) for key, value in values.items()}
        for group in optimizer.param_groups:
            group["params"] = [shards[names[id(p)]] for p in group["params"]]
        optimizer.state = state

    # ------------------------------------------------------------------ what the loop asks
    def no_sync(self, model: nn.Module) -> Any:
        return self._accumulating()

    @contextmanager
    def _accumulating(self) -> Iterator[None]:
        """No reduce-scatter, and parameters kept gathered, until the group's last micro-batch."""
        module = self.module
        module.set_requires_gradient_sync(False)
        module.set_reshard_after_backward(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
            module.set_reshard_after_backward(True)

    def rank_zero_copy(self, tensors: Mapping[str, torch.Tensor], copy: bool = True) -> dict[str, torch.Tensor] | None:
        rank_zero = dist.get_rank() == 0
        out: dict[str, torch.Tensor] | None = {} if rank_zero else None
        with torch.no_grad():
            for key, value in tensors.items():
                value = whole(value)  # a collective for a shard: every rank, in the same order
                if out is not None:
                    out[key] = value.detach().to("cpu", copy=copy)
        return out

    def laid_out_like(self, value: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import DTensor, distribute_tensor

        if isinstance(reference, DTensor) and not isinstance(value, DTensor):
            local = value.to(reference.device, reference.dtype)
            return distribute_tensor(local, reference.device_mesh, reference.placements, src_data_rank=None)
        return value.to(reference.device, reference.dtype)

    def read_checkpoint(self, path: Path, trainer: Trainer) -> tuple[dict[str, Any], dict[str, Any]]:
        """A sharded checkpoint: each rank reads the pieces of its shards (any number of ranks wrote it). A whole
        one (from one process, or DDP): each rank reads it and keeps its own pieces."""
        from zae_engine.checkpoint.formats import is_checkpoint_folder, read_meta
        from zae_engine.checkpoint.sharded import read_sharded
        from zae_engine.checkpoint.store import read_any

        held = _Held(trainer)
        if is_checkpoint_folder(path):
            meta = read_meta(path)
            if meta["save_format"] == "sharded":
                return read_sharded(path, meta, layout=held.empty), meta
        state, meta = read_any(path)
        return held.localize(state, repr(str(path))), meta

    # ------------------------------------------------------------------ tearing down
    def teardown(self, trainer: Trainer, completed: bool, keep: bool = True) -> None:
        """Give the trainer the user's objects back: trained, whole again, when the run completed on every rank.

        `keep=False` (a spawned worker other than rank 0, whose objects nobody reads): it takes part in the
        gathers but keeps nothing, so only rank 0 holds the whole state at the end.
        """
        if self.user_model is None:
            return
        addon_states: dict[str, Any] = {}
        if completed and self.module is not None:  # every rank got here: the gathers below meet
            with torch.no_grad():
                _copy_whole(self.module, self.user_model, keep)
                self._optimizer_back(trainer.optimizer, gather=True, keep=keep)
                for name, addon in trainer.addons.items():
                    state = addon.state_dict()
                    if _holds_shards(state):
                        whole_state = whole_tree(state)
                        if keep:
                            addon_states[name] = whole_state
        else:
            self._optimizer_back(trainer.optimizer, gather=False, keep=False)
        trainer.model = self.user_model
        trainer.strategy = Strategy()
        for name, state in addon_states.items():
            trainer.addons[name].load_state_dict(state)
        self.module = None

    def _optimizer_back(self, optimizer: Any, gather: bool, keep: bool) -> None:
        if optimizer is None or not self._user_params:
            return
        state: Any = self._user_state  # not kept (or the run failed): the optimizer is as it was before run()
        if gather:
            gathered: defaultdict = defaultdict(dict)
            for group, params in zip(optimizer.param_groups, self._user_params):
                for shard, param in zip(group["params"], params):
                    if shard in optimizer.state:
                        values = {k: _on(whole(v), param) for k, v in optimizer.state[shard].items()}
                        if keep:
                            gathered[param] = values
            if keep:
                state = gathered
        for group, params in zip(optimizer.param_groups, self._user_params):
            group["params"] = params
        optimizer.state = state
        self._user_params, self._user_state = [], None


# ---------------------------------------------------------------------------------------------- checks
def check_fsdp(trainer: Trainer) -> None:
    """What FSDP cannot do with this trainer, said before anything starts."""
    config = trainer.addon("mpu").config
    find_blocks(trainer.model, config.block_classes)  # names every class it cannot find
    check_fsdp_optimizer(trainer.optimizer, trainer.model)


def check_fsdp_optimizer(optimizer: Any, model: nn.Module) -> None:
    if optimizer is None:
        return
    owned = {id(p) for p in model.parameters()}
    strangers = [p for group in optimizer.param_groups for p in group["params"] if id(p) not in owned]
    if strangers:
        raise ConfigError(
            f"MultiGPUAddon: the optimizer updates {len(strangers)} tensor(s) that are not parameters of the model "
            f"(the first of shape {tuple(strangers[0].shape)}); strategy='fsdp' shards the model's parameters only. "
            "Make them parameters of the model (an nn.Parameter attribute of a module), or use strategy='ddp'"
        )


def check_fsdp_run(trainer: Trainer, loader: Iterable | None) -> None:
    """What a run under FSDP cannot do with these add-ons and this training loader (None: not checked)."""
    manager = trainer.addons.get("state_manager")
    if manager is not None and getattr(manager.config, "async_save", False):
        raise ConfigError(
            "MultiGPUAddon: strategy='fsdp' writes checkpoints as every rank's shards, together and synchronously; "
            "the state manager's async_save=True would write them from a background thread on each rank. "
            "Set async_save=False, or use strategy='ddp'"
        )
    if loader is not None:
        check_fsdp_loader(trainer, loader)


def check_fsdp_loader(trainer: Trainer, loader: Iterable) -> None:
    if trainer.config.grad_accum_steps > 1 and trainer.mode == "train" and not _sized(loader):
        raise ConfigError(
            "MultiGPUAddon: strategy='fsdp' with grad_accum_steps > 1 needs a training loader with a length: a group "
            "cut short by an unexpected end would hold gradients FSDP never reduced. Use a DataLoader over a sized "
            "dataset (shard_data=True makes one), or grad_accum_steps=1"
        )


# ---------------------------------------------------------------------------------------------- checkpoints
_OPTIMIZER_STATE = re.compile(r"state\.optimizer\.state\.(\d+)\.")


class _Held:
    """Which tensors of the trainer's state this rank holds as shards, by their key in a checkpoint."""

    def __init__(self, trainer: Trainer) -> None:
        from zae_engine.checkpoint.tree import split_tensors

        _, self.tensors = split_tensors(trainer.state_dict(), keep=True)  # the keys a checkpoint of it has
        optimizer = trainer.optimizer
        # moments the optimizer has not made yet (no step before the resume) are sharded like their parameter
        self.params = [p for g in optimizer.param_groups for p in g["params"]] if optimizer is not None else []

    def shard_of(self, key: str, size: Any) -> Any:
        from torch.distributed.tensor import DTensor

        held = self.tensors.get(key)
        if held is None and (match := _OPTIMIZER_STATE.match(key)) and int(match[1]) < len(self.params):
            held = self.params[int(match[1])]
        if isinstance(held, DTensor) and tuple(held.shape) == tuple(size):
            return held
        return None  # whole on every rank (or a shape the load will report as not fitting)

    def empty(self, key: str, size: torch.Size, dtype: torch.dtype) -> torch.Tensor | None:
        """What a sharded read fills for `key`: this rank's pieces, laid out like the shard it holds."""
        from torch.distributed.tensor import zeros

        held = self.shard_of(key, size)
        if held is None:
            return None
        return zeros(size, dtype=dtype, device_mesh=held.device_mesh, placements=held.placements)

    def localize(self, state: dict[str, Any], source: str) -> dict[str, Any]:
        """A whole state with every tensor this rank holds sharded cut to its own piece (no communication)."""
        from torch.distributed.tensor import distribute_tensor

        from zae_engine.checkpoint.tree import join_tensors, split_tensors

        skeleton, tensors = split_tensors(state, keep=True)
        for key, value in tensors.items():
            held = self.shard_of(key, value.shape)
            if held is not None:
                local = value.to(held.device)
                tensors[key] = distribute_tensor(local, held.device_mesh, held.placements, src_data_rank=None)
        return join_tensors(skeleton, tensors, source)


# ---------------------------------------------------------------------------------------------- helpers
def meta_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters and buffers are on the meta device: its structure at no memory cost.

    Ties survive (a shared parameter maps to one meta parameter); the original is not touched.
    """
    memo: dict[int, Any] = {}
    for param in module.parameters():
        memo[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
    for buffer in module.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device="meta")
    return copy.deepcopy(module, memo)


def _fill_from_rank_zero(module: nn.Module, user: nn.Module, device: torch.device) -> None:
    """Rank 0's weights and buffers (non-persistent ones too) into every rank's shards and buffers, one tensor at a
    time (as DDP starts, the user's module on the other ranks gets rank 0's values too)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    where = device if dist.get_backend() == "nccl" else torch.device("cpu")
    with torch.no_grad():
        for kind, name, tensor in [
            *(("parameter", n, t) for n, t in user.named_parameters()),
            *(("buffer", n, t) for n, t in user.named_buffers()),
        ]:
            whole = tensor.detach().to(where)
            dist.broadcast(whole, src=0)
            if whole.data_ptr() != tensor.data_ptr():
                tensor.copy_(whole)
            target = module.get_parameter(name) if kind == "parameter" else module.get_buffer(name)
            if isinstance(target, DTensor):  # this rank's piece of it, cut locally
                local = distribute_tensor(
                    whole.to(target.device), target.device_mesh, target.placements, src_data_rank=None
                )
                target.to_local().copy_(local.to_local())
            else:
                target.copy_(whole)


def _copy_whole(module: nn.Module, user: nn.Module, keep: bool) -> None:
    for name, shard in module.named_parameters():
        value = whole(shard)  # a collective: every rank, kept or not
        if keep:
            user.get_parameter(name).copy_(value)
    if keep:
        for name, buffer in module.named_buffers():
            user.get_buffer(name).copy_(buffer)


def whole(value: Any) -> Any:
    """The whole tensor behind a shard (a collective); anything else as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def whole_tree(tree: Any) -> Any:
    """`tree` with every shard replaced by its whole tensor; every rank must walk the same tree."""
    if isinstance(tree, dict):
        return {key: whole_tree(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(whole_tree(value) for value in tree)
    return whole(tree)


def _holds_shards(tree: Any) -> bool:
    from torch.distributed.tensor import DTensor

    if isinstance(tree, dict):
        return any(_holds_shards(value) for value in tree.values())
    if isinstance(tree, (list, tuple)):
        return any(_holds_shards(value) for value in tree)
    return isinstance(tree, DTensor)


def _shard_like(value: Any, param: torch.Tensor, shard: torch.Tensor) -> Any:
    """An optimizer state tensor shaped like its parameter, sharded like that parameter (locally: no traffic)."""
    from torch.distributed.tensor import distribute_tensor

    if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape != param.shape:
        return value
    local = value.detach().to(shard.device)
    return distribute_tensor(local, shard.device_mesh, shard.placements, src_data_rank=None)


def _on(value: Any, param: torch.Tensor) -> Any:
    return value.detach().to(param.device) if isinstance(value, torch.Tensor) and value.dim() else value


def _sized(loader: Iterable) -> bool:
    try:
        len(loader)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True
