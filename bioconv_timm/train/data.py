"""Datasets, the paper's augmentations and reproducible loaders (paper section 5, appendix B).

``build_datasets(name, ...)`` returns a :class:`DataBundle`: a training set with the paper's
augmentation, an evaluation set with test-time transforms, and what a model needs to know (classes,
channels, input size, normalization). ``make_loader`` wraps either in a reproducible DataLoader,
optionally with "n reps" batches.

Datasets: one table, ``DATASET_SPECS`` (:class:`DatasetSpec`: loader, mean, std, default input size,
channels, classes, default batch, validation size, description), in :mod:`.datasets` (torch-free, so the
settings and the command line read it at once; its names are importable from here too); ``DATASETS``,
``DEFAULT_IMG_SIZE``, ``DATASET_SHAPES``, ``VAL_SIZES`` and ``DEFAULT_BATCH`` are read-only views of it. This
module builds a run's train / eval views (``build_datasets``) and re-exports the rest: the datasets and
transforms (:mod:`.image_datasets`), each dataset's reader (:mod:`.dataset_loaders`, the loaders the specs
name), batching (:mod:`.batching`) and the seed streams (:mod:`.seeds`).

* ``digits`` (embedded default, nothing to download): scikit-learn's ``load_digits``, 1797 real 8x8
  handwritten digits (values 0..16). Each digit is upscaled 2x (nearest neighbour, so pixels stay the
  real ones) to 16x16 and pasted on a black 24x24 canvas at a random position that is fixed per sample
  (why: digits then appear anywhere in the image, in train and test alike, so a network must handle
  translations, which is where convolutions and LC layers differ). The canvases and a stratified 80/20
  train/test split (1437/360) are drawn with a fixed seed (``DIGITS_SEED``), independent of the run's
  ``seed``, so that the "test" set is the same benchmark for every run. Mean and std are computed
  from the training canvases. 1 channel, 10 classes, input 24 (``img_size`` sets the canvas size).
* ``fashion-mnist``: the gzipped IDX files (``train-images-idx3-ubyte.gz``, ...) from ``data_dir``,
  else from ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). 1 channel,
  28x28, 10 classes; kept in memory as uint8.
* ``fashion-mnist-shifted``: the same files, each 28x28 item pasted at a random position on a black 40x40
  canvas (``img_size`` sets the canvas side, >= 28). The positions are drawn once per image, uniformly over
  the 13 x 13 possible offsets, from a fixed seed (``SHIFTED_SEED``, independent of the run's ``seed``), for
  train and test alike: the test set is one fixed benchmark from the training distribution. Why: Fashion-MNIST
  items are centred, so a network has little translation invariance to learn; here position varies as in
  natural images, which is where weight sharing should matter (issue 25). Mean and std follow from
  Fashion-MNIST's (:func:`canvas_stats`).
* ``cifar10`` / ``cifar100``: the python version from the CIFAR site (``cifar-10-batches-py`` /
  ``cifar-100-python`` under ``data_dir``), read directly (``download=True`` fetches it with
  torchvision). 3 channels, 32x32; kept in memory as uint8.
* ``tinyimagenet`` / ``imagenet``: ImageFolder layouts ``data_dir/train/<class>/...`` and
  ``data_dir/val/<class>/...``; TinyImageNet's official ``val/images`` + ``val_annotations.txt`` is
  also read as is.

Augmentation (paper): "pad with the training-set mean, then random crop". Images are normalized first
and then zero-padded by ``pad`` pixels, so the padding *is* the mean; no flips except for ImageNet.
TinyImageNet: center-crop 48 + 2 * pad, then random-crop 48 (ImageNet normalization). ImageNet: resize
256, random crop 224, horizontal flip (``pad`` unused). Evaluation: no padding (TinyImageNet: center
crop 48; ImageNet: resize 256 + center crop 224).

Splits: ``split='test'`` trains on the full training set and evaluates on the official test set
(ImageNet/TinyImageNet: the official val set); ``split='val'`` holds out part of the training set
(paper sizes: CIFAR 5k, TinyImageNet 10k, ImageNet 10k; digits and Fashion-MNIST 10%), chosen by a
permutation seeded with ``seed``, and evaluates on it with test-time transforms.

Reproducibility: the shuffling order depends only on ``(seed, epoch)``, and each training item's
augmentation draws from torch's RNG seeded from ``(seed, epoch, item index)`` (``make_loader``), so the
batches depend neither on ``num_workers`` nor on the global RNG. Workers' other RNGs (numpy, random) are
seeded from ``(seed, epoch, rank, worker id)``.

Missing or malformed data raises :class:`DatasetError`, whose message says where the files must be.
"""
from __future__ import annotations

from typing import Optional

import torch

# the package's data names, importable from here as before: the registry (torch-free, .datasets), the
# datasets and transforms (.image_datasets), each dataset's reader (.dataset_loaders), batching (.batching)
from ..pixel_stats import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, FASHION_MNIST_MEAN,  # noqa: F401
                           FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD)
from .batching import EpochShuffleSampler, RepeatedViews, collate_views, make_loader  # noqa: F401
from .dataset_loaders import (DIGITS_SEED, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_FILES,  # noqa: F401
                              SHIFTED_SEED, paste_at_random, read_idx)
