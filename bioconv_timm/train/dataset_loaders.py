"""Each dataset's files into tensors or image lists: one ``load_<name>(spec, data_dir, download, img_size, pad)``
per family, returning :data:`~.image_datasets.LoadedData` (the registry, ``.datasets.DATASET_SPECS``, names them).
What each dataset is and how it is read: the ``.data`` module's docstring."""
from __future__ import annotations

import functools
import gzip
import os
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from ..pixel_stats import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from .datasets import FASHION_MNIST_SIDE, DatasetError, DatasetSpec, canvas_stats
from .image_datasets import ImageFileDataset, ImageTensorDataset, LoadedData, pad_random_crop, tensor_transforms
from .seeds import mix_seed

__all__ = ['FASHION_MNIST_DIR', 'FASHION_MNIST_CLASSES', 'FASHION_MNIST_FILES', 'DIGITS_SEED', 'SHIFTED_SEED',
           'paste_at_random', 'read_idx', 'load_digits', 'load_fashion_mnist', 'load_fashion_mnist_shifted',
           'load_cifar', 'load_tinyimagenet', 'load_imagenet']

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


def load_digits(spec: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
                 pad: int) -> LoadedData:
    canvas = spec.img_size if img_size is None else img_size
    if canvas < 16:
        raise DatasetError(f'digits: img_size is the canvas side and must be >= 16 (the upscaled digit), got {canvas}')
    images, labels, positions, train_idx, test_idx = _digits_canvases(canvas)
    train = ImageTensorDataset(images[train_idx], labels[train_idx], scale=1 / 16, positions=positions[train_idx])
    test = ImageTensorDataset(images[test_idx], labels[test_idx], scale=1 / 16, positions=positions[test_idx])
    pixels = train.images.float() / 16
    mean, std = (round(pixels.mean().item(), 4),), (round(pixels.std().item(), 4),)
    train_tf, eval_tf = tensor_transforms(mean, std, canvas, canvas, pad)
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


def load_fashion_mnist(spec: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
                        pad: int) -> LoadedData:
    parts = {split: ImageTensorDataset(images.unsqueeze(1), labels)
             for split, (images, labels) in _read_fashion_mnist(data_dir, download).items()}
    size = spec.img_size if img_size is None else img_size
    train_tf, eval_tf = tensor_transforms(spec.mean, spec.std, FASHION_MNIST_SIDE, size, pad)
    info = dict(num_classes=spec.num_classes, in_chans=spec.in_chans, img_size=size, mean=spec.mean, std=spec.std,
                label_names=list(FASHION_MNIST_CLASSES))
    return parts['train'], parts['test'], train_tf, eval_tf, info


def load_fashion_mnist_shifted(spec: DatasetSpec, data_dir: Optional[str], download: bool,
                                img_size: Optional[int], pad: int) -> LoadedData:
    canvas = spec.img_size if img_size is None else img_size
    if canvas < FASHION_MNIST_SIDE:
        raise DatasetError(f'{spec.name}: img_size is the canvas side and must be >= {FASHION_MNIST_SIDE} '
                           f'(the item), got {canvas}')
    parts = {}
    for stream, (split, (images, labels)) in enumerate(_read_fashion_mnist(data_dir, download).items()):
        # one fixed stream per split (train 0, test 1): the same positions in every build, whatever the run's seed
        generator = torch.Generator().manual_seed(mix_seed(SHIFTED_SEED, stream))
        canvases, positions = paste_at_random(images, canvas, generator)
        parts[split] = ImageTensorDataset(canvases, labels, positions=positions)
    mean, std = canvas_stats(FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_SIDE, canvas)
    train_tf, eval_tf = tensor_transforms(mean, std, canvas, canvas, pad)
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


def load_cifar(dataset: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
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
    train_tf, eval_tf = tensor_transforms(dataset.mean, dataset.std, 32, size, pad)
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


def load_tinyimagenet(spec: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
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


def load_imagenet(spec: DatasetSpec, data_dir: Optional[str], download: bool, img_size: Optional[int],
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
