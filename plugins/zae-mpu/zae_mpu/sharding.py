"""Giving each rank its own shard of the user's DataLoader, keeping every option the user chose.

Each rank gets `batch_size` samples per step (the global batch is `batch_size x world_size`), and every rank
gets the same number of batches (DistributedSampler pads the last shard by repeating a few samples), so no
rank waits for a collective another rank never reaches.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from zae_engine.errors import ConfigError

# torch's own, and torchdata's stateful twins (a StatefulDataLoader, as zae run builds by default, is sharded too)
_PLAIN_BATCHING = {"torch.utils.data.sampler.BatchSampler", "torchdata.stateful_dataloader.sampler.BatchSampler"}
_SHUFFLING = {"torch.utils.data.sampler.RandomSampler", "torchdata.stateful_dataloader.sampler.RandomSampler"}
# DataLoader options copied as they are; the sampler options are rebuilt.
_KEPT = ("num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn", "multiprocessing_context", "generator")
_KEPT_WITH_WORKERS = ("prefetch_factor", "persistent_workers")
_KEPT_IF_PRESENT = ("pin_memory_device", "in_order")


def shard_loader(
    loader: Iterable | None, rank: int, world_size: int, seed: int, what: str
) -> tuple[Iterable | None, DistributedSampler | None]:
    """(`loader` re-made over a DistributedSampler, that sampler); loaders already sharded pass through."""
    if loader is None:
        return None, None
    if not isinstance(loader, DataLoader):
        raise ConfigError(
            f"MultiGPUAddon: the {what} is a {type(loader).__name__}, not a torch DataLoader, so it cannot be sharded "
            "across ranks. Pass a DataLoader, or shard it yourself (zae_engine.distributed.get_rank()) and set "
            "shard_data=False"
        )
    if isinstance(loader.sampler, DistributedSampler):
        return loader, loader.sampler
    if isinstance(loader.dataset, IterableDataset):
        raise ConfigError(
            f"MultiGPUAddon: the {what} reads an IterableDataset, which a DistributedSampler cannot split. "
            "Make the dataset yield only this rank's items (zae_engine.distributed.get_rank()) and set shard_data=False"
        )
    if loader.batch_size is None or _kind(loader.batch_sampler) not in _PLAIN_BATCHING:
        raise ConfigError(
            f"MultiGPUAddon: the {what} uses a custom batch_sampler ({type(loader.batch_sampler).__name__}), which "
            "cannot be split automatically. Make it rank-aware yourself and set shard_data=False"
        )
    shuffle = _kind(loader.sampler) in _SHUFFLING or getattr(loader.sampler, "shuffle", False) is True
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    options = {name: getattr(loader, name) for name in _KEPT}
    if loader.num_workers > 0:
        options.update({name: getattr(loader, name) for name in _KEPT_WITH_WORKERS})
    options.update({name: getattr(loader, name) for name in _KEPT_IF_PRESENT if hasattr(loader, name)})
    sharded = DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last, **options
    )
    return sharded, sampler


def _kind(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
