"""The training datasets as a model card names them: readable name, Hugging Face dataset id, evaluated split."""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional

__all__ = ['HubDataset', 'HUB_DATASETS', 'HELD_OUT_SPLIT', 'dataset_id']


class HubDataset(NamedTuple):
    """How a training dataset appears in a card's metadata."""
    name: str                 # readable name (model-index ``dataset.name``)
    hub_id: Optional[str]     # the Hugging Face dataset id (``datasets:``, model-index ``dataset.type``); None: none
    test_split: str           # the split of ``hub_id`` that ``split='test'`` evaluates on


# The one table of datasets a run can name (bioconv_timm.train.data.DATASETS; a test keeps them equal). The ids are
# the Hub's canonical dataset repos, so the model-index links the card to the dataset page and its leaderboards;
# digits (scikit-learn's 8x8 digits on our 24x24 canvas) has no Hub dataset and keeps our own name.
HUB_DATASETS: Dict[str, HubDataset] = {
    'digits': HubDataset('digits (scikit-learn handwritten digits on a 24x24 canvas)', None, 'test'),
    'fashion-mnist': HubDataset('Fashion-MNIST', 'zalando-datasets/fashion_mnist', 'test'),
    # ours (no Hub dataset): each Fashion-MNIST item at a fixed random position on a 40x40 canvas
    'fashion-mnist-shifted': HubDataset('Fashion-MNIST shifted (each item at a fixed random place on a 40x40 '
                                        'canvas)', None, 'test'),
    'cifar10': HubDataset('CIFAR-10', 'uoft-cs/cifar10', 'test'),
    'cifar100': HubDataset('CIFAR-100', 'uoft-cs/cifar100', 'test'),
    'tinyimagenet': HubDataset('Tiny ImageNet', 'zh-plus/tiny-imagenet', 'valid'),     # our 'test': the official val
    'imagenet': HubDataset('ImageNet-1k', 'ILSVRC/imagenet-1k', 'validation'),      # our 'test': the official val
}
# a run with split='val' was evaluated on a held-out part of the training set
HELD_OUT_SPLIT = 'train (held-out part)'


def dataset_id(dataset: Optional[str]) -> Optional[str]:
    """The Hub dataset id of a run's dataset ('cifar10' -> 'uoft-cs/cifar10'), or our own name where the Hub has
    none ('digits')."""
    if not dataset:
        return None
    entry = HUB_DATASETS.get(dataset)
    return (entry.hub_id or dataset) if entry else dataset
