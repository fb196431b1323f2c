"""Datasets, the paper's augmentations and reproducible loaders (paper section 5, appendix B).

``build_datasets(name, ...)`` returns a :class:`DataBundle`: a training set with the paper's
augmentation, an evaluation set with test-time transforms, and what a model needs to know (classes,
channels, input size, normalization). ``make_loader`` wraps either in a reproducible DataLoader,
optionally with "n reps" batches.

Datasets: one table, ``DATASET_SPECS`` (:class:`DatasetSpec`: loader, mean, std, default input size,
channels, classes, default batch, validation size, description), in :mod:`.datasets` (torch-free, so the
settings and the command line read it at once; its names are importable from here too); ``DATASETS``,
``DEFAULT_IMG_SIZE``, ``DATASET_SHAPES``, ``VAL_SIZES`` and ``DEFAULT_BATCH`` are read-only views of it. This
module holds the loaders the specs name.

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

import functools
import gzip
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, has_file_allowed_extension
# per-channel pixel statistics: one place for the loaders, the registry and the models' cfgs
from ..pixel_stats import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, FASHION_MNIST_MEAN,  # noqa: F401
                           FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD)
from .datasets import (DATASET_SHAPES, DATASET_SPECS, DATASETS, DEFAULT_BATCH, DEFAULT_IMG_SIZE,  # noqa: F401
                       FASHION_MNIST_SIDE, SHIFTED_CANVAS, VAL_FRACTION, VAL_SIZES, DatasetError, DatasetSpec,
                       canonical_dataset_name, canvas_stats, dataset_spec, default_batch_size)

__all__ = [
    'DataBundle', 'DatasetError', 'DatasetSpec', 'DATASET_SPECS', 'DATASETS', 'DEFAULT_IMG_SIZE', 'DATASET_SHAPES',
    'VAL_SIZES', 'DEFAULT_BATCH', 'dataset_spec', 'default_batch_size', 'canonical_dataset_name', 'build_datasets',
    'make_loader', 'ImageTensorDataset', 'ImageFileDataset', 'TransformedSubset', 'RepeatedViews', 'pad_random_crop',
    'EpochShuffleSampler', 'read_idx', 'paste_at_random', 'canvas_stats',
]

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'  # Debian package dataset-fashion-mnist
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
                         'Bag', 'Ankle boot')
FASHION_MNIST_FILES = {
    'train_images': 'train-images-idx3-ubyte.gz', 'train_labels': 'train-labels-idx1-ubyte.gz',
    'test_images': 't10k-images-idx3-ubyte.gz', 'test_labels': 't10k-labels-idx1-ubyte.gz',
}
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
DIGITS_SEED = 0  # fixes the digits canvases and train/test split (the benchmark), not the run
SHIFTED_SEED = 0  # fixes the fashion-mnist-shifted positions (the benchmark), not the run


@dataclass
class DataBundle:
    """Everything the trainer needs about one dataset.

    ``train`` and ``eval`` yield ``(image, label)`` with ``image`` a normalized float tensor
    ``(in_chans, img_size, img_size)`` and ``label`` an int in ``[0, num_classes)``.
    """
    train: Dataset
    eval: Dataset
    num_classes: int
    in_chans: int
    img_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    label_names: Optional[List[str]]
    eval_split: str  # 'val' (held out from train) or 'test' (official test / val set)
    name: str


# What a loader returns: (train base, test base, train transform, eval transform, info), info holding
# num_classes, in_chans, img_size, mean, std and label_names of the DataBundle.
LoadedData = Tuple[Dataset, Dataset, Callable, Callable, Dict[str, Any]]


# ---------------------------------------------------------------------------------------------------
# Datasets and transforms

class ImageTensorDataset(Dataset):
    """In-memory images: items ``(image (C, H, W) float = images[i] * scale, label int)``.

    Args:
        images: (N, C, H, W) integer tensor (uint8), kept as is to save memory.
        labels: (N,) integer tensor.
        scale: factor mapping stored values to [0, 1] (1/255 for bytes, 1/16 for sklearn digits).
        positions: for canvas datasets, (N, 2) long: the (top, left) pixel where item i was pasted.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, scale: float = 1 / 255,
                 positions: Optional[torch.Tensor] = None) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f'images must be (N, C, H, W) with N = len(labels), got {tuple(images.shape)}, '
                             f'{len(labels)} labels')
        if positions is not None and tuple(positions.shape) != (len(labels), 2):
            raise ValueError(f'positions must be (N, 2) = ({len(labels)}, 2), got {tuple(positions.shape)}')
        self.images = images
        self.labels = labels.long()
        self.scale = scale
        self.positions = positions

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.images[index].float() * self.scale, int(self.labels[index])

    @property
    def targets(self) -> List[int]:
        return self.labels.tolist()


