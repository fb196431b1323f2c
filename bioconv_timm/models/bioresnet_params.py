"""The parameter count of a paper ResNet (``BioResNet``) from its arguments: the geometry alone, no model.

It walks the layers ``BioResNet`` would build, allocating nothing, so that the size limit is checked before any
memory is taken.
"""
from __future__ import annotations

from typing import Sequence, Tuple

from ..checks import ModelArgError
from ..layers import LocallyConnected2d, conv_output_size

__all__ = ['out_size', 'bioresnet_num_params']


def out_size(size: Tuple[int, int], kernel: int, stride: int, padding: int) -> Tuple[int, int]:
    """(H, W) after a square ``kernel`` with this stride and padding (a conv's, an LC layer's, a pool's)."""
    return tuple(conv_output_size(n, kernel, stride, padding) for n in size)  # type: ignore[return-value]


def _too_small(where: str, img_size: Tuple[int, int], what: str) -> ModelArgError:
    return ModelArgError(f'{where}: img_size={img_size} is too small: {what}; pass a larger img_size=')


def _conv_numel(layer_type: str, cin: int, cout: int, kernel: int, stride: int, padding: int,
                size: Tuple[int, int]) -> Tuple[int, Tuple[int, int]]:
    """(parameters, output (H, W)) of one bias-free conv or LC layer of a BioResNet."""
    out = out_size(size, kernel, stride, padding)
    if layer_type == 'lc':
        return LocallyConnected2d.num_params(out, cout, (kernel, kernel), cin), out
    return cout * cin * kernel * kernel, out


def bioresnet_num_params(layers: Sequence[int], channels: Sequence[int], stem: str, stem_stride: int,
                         layer_type: str, stem_type: str, img_size: Tuple[int, int], in_chans: int, num_classes: int,
                         global_pool: str = 'avg', where: str = 'BioResNet') -> int:
    """The parameter count of ``BioResNet(...)`` with these (checked) arguments, from the geometry alone.

    Walks the layers the constructor builds (stem, blocks with their projection shortcuts, BatchNorms, classifier)
    without allocating, so the size limit is checked before any memory is taken. Raises ModelArgError when
    ``img_size`` leaves a stage empty.
    """
    if stem == 'cifar':
        total, size = _conv_numel(stem_type, in_chans, channels[0], 3, stem_stride, 1, img_size)
    else:
        total, size = _conv_numel(stem_type, in_chans, channels[0], 7, 2, 3, img_size)
    if min(size) < 1:
        raise _too_small(where, img_size, 'the stem output would be empty')
    total += 2 * channels[0]  # stem BatchNorm (weight, bias)
    if stem == 'imagenet':
        size = out_size(size, 3, 2, 1)  # max-pool
    cin = channels[0]
    for i, (depth, width) in enumerate(zip(layers, channels)):
        stride = 1 if i == 0 else 2
        if min(size) < 2 and stride == 2:
            raise _too_small(where, img_size, f'stage {i + 1} would be empty')
        for j in range(depth):
            s = stride if j == 0 else 1
            n1, out = _conv_numel(layer_type, cin, width, 3, s, 1, size)
            n2, _ = _conv_numel(layer_type, width, width, 3, 1, 1, out)
            total += n1 + n2 + 4 * width
            if s != 1 or cin != width:
                total += _conv_numel(layer_type, cin, width, 1, s, 0, size)[0] + 2 * width
            size, cin = out, width
    pooled = cin * (2 if global_pool == 'catavgmax' else 1)
    if num_classes > 0:
        total += pooled * num_classes + num_classes
    return total

