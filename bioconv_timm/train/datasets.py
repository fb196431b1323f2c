"""The datasets' registry: one :class:`DatasetSpec` per dataset, what is known of it before its files are read.

Plain data, importable without torch: the settings (``TrainConfig``'s ``--dataset`` choices, the defaults a run
fills in) and the command line read it; :mod:`.data` holds the loaders the specs name and builds the datasets.
``DATASETS``, ``DEFAULT_IMG_SIZE``, ``DATASET_SHAPES``, ``VAL_SIZES`` and ``DEFAULT_BATCH`` are read-only views of
``DATASET_SPECS``.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

from ..errors import UserValueError
# per-channel pixel statistics: one place for the loaders and the models' cfgs
from ..pixel_stats import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, FASHION_MNIST_MEAN,
                           FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD)

__all__ = ['DatasetError', 'DatasetSpec', 'DATASET_SPECS', 'DATASETS', 'DEFAULT_IMG_SIZE', 'DATASET_SHAPES',
           'VAL_SIZES', 'DEFAULT_BATCH', 'VAL_FRACTION', 'dataset_spec', 'default_batch_size',
           'canonical_dataset_name', 'canvas_stats']

FASHION_MNIST_SIDE = 28
# 40x40: each item can move 12 pixels along each axis (13 x 13 = 169 positions, against the 9 x 9 of a pad-4
# crop, and nearly half an item's side), while the LC ResNet-8 of the compare preset costs (40/28)^2 = 2.0x its
# 28x28 compute (48x48 would be 2.9x); 40 is a multiple of the network's total stride 8 (grids 20, 10, 5).
SHIFTED_CANVAS = 40
VAL_FRACTION = 0.1  # held out by split='val' when a dataset's spec has no val_size (digits, fashion-mnist)


class DatasetError(UserValueError):
    """A dataset is unknown, missing or malformed; the message says what is expected where."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to load it and what is known about it before its files are read.

    ``loader(spec, data_dir, download, img_size, pad)`` returns ``train.data.LoadedData``; ``img_size`` None
    means ``spec.img_size``. ``loader`` is that function, or its ``'module:function'`` name (the built-in
    loaders, so that the registry imports no torch). ``mean`` / ``std`` are per channel, of pixel values in
    [0, 1], at the default ``img_size``; None where they are computed from the training images when loaded
    (digits).
    """
    name: str
    loader: Union[str, Callable[..., Any]]
    mean: Optional[Tuple[float, ...]]
    std: Optional[Tuple[float, ...]]
    img_size: int                # network input side when img_size is not given (canvas datasets: the canvas)
    in_chans: int
    num_classes: int             # TinyImageNet / ImageNet: the standard count (a folder with others gets its own)
    default_batch: int           # images per optimizer step when a run does not set batch_size
    val_size: Optional[int]      # held out by split='val'; None: VAL_FRACTION of the training set
    description: str
    aliases: Tuple[str, ...] = ()

    def load_function(self) -> Callable[..., Any]:
        """The loader function (imported when its ``'module:function'`` name is given)."""
        if callable(self.loader):
            return self.loader
        module, _, name = self.loader.partition(':')
        return getattr(importlib.import_module(module), name)


def canvas_stats(mean: Sequence[float], std: Sequence[float], side: int,
                 canvas: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel (mean, std) of ``side`` x ``side`` images with stats (``mean``, ``std``) pasted on a black
    ``canvas`` x ``canvas``, rounded to 4 decimals. Exact wherever the images are pasted: a fraction
    r = side^2 / canvas^2 of the pixels are the images', the rest are 0, so the canvas mean is r * mean and its
    second moment r * (std^2 + mean^2)."""
    r = side * side / (canvas * canvas)
    stats = [(r * m, math.sqrt(max(r * (s * s + m * m) - (r * m) ** 2, 0.0))) for m, s in zip(mean, std)]
    return tuple(round(m, 4) for m, _ in stats), tuple(round(s, 4) for _, s in stats)


# ---------------------------------------------------------------------------------------------------
# The registry: one spec per dataset; everything else reads it

_LOADERS = 'bioconv_timm.train.dataset_loaders:'  # the module of the built-in loaders