class ImageFileDataset(Dataset):
    """Images on disk: items ``(PIL RGB image, label)`` for ``samples = [(path, label), ...]``."""

    def __init__(self, samples: List[Tuple[str, int]], classes: List[str],
                 loader: Callable[[str], Any] = default_loader) -> None:
        self.samples = samples
        self.classes = classes
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        path, label = self.samples[index]
        try:
            return self.loader(path), label
        except (OSError, SyntaxError, ValueError) as exc:  # PIL: UnidentifiedImageError, truncated files
            raise DatasetError(f'cannot read image {path}: {exc}. Remove or replace the file (it is not a '
                               'readable image) and run again.') from exc

    @property
    def targets(self) -> List[int]:
        return [label for _, label in self.samples]


class TransformedSubset(Dataset):
    """``base[indices[i]]`` with ``transform`` applied to the image.

    Train and eval views of one base share its memory. :meth:`raw` gives the untransformed item so
    that :class:`RepeatedViews` can augment one decoded image several times.
    """

    def __init__(self, base: Dataset, indices: Optional[Sequence[int]] = None,
                 transform: Optional[Callable] = None) -> None:
        self.base = base
        self.indices = torch.arange(len(base)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, index: int) -> Tuple[Any, int]:
        return self.base[int(self.indices[index])]

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        image, label = self.raw(index)
        return (self.transform(image) if self.transform is not None else image), label

    @property
    def targets(self) -> List[int]:
        base_targets = self.base.targets
        return [base_targets[i] for i in self.indices.tolist()]


def pad_random_crop(size: int, pad: int = 0) -> T.RandomCrop:
    """Zero-pad a (C, H, W) tensor by ``pad`` on every side, then crop ``size`` x ``size`` at random
    (torchvision's ``RandomCrop``; offsets from torch's global RNG).

    Applied after normalization, zero is the training-set mean: the paper's "pad with the mean".
    """
    if pad < 0:
        raise DatasetError(f'pad must be >= 0, got {pad}')
    return T.RandomCrop(size, padding=pad or None, fill=0)


def _tensor_transforms(mean: Sequence[float], std: Sequence[float], native: int, img_size: int,
                       pad: int) -> Tuple[Callable, Callable]:
    """(train, eval) transforms for in-memory float images of side ``native``."""
    steps: List[Callable] = []
    if img_size != native:
        steps.append(T.Resize(img_size, antialias=True))
    steps.append(T.Normalize(mean, std))
    return T.Compose(steps + [pad_random_crop(img_size, pad)]), T.Compose(steps)


# ---------------------------------------------------------------------------------------------------
# Individual datasets: each loader(spec, data_dir, download, img_size, pad) returns LoadedData

