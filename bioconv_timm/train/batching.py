"""Batches: a reproducible DataLoader for one epoch (``make_loader``), "n reps" batches of translated copies,
and the samplers that fix the order from ``(seed, epoch)`` alone."""
from __future__ import annotations

import functools
import random
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .datasets import DatasetError
from .seeds import mix_seed, seeded_permutation

__all__ = ['make_loader', 'RepeatedViews', 'collate_views', 'EpochShuffleSampler']


class RepeatedViews(Dataset):
    """Items ``(views (reps, C, H, W), label)``: ``reps`` independently augmented copies of one image.

    Datasets with ``raw``/``transform`` (:class:`TransformedSubset`) load each image once and augment
    it ``reps`` times; others are indexed ``reps`` times.
    """

    def __init__(self, dataset: Dataset, reps: int) -> None:
        self.dataset = dataset
        self.reps = reps

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        transform = getattr(self.dataset, 'transform', None)
        if hasattr(self.dataset, 'raw') and transform is not None:
            image, label = self.dataset.raw(index)
            views = [transform(image) for _ in range(self.reps)]
        else:
            items = [self.dataset[index] for _ in range(self.reps)]
            views, label = [v for v, _ in items], items[0][1]
        return torch.stack(views), label


def collate_views(batch: List[Tuple[torch.Tensor, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B/reps items of (reps, C, H, W)) -> images (B, C, H, W), labels (B,); copies are adjacent."""
    views = torch.stack([v for v, _ in batch])  # (B/reps, reps, C, H, W)
    labels = torch.tensor([y for _, y in batch], dtype=torch.long)
    return views.flatten(0, 1), labels.repeat_interleave(views.shape[1])


class EpochShuffleSampler(Sampler[int]):
    """A random order of ``range(n)`` that depends only on ``(seed, epoch)``, the same on every iteration."""

    def __init__(self, n: int, seed: int = 0, epoch: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch

    def __iter__(self) -> Iterator[int]:
        return iter(seeded_permutation(self.n, self.seed, 1_000_003, self.epoch).tolist())

    def __len__(self) -> int:
        return self.n


class _ShardSampler(Sampler[int]):
    """Every ``world``-th index from ``rank``, in order, without padding (why: exact distributed eval
    when per-rank sums are all-reduced; DistributedSampler would repeat samples to even the shards)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _SeededItems(Dataset):
    """``dataset[i]`` drawn with torch's CPU RNG seeded from ``(seed, epoch, i)`` and restored afterwards.

    Why: an item's augmentation then depends on the run's seed, the epoch and the item, not on which process
    loads it or what was drawn before, so ``num_workers=0`` and ``num_workers=N`` give the same batches (and a
    resumed run the same images). torchvision's random transforms draw from that RNG.
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        generator = torch.default_generator  # the CPU one only: CUDA generators are not touched
        state = generator.get_state()
        generator.manual_seed(mix_seed(self.seed, self.epoch, 2_000_003, int(index)))
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)  # the caller's RNG stream goes on as if nothing was drawn


def _seed_worker(worker_id: int, base_seed: int) -> None:
    """Seed a worker's torch, numpy and python RNGs from the loader's (seed, epoch, rank) and its id."""
    seed = mix_seed(base_seed, worker_id)
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, train: bool, reps: int = 1, num_workers: int = 0,
                seed: int = 0, epoch: int = 0, distributed: bool = False,
                drop_last: Optional[bool] = None) -> DataLoader:
    """A DataLoader for one epoch of ``dataset``.

    Args:
        dataset: items (image (C, H, W), int label), e.g. ``bundle.train`` / ``bundle.eval``.
        batch_size: images per batch (per process when distributed), counting the rep copies.
        train: shuffle (order fixed by ``(seed, epoch)``), augment each item with torch's RNG seeded from
            ``(seed, epoch, item index)`` (so the batches do not depend on ``num_workers`` or on the global RNG)
            and, by default, drop the last partial batch. Evaluation loaders never shuffle or drop.
        reps: "n reps" (train only, ignored for eval): each batch holds ``batch_size // reps`` distinct
            images, each as ``reps`` independently augmented copies (adjacent in the batch). Every
            image still appears once per epoch, so an epoch has ``reps`` times as many batches (the
            paper: repetitions lengthen training).
        num_workers: worker processes; result-neutral (their other RNGs are seeded from
            ``(seed, epoch, rank, worker id)``).
        seed, epoch: the shuffling order and augmentations of this epoch; resuming at ``epoch``
            replays the same batches.
        distributed: shard over the initialized process group: DistributedSampler(shuffle=True, seed)
            with ``set_epoch(epoch)`` for training, contiguous-stride shards without padding for eval.
        drop_last: default ``train``.
    Returns:
        A DataLoader yielding (images (B, C, H, W), labels (B,)).
    """
    if batch_size < 1:
        raise DatasetError(f'batch_size must be >= 1, got {batch_size}')
    if drop_last is None:
        drop_last = train
    if drop_last and not train:
        raise ValueError('evaluation loaders never drop samples: drop_last must be False when train=False')
    collate_fn = None
    if train and reps > 1:
        if batch_size % reps:
            raise DatasetError(f'batch_size ({batch_size}) must be a multiple of reps ({reps})')
        dataset, batch_size, collate_fn = RepeatedViews(dataset, reps), batch_size // reps, collate_views
    elif reps < 1:
        raise DatasetError(f'reps must be >= 1, got {reps}')

    rank, world = 0, 1
    sampler: Optional[Sampler] = None
    if distributed:
        import torch.distributed as dist
        from torch.utils.data.distributed import DistributedSampler
        rank, world = dist.get_rank(), dist.get_world_size()
        if train:
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
        else:
            sampler = _ShardSampler(len(dataset), rank, world)
    elif train:
        sampler = EpochShuffleSampler(len(dataset), seed, epoch)
    if train:
        dataset = _SeededItems(dataset, seed, epoch)
    base_seed = mix_seed(seed, epoch, rank)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(), drop_last=drop_last, persistent_workers=False,
        # The generator only keeps DataLoader from drawing its (unused) base seed from the global RNG.
        generator=torch.Generator().manual_seed(base_seed),
        worker_init_fn=functools.partial(_seed_worker, base_seed=base_seed) if num_workers > 0 else None,
    )
