"""Per-channel pixel statistics (mean, std of values in [0, 1]) of the datasets, in one place: the loaders
normalize with them (``train.datasets.DATASET_SPECS``) and the models' pretrained cfgs state them (``models``).
ImageNet's (also TinyImageNet's) are timm's own constants, written out (tests/test_data.py checks they equal
timm's IMAGENET_DEFAULT_MEAN / STD). This module imports nothing (no timm, no torch), so ``models`` and the
datasets' registry (``train.datasets``, read by the command line's flags) can read it at once."""
from __future__ import annotations

from typing import Tuple

__all__ = ['CIFAR10_MEAN', 'CIFAR10_STD', 'CIFAR100_MEAN', 'CIFAR100_STD', 'FASHION_MNIST_MEAN',
           'FASHION_MNIST_STD', 'IMAGENET_MEAN', 'IMAGENET_STD', 'DIGITS_MEAN', 'DIGITS_STD']

Stats = Tuple[float, ...]

CIFAR10_MEAN: Stats = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: Stats = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: Stats = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: Stats = (0.2673, 0.2564, 0.2762)
FASHION_MNIST_MEAN: Stats = (0.2860,)
FASHION_MNIST_STD: Stats = (0.3530,)
IMAGENET_MEAN: Stats = (0.485, 0.456, 0.406)  # timm.data.constants.IMAGENET_DEFAULT_MEAN
IMAGENET_STD: Stats = (0.229, 0.224, 0.225)  # timm.data.constants.IMAGENET_DEFAULT_STD
# digits at its default 24x24 canvas, rounded to 4 decimals: the loader computes them from the training
# canvases (any img_size); tests/test_data.py checks the two agree
DIGITS_MEAN: Stats = (0.1357,)
DIGITS_STD: Stats = (0.2931,)