def paste_at_random(images: torch.Tensor, canvas: int,
                    generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Paste each image at a uniformly random position on a black ``canvas`` x ``canvas``.

    Args:
        images: (N, h, w) integer tensor (uint8), h, w <= canvas.
        canvas: side of the output canvases (pixels).
        generator: draws the N top offsets, then the N left offsets, each uniform in 0..canvas - side.
    Returns:
        (canvases (N, 1, canvas, canvas) of ``images``' dtype, positions (N, 2) long: (top, left) of each image).
    """
    n, h, w = images.shape
    if h > canvas or w > canvas:
        raise DatasetError(f'cannot paste {h}x{w} images on a {canvas}x{canvas} canvas')
    tops = torch.randint(0, canvas - h + 1, (n,), generator=generator)
    lefts = torch.randint(0, canvas - w + 1, (n,), generator=generator)
    out = torch.zeros(n, 1, canvas, canvas, dtype=images.dtype)
    positions = torch.stack([tops, lefts], dim=1)
    # one slice assignment per distinct offset (at most (canvas - h + 1) * (canvas - w + 1) of them): fast,
    # without the (N, h, w) index tensors a single scatter would need
    for top, left in torch.unique(positions, dim=0).tolist():
        at = (tops == top) & (lefts == left)
        out[at, 0, top:top + h, left:left + w] = images[at]
    return out, positions


@functools.lru_cache(maxsize=4)
def _digits_canvases(canvas: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 1, canvas, canvas) in 0..16, labels (N,), positions (N, 2), train index, test index)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = torch.from_numpy(digits.images).to(torch.uint8)  # (N, 8, 8), values 0..16
    big = small.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # nearest 2x -> (N, 16, 16)
    images, positions = paste_at_random(big, canvas, torch.Generator().manual_seed(DIGITS_SEED))
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(np.arange(len(big)), test_size=0.2, stratify=digits.target,
                                           random_state=DIGITS_SEED)
    return images, labels, positions, torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))


def _load_digits(spec: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
                 pad: int) -> LoadedData:
    canvas = spec.img_size if img_size is None else img_size
    if canvas < 16:
        raise DatasetError(f'digits: img_size is the canvas side and must be >= 16 (the upscaled digit), got {canvas}')
    images, labels, positions, train_idx, test_idx = _digits_canvases(canvas)
    train = ImageTensorDataset(images[train_idx], labels[train_idx], scale=1 / 16, positions=positions[train_idx])
    test = ImageTensorDataset(images[test_idx], labels[test_idx], scale=1 / 16, positions=positions[test_idx])
    pixels = train.images.float() / 16
    mean, std = (round(pixels.mean().item(), 4),), (round(pixels.std().item(), 4),)
    train_tf, eval_tf = _tensor_transforms(mean, std, canvas, canvas, pad)
    info = dict(num_classes=spec.num_classes, in_chans=spec.in_chans, img_size=canvas, mean=mean, std=std,
                label_names=[str(d) for d in range(10)])
    return train, test, train_tf, eval_tf, info


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a (possibly gzipped) IDX file of unsigned bytes, checking its magic number and size.

    Returns an array of shape (n,) for labels (magic 2049) or (n, rows, cols) for images (2051).
    """
    ndim = {IDX_LABELS_MAGIC: 1, IDX_IMAGES_MAGIC: 3}[magic]
    try:
        with (gzip.open(path, 'rb') if str(path).endswith('.gz') else open(path, 'rb')) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f'{path}: cannot read ({e}); expected a gzipped IDX file') from e
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise DatasetError(f'{path}: too short for an IDX header ({len(data)} bytes)')
    found = int.from_bytes(data[:4], 'big')
    if found != magic:
        raise DatasetError(f'{path}: IDX magic number {found}, expected {magic} '
                           f'({"images" if magic == IDX_IMAGES_MAGIC else "labels"}, unsigned bytes)')
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    payload = np.frombuffer(data, dtype=np.uint8, offset=header)
    if payload.size != int(np.prod(dims)):
        raise DatasetError(f'{path}: header says {dims} = {int(np.prod(dims))} bytes of data, found {payload.size}')
    return payload.reshape(dims)


def _find_fashion_dir(data_dir: Optional[str], download: bool) -> Path:
    if data_dir is None:
        candidates = [Path(FASHION_MNIST_DIR)]
    else:
        # Explicit data_dir: never fall back to the system copy (it would hide a wrong path).
        root = Path(data_dir)
        if download:
            _torchvision_download('FashionMNIST', root)
        candidates = [root, root / 'fashion-mnist', root / 'FashionMNIST' / 'raw']
    for folder in candidates:
        if all(_idx_file(folder, f) is not None for f in FASHION_MNIST_FILES.values()):
            return folder
    where = ' or '.join(str(c) for c in candidates)
    raise DatasetError(
        f'fashion-mnist not found: expected the gzipped IDX files {", ".join(FASHION_MNIST_FILES.values())} '
        f'in {where}. Install them with `apt-get install dataset-fashion-mnist` (Debian; files go to '
        f'{FASHION_MNIST_DIR}), or pass --data-dir DIR holding them (or --download).')


def _idx_file(folder: Path, name: str) -> Optional[Path]:
    for candidate in (folder / name, folder / name[:-3]):  # gzipped or already extracted
        if candidate.is_file():
            return candidate
    return None


def _read_fashion_mnist(data_dir: Optional[str], download: bool) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """{'train' | 'test': (images uint8 (N, 28, 28), labels long (N,))}, checked against the IDX headers."""
    folder = _find_fashion_dir(data_dir, download)
    side = FASHION_MNIST_SIDE
    parts = {}
    for split in ('train', 'test'):
        images = read_idx(_idx_file(folder, FASHION_MNIST_FILES[f'{split}_images']), IDX_IMAGES_MAGIC)
        labels = read_idx(_idx_file(folder, FASHION_MNIST_FILES[f'{split}_labels']), IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise DatasetError(f'fashion-mnist in {folder}: {split} has {len(images)} images but {len(labels)} labels')
        if images.shape[1:] != (side, side):
            raise DatasetError(f'fashion-mnist in {folder}: {split} images are {images.shape[1:]}, expected 28x28')
        if len(labels) and labels.max() >= 10:
            raise DatasetError(f'fashion-mnist in {folder}: {split} labels must be 0..9, found {labels.max()}')
        parts[split] = (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
    return parts


def _load_fashion_mnist(spec: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
                        pad: int) -> LoadedData:
    parts = {split: ImageTensorDataset(images.unsqueeze(1), labels)
             for split, (images, labels) in _read_fashion_mnist(data_dir, download).items()}
    size = spec.img_size if img_size is None else img_size
    train_tf, eval_tf = _tensor_transforms(spec.mean, spec.std, FASHION_MNIST_SIDE, size, pad)
    info = dict(num_classes=spec.num_classes, in_chans=spec.in_chans, img_size=size, mean=spec.mean, std=spec.std,
                label_names=list(FASHION_MNIST_CLASSES))
    return parts['train'], parts['test'], train_tf, eval_tf, info


def _load_fashion_mnist_shifted(spec: DatasetSpec, data_dir: Optional[str], download: bool,
                                img_size: Optional[int], pad: int) -> LoadedData:
    canvas = spec.img_size if img_size is None else img_size
    if canvas < FASHION_MNIST_SIDE:
        raise DatasetError(f'{spec.name}: img_size is the canvas side and must be >= {FASHION_MNIST_SIDE} '
                           f'(the item), got {canvas}')
    parts = {}
    for stream, (split, (images, labels)) in enumerate(_read_fashion_mnist(data_dir, download).items()):
        # one fixed stream per split (train 0, test 1): the same positions in every build, whatever the run's seed
        generator = torch.Generator().manual_seed(_mix(SHIFTED_SEED, stream))
        canvases, positions = paste_at_random(images, canvas, generator)
        parts[split] = ImageTensorDataset(canvases, labels, positions=positions)
    mean, std = canvas_stats(FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_SIDE, canvas)
    train_tf, eval_tf = _tensor_transforms(mean, std, canvas, canvas, pad)
    info = dict(num_classes=spec.num_classes, in_chans=spec.in_chans, img_size=canvas, mean=mean, std=std,
                label_names=list(FASHION_MNIST_CLASSES))
    return parts['train'], parts['test'], train_tf, eval_tf, info


_CIFAR = {  # file layouts of the python versions (stats and sizes: DATASET_SPECS)
    'cifar10': dict(folder='cifar-10-batches-py', train=[f'data_batch_{i}' for i in range(1, 6)],
                    test=['test_batch'], meta='batches.meta', labels='labels', names='label_names',
                    listing='data_batch_1..5,test_batch,batches.meta', tv='CIFAR10'),
    'cifar100': dict(folder='cifar-100-python', train=['train'], test=['test'], meta='meta',
                     labels='fine_labels', names='fine_label_names', listing='train,test,meta', tv='CIFAR100'),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR files hold (dicts, lists, strings, bytes, numpy arrays): the
    python version of CIFAR is a pickle, and a pickle from elsewhere must not be able to run code."""

    _ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
                ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode')}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}: not part of a CIFAR file')
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, 'rb') as f:
            obj = _CifarUnpickler(f, encoding='latin1').load()  # the CIFAR files were written by python 2
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DatasetError(f'{path}: not a CIFAR python pickle ({type(e).__name__}: {e})') from e
    if not isinstance(obj, dict):
        raise DatasetError(f'{path}: expected a pickled dict, got {type(obj).__name__}')
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _load_cifar(dataset: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
                pad: int) -> LoadedData:
    name, spec = dataset.name, _CIFAR[dataset.name]
    if data_dir is None:
        raise DatasetError(f'{name} is not embedded: pass --data-dir DIR (holding {spec["folder"]}/) '
                           f'or --data-dir DIR --download')
    root = Path(data_dir)
    files = spec['train'] + spec['test'] + [spec['meta']]
    folder = root / spec['folder']
    if not (folder / files[0]).exists() and (root / files[0]).exists():
        folder = root  # data_dir points at the extracted folder itself
    if download and not all((folder / f).is_file() for f in files):
        _torchvision_download(spec['tv'], root)
        folder = root / spec['folder']
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DatasetError(
            f'{name} not found (missing {", ".join(missing)}): expected '
            f'{root}/{spec["folder"]}/{{{spec["listing"]}}} (the python version from the CIFAR site); '
            f'pass --data-dir or --download')
    parts = {}
    for split in ('train', 'test'):
        images, labels = [], []
        for fname in spec[split]:
            batch = _unpickle(folder / fname)
            if 'data' not in batch or spec['labels'] not in batch:
                raise DatasetError(f'{folder / fname}: expected keys "data" and "{spec["labels"]}", '
                                   f'found {sorted(batch)}')
            data = np.asarray(batch['data'], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[spec['labels']]):
                raise DatasetError(f'{folder / fname}: "data" must be (N, 3072) uint8 with N labels, got '
                                   f'{data.shape} and {len(batch[spec["labels"]])} labels')
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[spec['labels']], dtype=np.int64))
        label_array = np.concatenate(labels)
        if len(label_array) and (label_array.min() < 0 or label_array.max() >= dataset.num_classes):
            raise DatasetError(f'{name} in {folder}: {split} labels outside 0..{dataset.num_classes - 1}')
        parts[split] = ImageTensorDataset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(label_array))
    meta = _unpickle(folder / spec['meta'])
    names = meta.get(spec['names'])
    label_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else None
    size = dataset.img_size if img_size is None else img_size
    train_tf, eval_tf = _tensor_transforms(dataset.mean, dataset.std, 32, size, pad)
    info = dict(num_classes=dataset.num_classes, in_chans=dataset.in_chans, img_size=size, mean=dataset.mean,
                std=dataset.std, label_names=label_names)
    return parts['train'], parts['test'], train_tf, eval_tf, info


def _torchvision_download(cls_name: str, root: Path) -> None:
    import torchvision.datasets as tvd
    try:
        getattr(tvd, cls_name)(root=str(root), train=True, download=True)
        getattr(tvd, cls_name)(root=str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - no network, bad checksum, ...
        raise DatasetError(f'downloading {cls_name} into {root} failed ({type(e).__name__}: {e}); '
                           f'place the files there by hand') from e


def _layout_error(name: str, root: Optional[Path], problem: str) -> DatasetError:
    where = '<data_dir>' if root is None else str(root)
    note = ("TinyImageNet's official val/ must be rearranged into val/<class>/ folders, or kept as "
            "val/images/ + val/val_annotations.txt (read as is)" if name == 'tinyimagenet' else
            "ImageNet's official val/ must be rearranged into val/<wnid>/ class folders")
    return DatasetError(
        f'{name}: {problem}. Expected an ImageFolder layout: {where}/train/<class>/*.JPEG and '
        f'{where}/val/<class>/*.JPEG (one folder per class, the same class names in both); {note}. '
        f'Pass --data-dir DIR.')


def _list_images(folder: Path) -> List[str]:
    return sorted(str(p) for p in folder.rglob('*')
                  if p.is_file() and has_file_allowed_extension(p.name, IMG_EXTENSIONS))


def _class_folders(folder: Path) -> List[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir()) if folder.is_dir() else []


def _read_image_folder(name: str, data_dir: Optional[str],
                       download: bool) -> Tuple[Path, List[str], List[Tuple[str, int]], List[Tuple[str, int]]]:
    """(root, classes, train samples, val samples) of an ImageFolder layout; samples are (path, label)."""
    if data_dir is None:
        raise _layout_error(name, None, 'not embedded, no --data-dir given')
    if download:
        raise _layout_error(name, Path(data_dir), 'cannot be downloaded automatically')
    root = Path(data_dir)
    classes = _class_folders(root / 'train')
    if not classes:
        raise _layout_error(name, root, f'no class folders in {root / "train"}')
    class_to_idx = {c: i for i, c in enumerate(classes)}
    train_samples = [(p, class_to_idx[c]) for c in classes for p in _list_images(root / 'train' / c)]
    if not train_samples:
        raise _layout_error(name, root, f'no images ({", ".join(IMG_EXTENSIONS)}) under {root / "train"}')

    val = root / 'val'
    annotations = val / 'val_annotations.txt'
    if annotations.is_file() and (val / 'images').is_dir():
        # TinyImageNet's official layout: val/images/<file> plus "<file>\t<wnid>\t<box>" lines.
        val_samples = []
        for line in annotations.read_text().splitlines():
            fields = line.split('\t')
            if len(fields) < 2:
                continue
            if fields[1] not in class_to_idx:
                raise _layout_error(name, root, f'{annotations} names class {fields[1]!r}, not in train/')
            val_samples.append((str(val / 'images' / fields[0]), class_to_idx[fields[1]]))
    else:
        val_classes = _class_folders(val)
        unknown = sorted(set(val_classes) - set(class_to_idx))
        if unknown:
            raise _layout_error(name, root, f'val/ has folders that are not train/ classes: {", ".join(unknown[:5])}')
        val_samples = [(p, class_to_idx[c]) for c in val_classes for p in _list_images(val / c)]
    if not val_samples:
        raise _layout_error(name, root, f'no labelled images under {val}')

    return root, classes, train_samples, val_samples


def _load_tinyimagenet(spec: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
                       pad: int) -> LoadedData:
    root, classes, train_samples, val_samples = _read_image_folder(spec.name, data_dir, download)
    label_names = list(classes)
    words = root / 'words.txt'  # TinyImageNet's "<wnid>\t<names>" file: human-readable names
    if words.is_file():
        table = dict(line.split('\t', 1) for line in words.read_text().splitlines() if '\t' in line)
        label_names = [table.get(c, c).split(',')[0].strip() for c in classes]
    size = spec.img_size if img_size is None else img_size
    mean, std = spec.mean, spec.std
    # Normalize first so that any padding CenterCrop adds (pad > 8 on 64x64 images) is the mean.
    train_tf = T.Compose([T.ToTensor(), T.Normalize(mean, std), T.CenterCrop(size + 2 * pad), pad_random_crop(size)])
    eval_tf = T.Compose([T.ToTensor(), T.Normalize(mean, std), T.CenterCrop(size)])
    info = dict(num_classes=len(classes), in_chans=spec.in_chans, img_size=size, mean=mean, std=std,
                label_names=label_names)
    return (ImageFileDataset(train_samples, classes), ImageFileDataset(val_samples, classes), train_tf, eval_tf,
            info)


def _load_imagenet(spec: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
                   pad: int) -> LoadedData:
    root, classes, train_samples, val_samples = _read_image_folder(spec.name, data_dir, download)
    size = spec.img_size if img_size is None else img_size
    mean, std = spec.mean, spec.std
    resize = round(size * 256 / 224)  # timm's crop_pct 0.875
    train_tf = T.Compose([T.Resize(resize), T.RandomCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std)])
    eval_tf = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    info = dict(num_classes=len(classes), in_chans=spec.in_chans, img_size=size, mean=mean, std=std,
                label_names=list(classes))
    return (ImageFileDataset(train_samples, classes), ImageFileDataset(val_samples, classes), train_tf, eval_tf,
            info)


# ---------------------------------------------------------------------------------------------------
# Public entry points

def _mix(*values: int) -> int:
    """A well-spread 63-bit seed from non-negative ints (why: seed + epoch would collide across runs)."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _permutation(n: int, *seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(_mix(*seed)))


def _take_subset(indices: torch.Tensor, size: Optional[int], what: str, seed: int, stream: int) -> torch.Tensor:
    """The first ``size`` of a seeded permutation of ``indices`` (nested for growing sizes)."""
    if size is None:
        return indices
    if not 0 < size <= len(indices):
        raise DatasetError(f'{what}={size} must be in 1..{len(indices)} (available)')
    return indices[_permutation(len(indices), seed, stream)[:size]].sort().values


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
        order = _permutation(n_train, seed, 0)
        eval_idx, train_idx = order[:held_out].sort().values, order[held_out:].sort().values
        eval_base = train_base  # held-out images, shown with test-time transforms
    train_idx = _take_subset(train_idx, train_subset, 'train_subset', seed, 1)
    eval_idx = _take_subset(eval_idx, eval_subset, 'eval_subset', seed, 2)
    return DataBundle(train=TransformedSubset(train_base, train_idx, train_tf),
                      eval=TransformedSubset(eval_base, eval_idx, eval_tf),
                      eval_split=split, name=key, **info)


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
        return iter(_permutation(self.n, self.seed, 1_000_003, self.epoch).tolist())

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
        generator.manual_seed(_mix(self.seed, self.epoch, 2_000_003, int(index)))
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)  # the caller's RNG stream goes on as if nothing was drawn


def _seed_worker(worker_id: int, base_seed: int) -> None:
    """Seed a worker's torch, numpy and python RNGs from the loader's (seed, epoch, rank) and its id."""
    seed = _mix(base_seed, worker_id)
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
    base_seed = _mix(seed, epoch, rank)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(), drop_last=drop_last, persistent_workers=False,
        # The generator only keeps DataLoader from drawing its (unused) base seed from the global RNG.
        generator=torch.Generator().manual_seed(base_seed),
        worker_init_fn=functools.partial(_seed_worker, base_seed=base_seed) if num_workers > 0 else None,
    )
