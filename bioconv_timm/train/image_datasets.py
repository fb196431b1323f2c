"""The in-memory and on-disk image datasets the loaders return, their train / eval views and transforms
(paper: normalize, then pad with the mean and random-crop)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets.folder import default_loader

from .datasets import DatasetError

__all__ = ['DataBundle', 'LoadedData', 'ImageTensorDataset', 'ImageFileDataset', 'TransformedSubset',
           'pad_random_crop', 'tensor_transforms']


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


def tensor_transforms(mean: Sequence[float], std: Sequence[float], native: int, img_size: int,
                       pad: int) -> Tuple[Callable, Callable]:
    """(train, eval) transforms for in-memory float images of side ``native``."""
    steps: List[Callable] = []
    if img_size != native:
        steps.append(T.Resize(img_size, antialias=True))
    steps.append(T.Normalize(mean, std))
    return T.Compose(steps + [pad_random_crop(img_size, pad)]), T.Compose(steps)