from .datasets import (DATASET_SHAPES, DATASET_SPECS, DATASETS, DEFAULT_BATCH, DEFAULT_IMG_SIZE,  # noqa: F401
                       FASHION_MNIST_SIDE, SHIFTED_CANVAS, VAL_FRACTION, VAL_SIZES, DatasetError, DatasetSpec,
                       canonical_dataset_name, canvas_stats, dataset_spec, default_batch_size)
from .image_datasets import (DataBundle, ImageFileDataset, ImageTensorDataset, LoadedData,  # noqa: F401
                             TransformedSubset, pad_random_crop, tensor_transforms)
from .seeds import seeded_permutation

__all__ = [
    'DataBundle', 'DatasetError', 'DatasetSpec', 'DATASET_SPECS', 'DATASETS', 'DEFAULT_IMG_SIZE', 'DATASET_SHAPES',
    'VAL_SIZES', 'DEFAULT_BATCH', 'dataset_spec', 'default_batch_size', 'canonical_dataset_name', 'build_datasets',
    'make_loader', 'ImageTensorDataset', 'ImageFileDataset', 'TransformedSubset', 'RepeatedViews', 'pad_random_crop',
    'EpochShuffleSampler', 'read_idx', 'paste_at_random', 'canvas_stats',
]


def _take_subset(indices: torch.Tensor, size: Optional[int], what: str, seed: int, stream: int) -> torch.Tensor:
    """The first ``size`` of a seeded permutation of ``indices`` (nested for growing sizes)."""
    if size is None:
        return indices
    if not 0 < size <= len(indices):
        raise DatasetError(f'{what}={size} must be in 1..{len(indices)} (available)')
    return indices[seeded_permutation(len(indices), seed, stream)[:size]].sort().values


def build_datasets(name: str = 'digits', data_dir: Optional[str] = None, pad: int = 4, split: str = 'test',
                   download: bool = False, seed: int = 0, train_subset: Optional[int] = None,
                   eval_subset: Optional[int] = None, img_size: Optional[int] = None,
                   val_size: Optional[int] = None) -> DataBundle:
    """Build the training and evaluation sets of one dataset.

    Args:
        name: one of ``DATASETS`` ('fashion_mnist', 'tiny-imagenet' spellings are accepted); its
            :class:`DatasetSpec` in ``DATASET_SPECS`` loads it.
        data_dir: where the files are (not needed for 'digits'; optional for 'fashion-mnist' and
            'fashion-mnist-shifted', which fall back to /usr/share/datasets/fashion-mnist only when
            ``data_dir`` is None).
        pad: padding (pixels, with the mean) before the random crop; 0 = no translation. Unused by ImageNet.
        split: 'test' = full train set, evaluate on the official test set; 'val' = hold out
            ``val_size`` training images (seeded by ``seed``) and evaluate on them.
        download: fetch CIFAR / Fashion-MNIST into ``data_dir`` with torchvision if missing.
        seed: seeds the validation split and the subsets.
        train_subset, eval_subset: keep only the first N of a seeded permutation (fast studies).
        img_size: network input size; defaults to the dataset's ``DEFAULT_IMG_SIZE`` (digits 24 = canvas
            side, fashion-mnist 28, fashion-mnist-shifted 40 = canvas side, CIFAR 32, TinyImageNet 48 = crop,
            ImageNet 224 = crop); other sizes resize fashion-mnist / CIFAR images and set the canvas / crop
            size of the others.
        val_size: held-out size for ``split='val'``; default the spec's (the paper's: CIFAR 5k, TinyImageNet
            10k, ImageNet 10k) or 10% of the training set (digits, both fashion-mnist sets).
    Returns:
        A :class:`DataBundle`; items are (normalized float (C, img_size, img_size), int label).
    Raises:
        DatasetError: unknown name, missing or malformed files.
        ValueError: bad ``split``, ``pad``, sizes.
    """
    spec = dataset_spec(name)
    key = spec.name
    if split not in ('val', 'test'):
        raise DatasetError(f"split must be 'val' or 'test', got {split!r}")
    if pad < 0:
        raise DatasetError(f'pad must be >= 0, got {pad}')
    if seed < 0:
        raise DatasetError(f'seed must be >= 0, got {seed}')

    train_base, test_base, train_tf, eval_tf, info = spec.load_function()(spec, data_dir, download, img_size, pad)

    n_train = len(train_base)
    if split == 'test':
        train_idx, eval_idx, eval_base = torch.arange(n_train), torch.arange(len(test_base)), test_base
    else:
        held_out = val_size if val_size is not None else (
            spec.val_size if spec.val_size is not None else round(VAL_FRACTION * n_train))
        if not 0 < held_out < n_train:
            raise DatasetError(f'{key}: val_size={held_out} must be in 1..{n_train - 1} ({n_train} training images)')
        order = seeded_permutation(n_train, seed, 0)
        eval_idx, train_idx = order[:held_out].sort().values, order[held_out:].sort().values
        eval_base = train_base  # held-out images, shown with test-time transforms
    train_idx = _take_subset(train_idx, train_subset, 'train_subset', seed, 1)
    eval_idx = _take_subset(eval_idx, eval_subset, 'eval_subset', seed, 2)
    return DataBundle(train=TransformedSubset(train_base, train_idx, train_tf),
                      eval=TransformedSubset(eval_base, eval_idx, eval_tf),
                      eval_split=split, name=key, **info)
