"""Independent random streams from a run's seed: ``mix_seed(seed, epoch, ...)`` spreads several ints into one
63-bit seed (``seed + epoch`` would collide across runs), and ``seeded_permutation(n, seed, stream)`` is the
permutation of ``range(n)`` such a seed gives. The datasets' splits and subsets, the shuffling order and each
item's augmentation all draw from them, so none depends on the global RNG."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ['mix_seed', 'seeded_permutation']


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from non-negative ints (why: seed + epoch would collide across runs)."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seeded_permutation(n: int, *seed: int) -> torch.Tensor:
    """A permutation of ``range(n)`` drawn from ``mix_seed(*seed)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(*seed)))
