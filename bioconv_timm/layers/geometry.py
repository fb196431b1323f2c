"""The LC layer's geometry, shared by its operators and its module: argument pairs and the output size."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

from ..checks import ModelArgError, short_repr

IntPair = Union[int, Tuple[int, int], Sequence[int]]

__all__ = ['IntPair', 'conv_output_size', 'pair']


def pair(value: IntPair, name: str) -> Tuple[int, int]:
    """``value`` as a pair of ints (an int means both); a ModelArgError naming ``name`` otherwise."""
    if isinstance(value, int):
        result = (value, value)
    else:
        try:
            result = tuple(int(v) for v in value)
        except (TypeError, ValueError):  # 'same', None, a float string: name the argument, not int()'s complaint
            result = ()
        if len(result) != 2:
            raise ModelArgError(f'{name} must be an int or a pair of ints, got {short_repr(value)}')
    return result  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a convolution along one axis (same formula as ``nn.Conv2d``):
    ``(size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
