"""Datasets, augmentation and loaders (bioconv_timm.train.data), on the embedded digits and on small
files generated in the real layouts of Fashion-MNIST, CIFAR, TinyImageNet and ImageNet."""
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bioconv_timm.train import data as D
from bioconv_timm.train import dataset_loaders
from bioconv_timm.train.data import DATASETS, DatasetError, build_datasets, pad_random_crop, make_loader


def stack(dataset, n=None):
    n = len(dataset) if n is None else n
    items = [dataset[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def normalized_raw(dataset, i):
    """The un-augmented, normalized image i of a TransformedSubset over in-memory images."""
    image, _ = dataset.raw(i)
    normalize = [t for t in dataset.transform.transforms if type(t).__name__ == 'Normalize'][0]
    return normalize(image)


def crop_offsets(view, source, pad):
    """All (dy, dx) such that view == crop of source zero-padded by pad at (pad + dy, pad + dx)."""
    padded = torch.nn.functional.pad(source, (pad,) * 4)
    h, w = source.shape[-2:]
    return {(top - pad, left - pad) for top in range(2 * pad + 1) for left in range(2 * pad + 1)
            if torch.equal(padded[..., top:top + h, left:left + w], view)}


# --------------------------------------------------------------------------------------------- digits

def test_digits_bundle_shapes_classes_normalization():
    bundle = build_datasets('digits', pad=0)
    assert (bundle.name, bundle.eval_split, bundle.num_classes, bundle.in_chans, bundle.img_size) == \
        ('digits', 'test', 10, 1, 24)
    assert bundle.label_names == [str(d) for d in range(10)]
    assert (len(bundle.train), len(bundle.eval)) == (1437, 360)  # stratified 80/20 of 1797
    x, y = stack(bundle.train)
    assert x.shape == (1437, 1, 24, 24) and x.dtype == torch.float32
    assert set(y.tolist()) == set(range(10))
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3  # stats of the train canvases
    xe, ye = stack(bundle.eval)
    assert xe.shape == (360, 1, 24, 24) and np.bincount(ye.numpy()).min() >= 35  # stratified
    background = (0 - bundle.mean[0]) / bundle.std[0]
    assert torch.isclose(x.min(), torch.tensor(background))  # black canvas -> normalized zero pixel


@pytest.mark.parametrize('which', ['train', 'eval'])
def test_digits_placement_varies(which):
    bundle = build_datasets('digits', pad=0)
    x, _ = stack(getattr(bundle, which))
    ink = x > x.min()  # pixels above the black canvas
    rows, cols = ink.any(dim=3)[:, 0], ink.any(dim=2)[:, 0]
    tops = rows.float().argmax(dim=1)
    lefts = cols.float().argmax(dim=1)
    assert len(set(zip(tops.tolist(), lefts.tolist()))) > 40
    assert tops.min() <= 1 and tops.max() >= 7 and lefts.min() <= 1 and lefts.max() >= 7  # anywhere on 24x24


def test_digits_val_split_sizes_and_seed():
    a = build_datasets('digits', split='val', seed=0)
    assert a.eval_split == 'val'
    assert (len(a.train), len(a.eval)) == (1437 - 144, 144)
    assert a.train.base is a.eval.base  # the held-out part comes from the training set
    train_idx, val_idx = set(a.train.indices.tolist()), set(a.eval.indices.tolist())
    assert not train_idx & val_idx and train_idx | val_idx == set(range(1437))
    b = build_datasets('digits', split='val', seed=0)
    c = build_datasets('digits', split='val', seed=1)
    assert torch.equal(a.eval.indices, b.eval.indices)
    assert torch.equal(stack(a.eval)[0], stack(b.eval)[0])  # eval: test-time transforms, deterministic
    assert not torch.equal(a.eval.indices, c.eval.indices)
    assert len(build_datasets('digits', split='val', val_size=100).eval) == 100
    with pytest.raises(ValueError):
        build_datasets('digits', split='val', val_size=1437)


def test_subsets_are_seeded_nested_and_bounded():
    small = build_datasets('digits', train_subset=50, eval_subset=20)
    large = build_datasets('digits', train_subset=100, eval_subset=20)
    assert (len(small.train), len(small.eval)) == (50, 20)
    assert set(small.train.indices.tolist()) < set(large.train.indices.tolist())
    assert torch.equal(small.eval.indices, build_datasets('digits', eval_subset=20).eval.indices)
    assert not torch.equal(small.eval.indices, build_datasets('digits', eval_subset=20, seed=3).eval.indices)
    with pytest.raises(ValueError, match='train_subset'):
        build_datasets('digits', train_subset=1438)
    with pytest.raises(ValueError, match='eval_subset'):
        build_datasets('digits', split='val', eval_subset=145)


# ----------------------------------------------------------------------------------- augmentation

def test_pad_random_crop_pads_with_zero_and_shifts():
    crop = pad_random_crop(8, pad=3)
    image = torch.rand(2, 8, 8) + 1  # no zeros anywhere
    seen = set()
    for _ in range(200):
        view = crop(image)
        assert view.shape == (2, 8, 8)
        offsets = crop_offsets(view, image, 3)
        assert len(offsets) == 1
        dy, dx = offsets.pop()
        seen.add((dy, dx))
        # pixels that came from the padding are exactly zero, the others are the image's
        zero_rows = range(0, -dy) if dy < 0 else range(8 - dy, 8)
        for r in zero_rows:
            assert torch.equal(view[:, r], torch.zeros(2, 8))
    assert len(seen) > 20


def test_train_augmentation_translates_with_mean_padding():
    bundle = build_datasets('digits', pad=4)
    torch.manual_seed(0)
    shifted = 0
    for i in range(20):
        view, _ = bundle.train[i]
        source = normalized_raw(bundle.train, i)
        assert view.shape == (1, 24, 24)
        (dy, dx), = crop_offsets(view, source, 4)
        if (dy, dx) != (0, 0):
            shifted += 1
            assert not torch.equal(view, source)
            border = view[:, :-dy] if dy < 0 else view[:, 24 - dy:] if dy > 0 else \
                view[:, :, :-dx] if dx < 0 else view[:, :, 24 - dx:]
            assert border.numel() and torch.all(border == 0)  # padded pixels normalize to exactly 0
    assert shifted >= 15
    # test-time transforms never translate
    assert torch.equal(bundle.eval[0][0], normalized_raw(bundle.eval, 0))


def test_pad_zero_is_identity():
    bundle = build_datasets('digits', pad=0)
    for i in range(5):
        assert torch.equal(bundle.train[i][0], normalized_raw(bundle.train, i))


# ----------------------------------------------------------------------------------------- loaders

class IndexDataset(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(i)), i


def order(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_loader_order_reproducible_per_seed_and_epoch():
    data = IndexDataset(50)
    first = order(make_loader(data, 8, train=True, seed=0, epoch=0))
    assert len(first) == 48 and len(set(first)) == 48  # drop_last defaults to train
    assert order(make_loader(data, 8, train=True, seed=0, epoch=0)) == first
    loader = make_loader(data, 8, train=True, seed=0, epoch=0)
    assert order(loader) == order(loader) == first  # re-iterating replays the epoch
    assert order(make_loader(data, 8, train=True, seed=0, epoch=1)) != first
    assert order(make_loader(data, 8, train=True, seed=1, epoch=0)) != first
    assert order(make_loader(data, 8, train=True, drop_last=False)) != list(range(50))
    assert order(make_loader(data, 8, train=False)) == list(range(50))  # no shuffle, no drop
    with pytest.raises(ValueError):
        make_loader(data, 8, train=False, drop_last=True)


def test_loader_augmentation_reproducible():
    """The augmentation of an item depends on (seed, epoch, index) only: not on the global RNG, nor on the
    number of workers (so --workers may change on resume)."""
    bundle = build_datasets('digits', pad=4, train_subset=64)
    torch.manual_seed(1)
    a = next(iter(make_loader(bundle.train, 32, train=True)))[0]
    torch.manual_seed(2)
    b = next(iter(make_loader(bundle.train, 32, train=True)))[0]
    c = next(iter(make_loader(bundle.train, 32, train=True, epoch=1)))[0]
    d = next(iter(make_loader(bundle.train, 32, train=True, seed=1)))[0]
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)


def test_loader_workers_reproducible():
    bundle = build_datasets('digits', pad=4, train_subset=64)
    batches = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)  # workers are seeded from (seed, epoch), not the global RNG
        batches.append(torch.cat([x for x, _ in make_loader(bundle.train, 16, train=True, num_workers=2, epoch=3)]))
    assert torch.equal(*batches)
    other = torch.cat([x for x, _ in make_loader(bundle.train, 16, train=True, num_workers=2, epoch=4)])
    assert not torch.equal(batches[0], other)


def test_reps_batches_hold_translated_copies():
    bundle = build_datasets('digits', pad=4, train_subset=20)
    sources = [normalized_raw(bundle.train, i) for i in range(len(bundle.train))]
    labels = bundle.train.targets
    x, y = next(iter(make_loader(bundle.train, 8, train=True, reps=4)))
    assert x.shape == (8, 1, 24, 24) and y.shape == (8,)
    found = []
    for g in range(2):
        group, group_labels = x[4 * g:4 * g + 4], y[4 * g:4 * g + 4]
        assert len(set(group_labels.tolist())) == 1
        matches = [{i for i, s in enumerate(sources) if crop_offsets(v, s, 4)} for v in group]
        common = set.intersection(*matches)
        assert len(common) == 1  # all 4 copies come from one source image
        src = common.pop()
        assert labels[src] == group_labels[0]
        shifts = [crop_offsets(v, sources[src], 4) for v in group]
        assert len({frozenset(s) for s in shifts}) > 1  # independently translated
        found.append(src)
    assert found[0] != found[1]  # 8 / 4 = 2 distinct images
    batches = list(make_loader(bundle.train, 8, train=True, reps=4))
    # every image once per epoch, as 4 copies: 20 images / 2 per batch = 10 batches of 8
    assert len(batches) == 10 and all(len(b[0]) == 8 for b in batches)
    assert sorted(torch.cat([b[1][::4] for b in batches]).tolist()) == sorted(labels)


def test_reps_must_divide_batch_size():
    with pytest.raises(ValueError, match='multiple of reps'):
        make_loader(IndexDataset(10), 6, train=True, reps=4)


# ---------------------------------------------------------------------------- file-based datasets

def write_cifar(root: Path, name: str, per_batch: int = 4, n_test: int = 6):
    rng = np.random.default_rng(0)
    if name == 'cifar10':
        folder, train_files, test_file, meta = root / 'cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)], \
            'test_batch', 'batches.meta'
        label_key, n_classes = 'labels', 10
        meta_dict = {'label_names': ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                                     'ship', 'truck'], 'num_cases_per_batch': per_batch, 'num_vis': 3072}
    else:
        folder, train_files, test_file, meta = root / 'cifar-100-python', ['train'], 'test', 'meta'
        label_key, n_classes = 'fine_labels', 100
        meta_dict = {'fine_label_names': [f'class{i}' for i in range(100)],
                     'coarse_label_names': [f'super{i}' for i in range(20)]}
        per_batch *= 5
    folder.mkdir(parents=True)
    for fname, n in [(f, per_batch) for f in train_files] + [(test_file, n_test)]:
        batch = {'batch_label': fname, 'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, n_classes, n).tolist(), 'filenames': [f'{i}.png' for i in range(n)]}
        if name == 'cifar100':
            batch['coarse_labels'] = [0] * n
        with open(folder / fname, 'wb') as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / meta, 'wb') as f:
        pickle.dump(meta_dict, f, protocol=2)
    return folder


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_fake_cifar_loads(tmp_path, name):
    folder = write_cifar(tmp_path, name)
    bundle = build_datasets(name, data_dir=str(tmp_path), split='test')
    assert (len(bundle.train), len(bundle.eval)) == (20, 6)
    assert (bundle.in_chans, bundle.img_size, bundle.num_classes) == (3, 32, 10 if name == 'cifar10' else 100)
    assert bundle.label_names[0] == ('airplane' if name == 'cifar10' else 'class0')
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and isinstance(y, int)
    # eval image = the stored bytes in CHW order, /255 and normalized with the dataset's stats
    with open(folder / ('test_batch' if name == 'cifar10' else 'test'), 'rb') as f:
        raw = pickle.load(f)
    expected = torch.from_numpy(raw['data'][2].reshape(3, 32, 32)).float() / 255
    expected = (expected - torch.tensor(bundle.mean)[:, None, None]) / torch.tensor(bundle.std)[:, None, None]
    xe, ye = bundle.eval[2]
    assert torch.allclose(xe, expected, atol=1e-5)
    assert ye == raw['labels' if name == 'cifar10' else 'fine_labels'][2]
    val = build_datasets(name, data_dir=str(tmp_path), split='val', val_size=5)
    assert (len(val.train), len(val.eval), val.eval_split) == (15, 5, 'val')
    assert build_datasets(name, data_dir=str(folder)).num_classes == bundle.num_classes  # the folder itself


