"""The arguments of the paper's ResNets (``BioResNet``), checked and normalized before anything is built, and the
size check on the parameter count they give (:mod:`.bioresnet_params`)."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Tuple, Union

from ..checks import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE, ModelArgError, check_arg, check_device, check_dtype
from ..checks import check_size, is_int, short_repr
from .bioresnet_params import bioresnet_num_params
from .builder_args import check_pool

__all__ = ['MAX_BLOCKS', 'ResNetArgs', 'check_resnet_args']

MAX_BLOCKS = 256  # blocks per stage: 4x ResNet-1202's 200; more would build for minutes


class ResNetArgs(NamedTuple):
    """BioResNet's architecture arguments, checked and normalized (pairs as tuples, ``stem_type`` resolved)."""
    layers: Tuple[int, ...]
    channels: Tuple[int, ...]
    stem: str
    stem_stride: int
    layer_type: str
    stem_type: str
    img_size: Tuple[int, int]
    in_chans: int
    num_classes: int
    global_pool: str
    drop_rate: float
    sleep_every: Optional[int]

    def num_params(self, where: str) -> int:
        """The parameter count of the BioResNet these arguments build (:func:`bioresnet_num_params`)."""
        return bioresnet_num_params(self.layers, self.channels, self.stem, self.stem_stride, self.layer_type,
                                    self.stem_type, self.img_size, self.in_chans, self.num_classes,
                                    self.global_pool, where)

    def check_size(self, where: str, limit: int) -> None:
        """ModelSizeError (one line: the estimate, the limit, how to raise it) above ``limit`` parameters."""
        lc = 'lc' in (self.layer_type, self.stem_type)
        check_size(where, self.num_params(where), limit,
                   f'img_size={self.img_size}, in_chans={self.in_chans}, num_classes={self.num_classes}',
                   fix='a smaller img_size (LC weights grow with the number of locations)' if lc
                   else 'fewer channels or classes')


def check_resnet_args(where: str, layers: Sequence[int] = (3, 3, 3), channels: Sequence[int] = (16, 32, 64),
                      stem: str = 'cifar', stem_stride: int = 1, layer_type: str = 'conv',
                      stem_type: Optional[str] = None, img_size: Union[int, Tuple[int, int]] = 32,
                      in_chans: int = 3, num_classes: int = 10, global_pool: str = 'avg', drop_rate: float = 0.0,
                      sleep_every: Optional[int] = None, device: Any = None, dtype: Any = None,
                      max_params: Any = None) -> ResNetArgs:
    """Check every BioResNet argument (one ModelArgError line naming the bad one); return them normalized.
    ``max_params`` is checked by the caller (it is not an architecture argument)."""
    layers = check_arg(where, 'layers', layers, 'ints', lo=1, hi=MAX_BLOCKS, length=(1, 8),
                       fix='blocks per stage, e.g. (3, 3, 3) for ResNet20')
    channels = check_arg(where, 'channels', channels, 'ints', lo=1, hi=MAX_CHANNELS, length=(1, 8),
                         fix='channels per stage, e.g. (16, 32, 64)')
    if len(layers) != len(channels):
        raise ModelArgError(f'{where}: layers={layers} and channels={channels} must be the same length (one entry '
                            'per stage)')
    stem = check_arg(where, 'stem', stem, 'choice', choices=('cifar', 'imagenet'))
    layer_type = check_arg(where, 'layer_type', layer_type, 'choice', choices=('conv', 'lc'))
    stem_type = check_arg(where, 'stem_type', stem_type, 'choice', choices=(None, 'conv', 'lc'))
    if not (is_int(stem_stride) and stem_stride in (1, 2)) or (stem == 'imagenet' and stem_stride != 1):
        raise ModelArgError(f"{where}: stem_stride={short_repr(stem_stride)} is invalid: the 'cifar' stem takes 1 or 2 "
                            "(2 quarters the cost of small LC models), the 'imagenet' stem is always 7x7 stride 2")
    if sleep_every is not None:
        sleep_every = check_arg(where, 'sleep_every', sleep_every, 'int', lo=1, hi=10 ** 9,
                                fix='optimizer steps between sleep phases, or None')
        if layer_type != 'lc':
            raise ModelArgError(f'{where}: sleep_every={sleep_every} is invalid for a convolutional model: only LC '
                                "models sleep (layer_type='lc')")
    check_device(where, device)
    check_dtype(where, dtype)
    return ResNetArgs(
        layers=layers, channels=channels, stem=stem, stem_stride=int(stem_stride), layer_type=layer_type,
        stem_type=stem_type or layer_type,
        img_size=check_arg(where, 'img_size', img_size, 'pair', lo=1, hi=MAX_SIDE,
                           fix='the (H, W) of the input images, e.g. img_size=32'),
        in_chans=check_arg(where, 'in_chans', in_chans, 'int', lo=1, hi=MAX_CHANNELS),
        num_classes=check_arg(where, 'num_classes', num_classes, 'int', lo=0, hi=MAX_CLASSES,
                              fix='0 gives no classifier (pooled features)'),
        global_pool=check_pool(where, global_pool, num_classes),
        drop_rate=check_arg(where, 'drop_rate', drop_rate, 'real', lo=0.0, hi=1.0),
        sleep_every=sleep_every)
