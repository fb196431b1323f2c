"""A tripwire for tests of the size limit: inside ``no_big_allocation()``, asking torch for a tensor of more than
``most`` elements anywhere but on the meta device raises :class:`BigAllocation` instead of allocating it.

So a test of "refused before memory is taken" cannot take the memory even when the check it tests is missing: it fails
with BigAllocation (naming the size) instead of trying terabytes.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch.overrides import TorchFunctionMode

# The factory functions constructors allocate parameters and buffers with.
_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.empty_strided,
              torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full}


class BigAllocation(AssertionError):
    """A tensor larger than the tripwire allows was about to be allocated."""


def _numel(func: Any, args: tuple, kwargs: dict) -> int:
    size: Any = kwargs.get('size')
    if size is None:
        rest = args[1:] if func in (torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
                                    torch.Tensor.new_full) else args
        if func in (torch.full, torch.Tensor.new_full):
            rest = rest[:1]
        size = rest[0] if len(rest) == 1 and not isinstance(rest[0], int) else rest
    try:
        return math.prod(int(s) for s in size)
    except TypeError:
        return 0


class no_big_allocation(TorchFunctionMode):
    """``with no_big_allocation(most=1_000_000): ...``: no tensor over ``most`` elements off the meta device."""

    def __init__(self, most: int = 1_000_000) -> None:
        super().__init__()
        self.most = most
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs: Optional[dict] = None):
        kwargs = kwargs or {}
        if func in _FACTORIES:
            device = kwargs.get('device')
            if device is None and func in (torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
                                           torch.Tensor.new_full):
                device = args[0].device
            if device is None or torch.device(device).type != 'meta':
                n = _numel(func, args, kwargs)
                self.largest = max(self.largest, n)
                if n > self.most:
                    raise BigAllocation(f'{getattr(func, "__name__", func)} of {n:,} elements (over {self.most:,}) '
                                        'was about to be allocated')
        return func(*args, **kwargs)