def test_cifar_malformed_batch(tmp_path):
    folder = write_cifar(tmp_path, 'cifar10')
    (folder / 'data_batch_3').write_bytes(b'not a pickle')
    with pytest.raises(DatasetError, match='data_batch_3'):
        build_datasets('cifar10', data_dir=str(tmp_path))


def write_idx(path: Path, array: np.ndarray, magic: int):
    header = magic.to_bytes(4, 'big') + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion(folder: Path, n_train=12, n_test=5):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        write_idx(folder / f'{prefix}-images-idx3-ubyte.gz', rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(folder / f'{prefix}-labels-idx1-ubyte.gz', rng.integers(0, 10, n), 2049)


def test_fake_fashion_mnist_loads(tmp_path):
    write_fashion(tmp_path)
    bundle = build_datasets('fashion-mnist', data_dir=str(tmp_path))
    assert (len(bundle.train), len(bundle.eval)) == (12, 5)
    assert (bundle.in_chans, bundle.img_size, bundle.num_classes) == (1, 28, 10)
    assert bundle.label_names[0] == 'T-shirt/top' and bundle.label_names[9] == 'Ankle boot'
    assert bundle.train.base.images.dtype == torch.uint8
    with gzip.open(tmp_path / 't10k-images-idx3-ubyte.gz') as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(5, 28, 28)
    expected = (torch.from_numpy(raw[1].copy()).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(bundle.eval[1][0][0], expected, atol=1e-5)
    assert bundle.train[0][0].shape == (1, 28, 28)
    val = build_datasets('fashion_mnist', data_dir=str(tmp_path), split='val')
    assert (len(val.train), len(val.eval)) == (11, 1)  # 10% held out


def test_fashion_mnist_bad_idx(tmp_path):
    write_fashion(tmp_path)
    write_idx(tmp_path / 'train-images-idx3-ubyte.gz', np.zeros((12, 28, 28)), 2049)  # labels' magic
    with pytest.raises(DatasetError, match='magic'):
        build_datasets('fashion-mnist', data_dir=str(tmp_path))
    write_fashion(tmp_path)
    write_idx(tmp_path / 't10k-labels-idx1-ubyte.gz', np.zeros(4), 2049)  # 5 images, 4 labels
    with pytest.raises(DatasetError, match='5 images but 4 labels'):
        build_datasets('fashion-mnist', data_dir=str(tmp_path))
    write_fashion(tmp_path)
    with gzip.open(tmp_path / 'train-labels-idx1-ubyte.gz', 'wb') as f:  # header promises 12, has 3
        f.write((2049).to_bytes(4, 'big') + (12).to_bytes(4, 'big') + bytes(3))
    with pytest.raises(DatasetError, match='found 3'):
        build_datasets('fashion-mnist', data_dir=str(tmp_path))


def test_fashion_mnist_system_copy_does_not_mask_data_dir(tmp_path, monkeypatch):
    write_fashion(tmp_path / 'system')
    monkeypatch.setattr(dataset_loaders, 'FASHION_MNIST_DIR', str(tmp_path / 'system'))
    assert len(build_datasets('fashion-mnist').train) == 12  # fallback when no data_dir
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DatasetError) as err:
        build_datasets('fashion-mnist', data_dir=str(tmp_path / 'empty'))
    assert str(tmp_path / 'empty') in str(err.value)


@pytest.mark.skipif(not os.path.isdir(D.FASHION_MNIST_DIR), reason='dataset-fashion-mnist not installed')
def test_real_fashion_mnist():
    bundle = build_datasets('fashion-mnist')
    assert (len(bundle.train), len(bundle.eval)) == (60000, 10000)
    pixels = bundle.train.base.images.float() / 255
    assert abs(pixels.mean().item() - 0.2860) < 1e-3 and abs(pixels.std().item() - 0.3530) < 1e-3


# --------------------------------------------------------------------------- fashion-mnist-shifted

def write_inked_fashion(folder: Path, n_train=400, n_test=60):
    """Fashion-MNIST files whose every pixel is 1..255, so an item's non-zero box on a canvas is where it was
    pasted; returns {'train' | 'test': (images (N, 28, 28) uint8, labels)}."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (('train', 'train', n_train), ('test', 't10k', n_test)):
        images, labels = rng.integers(1, 256, (n, 28, 28)), rng.integers(0, 10, n)
        write_idx(folder / f'{prefix}-images-idx3-ubyte.gz', images, 2051)
        write_idx(folder / f'{prefix}-labels-idx1-ubyte.gz', labels, 2049)
        out[split] = (torch.from_numpy(images.astype(np.uint8)), torch.from_numpy(labels))
    return out


def ink_boxes(canvases):
    """(top, left, height, width) of the non-zero pixels of each (1, H, W) canvas."""
    ink = canvases[:, 0] > 0
    rows, cols = ink.any(dim=2), ink.any(dim=1)
    tops, lefts = rows.float().argmax(dim=1), cols.float().argmax(dim=1)
    return tops, lefts, rows.sum(dim=1), cols.sum(dim=1)


def test_fake_fashion_mnist_shifted(tmp_path):
    raw = write_inked_fashion(tmp_path)
    bundle = build_datasets('fashion-mnist-shifted', data_dir=str(tmp_path), pad=0)
    assert (bundle.name, bundle.in_chans, bundle.img_size, bundle.num_classes) == ('fashion-mnist-shifted', 1, 40, 10)
    assert bundle.label_names == list(D.FASHION_MNIST_CLASSES)
    assert (bundle.mean, bundle.std) == D.canvas_stats(D.FASHION_MNIST_MEAN, D.FASHION_MNIST_STD, 28, 40)
    for split, base in (('train', bundle.train.base), ('test', bundle.eval.base)):
        images, labels = raw[split]
        assert base.images.shape == (len(images), 1, 40, 40) and base.images.dtype == torch.uint8
        assert torch.equal(base.labels, labels.long())
        # each canvas holds its item, unchanged, at its recorded position, and nothing else
        tops, lefts, heights, widths = ink_boxes(base.images)
        assert torch.equal(torch.stack([tops, lefts], 1), base.positions)
        assert bool((heights == 28).all() and (widths == 28).all())
        for i in range(len(images)):
            top, left = base.positions[i].tolist()
            assert torch.equal(base.images[i, 0, top:top + 28, left:left + 28], images[i])
        # items reach every border (offsets 0 and 40 - 28 = 12 on both axes) and every quadrant
        assert (tops.min().item(), tops.max().item(), lefts.min().item(), lefts.max().item()) == (0, 12, 0, 12)
        centre_row, centre_col = tops + 14, lefts + 14
        quadrants = set(zip((centre_row >= 20).tolist(), (centre_col >= 20).tolist()))
        assert quadrants == {(False, False), (False, True), (True, False), (True, True)}
    # the network sees the normalized canvas: (bytes / 255 - mean) / std
    x, y = bundle.eval[5]
    expected = (bundle.eval.base.images[5].float() / 255 - bundle.mean[0]) / bundle.std[0]
    assert torch.allclose(x, expected, atol=1e-5) and y == int(raw['test'][1][5])
    # train and test positions come from different streams of the same uniform distribution (one stream would
    # give test item i the top offset of train item i: both draw their tops first)
    assert not torch.equal(bundle.train.base.positions[:60, 0], bundle.eval.base.positions[:, 0])


def test_fashion_mnist_shifted_positions_fixed(tmp_path):
    write_inked_fashion(tmp_path, n_train=50, n_test=20)
    a = build_datasets('fashion-mnist-shifted', data_dir=str(tmp_path), seed=0)
    b = build_datasets('fashion_mnist_shifted', data_dir=str(tmp_path), seed=7)  # another run's seed, an alias
    for part in ('train', 'eval'):
        assert torch.equal(getattr(a, part).base.images, getattr(b, part).base.images)
        assert torch.equal(getattr(a, part).base.positions, getattr(b, part).base.positions)
    val = build_datasets('fashion-mnist-shifted', data_dir=str(tmp_path), split='val')
    assert (len(val.train), len(val.eval)) == (45, 5)  # 10% held out, the same canvases
    assert val.train.base.images.data_ptr() == val.eval.base.images.data_ptr()
    # img_size is the canvas side: offsets 0..20 at 48; the item must fit
    big = build_datasets('fashion-mnist-shifted', data_dir=str(tmp_path), img_size=48)
    assert big.img_size == 48 and big.train[0][0].shape == (1, 48, 48)
    assert 0 <= big.train.base.positions.min() and big.train.base.positions.max() <= 20
    with pytest.raises(DatasetError, match='>= 28'):
        build_datasets('fashion-mnist-shifted', data_dir=str(tmp_path), img_size=27)


def test_paste_at_random_and_canvas_stats():
    images = torch.arange(1, 1 + 3 * 2 * 2, dtype=torch.uint8).reshape(3, 2, 2)
    canvases, positions = D.paste_at_random(images, 5, torch.Generator().manual_seed(0))
    assert canvases.shape == (3, 1, 5, 5) and positions.shape == (3, 2)
    for i, (top, left) in enumerate(positions.tolist()):
        assert 0 <= top <= 3 and 0 <= left <= 3
        assert torch.equal(canvases[i, 0, top:top + 2, left:left + 2], images[i])
        assert canvases[i].sum() == images[i].sum()  # the rest is black
    many, where = D.paste_at_random(torch.ones(2000, 2, 2, dtype=torch.uint8), 5, torch.Generator().manual_seed(0))
    assert len(torch.unique(where, dim=0)) == 16  # every one of the 4 x 4 offsets
    with pytest.raises(DatasetError):
        D.paste_at_random(images, 1, torch.Generator())
    # one 1x1 pixel of mean 0.5 and std 0.5 on a 2x2 canvas: r = 1/4, mean 0.125,
    # second moment (0.25 + 0.25) / 4 = 0.125, variance 0.125 - 0.125^2 = 0.109375
    assert D.canvas_stats((0.5,), (0.5,), 1, 2) == ((0.125,), (round(0.109375 ** 0.5, 4),))
    # and the formula matches the pixels of real canvases (population statistics)
    pixels = many.float() / 255
    side_stats = ((1 / 255,), (0.0,))
    mean, std = D.canvas_stats(*side_stats, 2, 5)
    assert abs(pixels.mean().item() - mean[0]) < 1e-4 and abs(pixels.std(unbiased=False).item() - std[0]) < 1e-4


@pytest.mark.skipif(not os.path.isdir(D.FASHION_MNIST_DIR), reason='dataset-fashion-mnist not installed')
def test_real_fashion_mnist_shifted():
    bundle = build_datasets('fashion-mnist-shifted', pad=0)
    plain = build_datasets('fashion-mnist', pad=0)
    train, test = bundle.train.base, bundle.eval.base
    assert (len(train), len(test), bundle.img_size) == (60000, 10000, 40)
    pixels = train.images.float() / 255  # the stats the spec states are the canvases' own
    assert abs(pixels.mean().item() - bundle.mean[0]) < 1e-3 and abs(pixels.std().item() - bundle.std[0]) < 1e-3
    assert (bundle.mean, bundle.std) == (D.DATASET_SPECS['fashion-mnist-shifted'].mean,
                                         D.DATASET_SPECS['fashion-mnist-shifted'].std)
    for base, items in ((train, plain.train.base), (test, plain.eval.base)):
        assert len(torch.unique(base.positions, dim=0)) == 13 * 13  # every offset, in train and in test
        for i in (0, 1, len(base) // 2, len(base) - 1):
            top, left = base.positions[i].tolist()
            assert torch.equal(base.images[i, 0, top:top + 28, left:left + 28], items.images[i, 0])


def write_image_folder(root: Path, split: str, classes, per_class: int, size=(64, 64), ext='JPEG'):
    rng = np.random.default_rng(len(split))
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / c / f'{c}_{i}.{ext}')


def imagenet_normalized(path):
    """A whole RGB image file as a (3, H, W) tensor with ImageNet normalization."""
    image = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1) / 255
    return (image - torch.tensor(D.IMAGENET_MEAN)[:, None, None]) / torch.tensor(D.IMAGENET_STD)[:, None, None]


def test_fake_tinyimagenet(tmp_path):
    write_image_folder(tmp_path, 'train', ['n01', 'n02'], 3, ext='png')
    write_image_folder(tmp_path, 'val', ['n01', 'n02'], 2, ext='png')
    (tmp_path / 'train' / 'n01' / 'n01_boxes.txt').write_text('ignored\n')
    bundle = build_datasets('tinyimagenet', data_dir=str(tmp_path), pad=4)
    assert (len(bundle.train), len(bundle.eval), bundle.num_classes) == (6, 4, 2)
    assert (bundle.img_size, bundle.in_chans, bundle.label_names) == (48, 3, ['n01', 'n02'])
    assert bundle.mean == D.IMAGENET_MEAN
    x, y = bundle.train[0]
    assert x.shape == (3, 48, 48) and y == 0
    xe, ye = bundle.eval[3]
    assert xe.shape == (3, 48, 48) and ye == 1
    # eval = the normalized central 48x48 of the 64x64 image
    full = imagenet_normalized(tmp_path / 'val' / 'n02' / 'n02_1.png')
    assert torch.allclose(xe, full[:, 8:56, 8:56], atol=1e-5)
    # train = a random 48x48 crop inside the central 56x56 (pad 4): never touches the outer 4 pixels
    train_full = imagenet_normalized(tmp_path / 'train' / 'n01' / 'n01_0.png')
    offsets = set()
    for _ in range(30):
        x, _ = bundle.train[0]
        match = [(t, l) for t in range(17) for l in range(17)
                 if torch.allclose(x, train_full[:, t:t + 48, l:l + 48], atol=1e-5)]
        assert len(match) == 1 and all(4 <= v <= 12 for v in match[0])
        offsets.add(match[0])
    assert len(offsets) > 5
    val = build_datasets('tinyimagenet', data_dir=str(tmp_path), split='val', val_size=2)
    assert (len(val.train), len(val.eval)) == (4, 2)


def test_tinyimagenet_official_val_layout(tmp_path):
    write_image_folder(tmp_path, 'train', ['n01', 'n02'], 2)
    images = tmp_path / 'val' / 'images'
    images.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(images / f'val_{i}.JPEG')
    (tmp_path / 'val' / 'val_annotations.txt').write_text(
        'val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn01\t1\t1\t9\t9\nval_2.JPEG\tn02\t2\t2\t8\t8\n')
    (tmp_path / 'words.txt').write_text('n01\tgoldfish, Carassius auratus\nn02\tshark\n')
    bundle = build_datasets('tinyimagenet', data_dir=str(tmp_path))
    assert bundle.eval.targets == [1, 0, 1]
    assert bundle.label_names == ['goldfish', 'shark']
    assert bundle.eval[0][0].shape == (3, 48, 48)


def test_fake_imagenet(tmp_path):
    write_image_folder(tmp_path, 'train', ['a', 'b', 'c'], 1, size=(40, 30))
    write_image_folder(tmp_path, 'val', ['a', 'c'], 1, size=(30, 40))  # a val set may lack classes
    bundle = build_datasets('imagenet', data_dir=str(tmp_path))
    assert (len(bundle.train), len(bundle.eval), bundle.num_classes, bundle.img_size) == (3, 2, 3, 224)
    assert bundle.eval.targets == [0, 2]
    assert bundle.train[1][0].shape == (3, 224, 224) and bundle.eval[1][0].shape == (3, 224, 224)
    small = build_datasets('imagenet', data_dir=str(tmp_path), img_size=64)
    assert small.train[0][0].shape == (3, 64, 64)


def test_image_folder_val_with_unknown_class(tmp_path):
    write_image_folder(tmp_path, 'train', ['a'], 1, size=(8, 8))
    write_image_folder(tmp_path, 'val', ['a', 'zzz'], 1, size=(8, 8))
    with pytest.raises(DatasetError, match='zzz'):
        build_datasets('imagenet', data_dir=str(tmp_path))


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize('name, expected', [
    ('cifar10', 'cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}'),
    ('cifar100', 'cifar-100-python/{train,test,meta}'),
    ('fashion-mnist', 'apt-get install dataset-fashion-mnist'),
    ('tinyimagenet', 'val/<class>/'),
    ('imagenet', 'train/<class>/'),
])
def test_empty_folder_explains_layout(tmp_path, name, expected):
    with pytest.raises(DatasetError) as err:
        build_datasets(name, data_dir=str(tmp_path))
    message = str(err.value)
    assert expected in message and str(tmp_path) in message and '--data-dir' in message
    if name == 'tinyimagenet':
        assert 'rearranged' in message and 'train/<class>/' in message
    if name == 'fashion-mnist':
        assert 'train-images-idx3-ubyte.gz' in message


@pytest.mark.parametrize('name', ['cifar10', 'tinyimagenet', 'imagenet'])
def test_missing_data_dir(name):
    with pytest.raises(DatasetError, match='--data-dir'):
        build_datasets(name)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DatasetError) as err:
        build_datasets('mnist')
    assert all(name in str(err.value) for name in DATASETS)
    assert isinstance(err.value, ValueError)


def test_registry_is_the_one_table():
    specs = D.DATASET_SPECS
    assert DATASETS == tuple(specs)
    assert dict(D.DEFAULT_IMG_SIZE) == {n: s.img_size for n, s in specs.items()}
    assert dict(D.DATASET_SHAPES) == {n: (s.in_chans, s.num_classes) for n, s in specs.items()}
    assert dict(D.VAL_SIZES) == {n: s.val_size for n, s in specs.items() if s.val_size is not None}
    assert dict(D.DEFAULT_BATCH) == {n: s.default_batch for n, s in specs.items()}
    assert all(D.default_batch_size(n) == s.default_batch for n, s in specs.items())
    assert D.default_batch_size('Fashion_MNIST') == specs['fashion-mnist'].default_batch
    assert all(D.dataset_spec(a) is s for s in specs.values() for a in s.aliases)
    # ImageNet statistics are timm's
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    for name in ('tinyimagenet', 'imagenet'):
        assert (specs[name].mean, specs[name].std) == (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
    with pytest.raises(TypeError):
        D.DEFAULT_IMG_SIZE['digits'] = 32  # views are read-only: the table is the one place to change


def test_build_datasets_dispatches_through_the_registry(monkeypatch):
    """A dataset is one spec: build_datasets has no per-name branches, so a new entry is all it takes."""
    calls = []

    def load_toy(spec, data_dir, download, img_size, pad):
        calls.append((spec.name, data_dir, download, img_size, pad))
        base = D.ImageTensorDataset(torch.zeros(20, 1, 4, 4, dtype=torch.uint8), torch.arange(20) % 3)
        info = dict(num_classes=spec.num_classes, in_chans=1, img_size=4, mean=(0.0,), std=(1.0,), label_names=None)
        return base, base, None, None, info

    toy = D.DatasetSpec('toy', load_toy, (0.0,), (1.0,), img_size=4, in_chans=1, num_classes=3, default_batch=8,
                        val_size=6, description='a test table entry', aliases=('toy-set',))
    from bioconv_timm.train import datasets as R  # the registry (torch-free); data.py loads what it names
    monkeypatch.setattr(R, 'DATASET_SPECS', dict(R.DATASET_SPECS, toy=toy))
    monkeypatch.setattr(R, 'DATASETS', R.DATASETS + ('toy',))
    monkeypatch.setattr(R, '_ALIASES', dict(R._ALIASES, **{'toy-set': 'toy'}))
    bundle = build_datasets('toy-set', data_dir='somewhere', pad=2, split='val', img_size=None)
    assert calls == [('toy', 'somewhere', False, None, 2)]
    # the spec's val_size (6) is held out
    assert (bundle.name, bundle.num_classes, len(bundle.eval), len(bundle.train)) == ('toy', 3, 6, 14)
    assert D.default_batch_size('toy') == 8


def test_train_config_reads_the_registry():
    """bioconv train's defaults for a dataset are the registry's (input size, shape, batch size)."""
    from bioconv_timm.train.config import TrainConfig, resolve_config
    for name in ('digits', 'fashion-mnist', 'fashion-mnist-shifted'):
        cfg = resolve_config(TrainConfig(model='lc_resnet20', dataset=name, model_kwargs=dict(layers=(1, 1, 1))))
        assert (cfg.img_size, cfg.batch_size) == (D.DEFAULT_IMG_SIZE[name], D.default_batch_size(name))


def test_bad_arguments():
    with pytest.raises(ValueError):
        build_datasets('digits', split='train')
    with pytest.raises(ValueError):
        build_datasets('digits', pad=-1)


def test_distributed_loaders(tmp_path):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        data = IndexDataset(20)
        train = make_loader(data, 4, train=True, distributed=True, seed=5, epoch=2)
        assert train.sampler.epoch == 2 and train.sampler.seed == 5
        first = order(train)
        assert sorted(first) == list(range(20)) and first != list(range(20))
        assert order(make_loader(data, 4, train=True, distributed=True, seed=5, epoch=2)) == first
        assert order(make_loader(data, 4, train=True, distributed=True, seed=5, epoch=3)) != first
        assert order(make_loader(data, 3, train=False, distributed=True)) == list(range(20))
    finally:
        dist.destroy_process_group()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ('echo should-never-run',))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar(tmp_path, 'cifar10')
    with open(folder / 'data_batch_3', 'wb') as f:
        pickle.dump({'data': _RunsCode(), 'labels': [0]}, f, protocol=2)
    with pytest.raises(DatasetError, match='refusing to load'):
        build_datasets('cifar10', data_dir=str(tmp_path))


def test_corrupt_image_names_the_file(tmp_path):
    write_image_folder(tmp_path, 'train', ['a', 'b'], 1, size=(40, 30))
    write_image_folder(tmp_path, 'val', ['a', 'b'], 1, size=(40, 30))
    bad = tmp_path / 'train' / 'b' / 'broken.JPEG'
    bad.write_bytes(b'this is not a JPEG')
    bundle = build_datasets('imagenet', data_dir=str(tmp_path), img_size=32)
    index = [i for i in range(len(bundle.train)) if 'broken' in bundle.train.base.samples[int(bundle.train.indices[i])][0]]
    with pytest.raises(DatasetError, match=f'cannot read image {bad}'):
        bundle.train[index[0]]


def test_tinyimagenet_pad_beyond_the_image_pads_with_the_mean(tmp_path):
    """pad 12: the 72x72 centre crop is larger than the 64x64 image; the extra border must be the
    normalized mean (0), not raw black, so normalization has to come before the crop."""
    write_image_folder(tmp_path, 'train', ['n01'], 1, ext='png')
    write_image_folder(tmp_path, 'val', ['n01'], 1, ext='png')
    white = np.full((64, 64, 3), 255, np.uint8)
    Image.fromarray(white).save(tmp_path / 'train' / 'n01' / 'n01_0.png')
    bundle = build_datasets('tinyimagenet', data_dir=str(tmp_path), pad=12)
    white_norm = ((1 - torch.tensor(D.IMAGENET_MEAN)) / torch.tensor(D.IMAGENET_STD))[:, None, None]
    torch.manual_seed(0)
    saw_border = False
    for _ in range(40):
        x, _ = bundle.train[0]
        is_image = torch.isclose(x, white_norm.expand_as(x), atol=1e-5).all(dim=0)
        is_mean = (x == 0).all(dim=0)
        assert bool((is_image | is_mean).all())  # every pixel is the image or the mean, never raw black
        saw_border |= bool(is_mean.any())
    assert saw_border


def test_the_models_digits_stats_are_the_loaders():
    """The digits cfg's mean/std (bioconv_timm.pixel_stats, read by the models' pretrained cfgs) equal what the
    loader computes from the training canvases."""
    from bioconv_timm.pixel_stats import DIGITS_MEAN, DIGITS_STD
    bundle = build_datasets('digits')
    assert (tuple(bundle.mean), tuple(bundle.std)) == (DIGITS_MEAN, DIGITS_STD)