DATASET_SPECS: Mapping[str, DatasetSpec] = MappingProxyType({spec.name: spec for spec in (
    DatasetSpec('digits', _LOADERS + 'load_digits', None, None, img_size=24, in_chans=1, num_classes=10,
                default_batch=64, val_size=None,
                description="scikit-learn's 1,797 handwritten 8x8 digits, enlarged 2x and pasted at a "
                'fixed random position on a 24x24 canvas (1,437 train / 360 test); embedded, no download'),
    DatasetSpec('fashion-mnist', _LOADERS + 'load_fashion_mnist', FASHION_MNIST_MEAN, FASHION_MNIST_STD,
                img_size=28, in_chans=1, num_classes=10, default_batch=128, val_size=None,
                description="Zalando's Fashion-MNIST: 60,000 train / 10,000 test centred 28x28 grey images",
                aliases=('fashion_mnist', 'fashionmnist')),
    DatasetSpec('fashion-mnist-shifted', _LOADERS + 'load_fashion_mnist_shifted',
                *canvas_stats(FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_SIDE, SHIFTED_CANVAS),
                img_size=SHIFTED_CANVAS, in_chans=1, num_classes=10, default_batch=128, val_size=None,
                description='Fashion-MNIST with each item at a fixed random position (drawn once per image) on a '
                f'black {SHIFTED_CANVAS}x{SHIFTED_CANVAS} canvas: position varies, train and test alike',
                aliases=('fashion_mnist_shifted', 'fashionmnist-shifted')),
    DatasetSpec('cifar10', _LOADERS + 'load_cifar', CIFAR10_MEAN, CIFAR10_STD, img_size=32, in_chans=3,
                num_classes=10, default_batch=512, val_size=5000,
                description='CIFAR-10, the python version: 50,000 train / 10,000 test 32x32 colour images'),
    DatasetSpec('cifar100', _LOADERS + 'load_cifar', CIFAR100_MEAN, CIFAR100_STD, img_size=32, in_chans=3,
                num_classes=100, default_batch=512, val_size=5000,
                description='CIFAR-100 (fine labels), the python version: 50,000 train / 10,000 test 32x32 colour '
                'images'),
    DatasetSpec('tinyimagenet', _LOADERS + 'load_tinyimagenet', IMAGENET_MEAN, IMAGENET_STD, img_size=48,
                in_chans=3, num_classes=200, default_batch=512, val_size=10000,
                description='Tiny ImageNet (200 classes, 64x64, center/random crops of 48) from an ImageFolder layout',
                aliases=('tiny-imagenet', 'tiny_imagenet')),
    DatasetSpec('imagenet', _LOADERS + 'load_imagenet', IMAGENET_MEAN, IMAGENET_STD, img_size=224, in_chans=3,
                num_classes=1000, default_batch=256, val_size=10000,
                description='ImageNet-1k from an ImageFolder layout (resize 256, crop 224)'),
)})

# Views of the registry, under the names other modules import.
DATASETS: Tuple[str, ...] = tuple(DATASET_SPECS)
DEFAULT_IMG_SIZE: Mapping[str, int] = MappingProxyType({n: s.img_size for n, s in DATASET_SPECS.items()})
# (in_chans, num_classes), known before any file is read: a run's model is sized (on the meta device) first
DATASET_SHAPES: Mapping[str, Tuple[int, int]] = MappingProxyType(
    {n: (s.in_chans, s.num_classes) for n, s in DATASET_SPECS.items()})
VAL_SIZES: Mapping[str, int] = MappingProxyType(
    {n: s.val_size for n, s in DATASET_SPECS.items() if s.val_size is not None})
DEFAULT_BATCH: Mapping[str, int] = MappingProxyType({n: s.default_batch for n, s in DATASET_SPECS.items()})
_ALIASES: Mapping[str, str] = MappingProxyType({a: s.name for s in DATASET_SPECS.values() for a in s.aliases})


def canonical_dataset_name(name: str) -> str:
    """'Fashion_MNIST' -> 'fashion-mnist': lower case, known aliases resolved (unknown names pass through)."""
    return _ALIASES.get(name.lower(), name.lower())


def dataset_spec(name: str) -> DatasetSpec:
    """The registry's spec of ``name`` (aliases accepted); DatasetError listing the choices for an unknown one."""
    key = canonical_dataset_name(name)
    if key not in DATASET_SPECS:
        raise DatasetError(f'unknown dataset {name!r}; choose one of: {", ".join(DATASETS)}')
    return DATASET_SPECS[key]


def default_batch_size(name: str) -> int:
    """Images per optimizer step of a run on ``name`` that does not set one (digits 64, CIFAR 512, ...)."""
    return dataset_spec(name).default_batch
