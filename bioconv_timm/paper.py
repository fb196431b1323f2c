"""The paper's facts as data: every reported number, row label, hyperparameter and the citation.

This module is the one source the rest of the package reads for them; it runs nothing (the runner that
trains a table is ``bioconv_timm.train.paper_runs``).

Every cell of the result tables of Pogodin et al. 2021 is a ``PaperCell``: which model, which data
(dataset, padding, "n reps"), the AdamW hyperparameters the authors chose for it (appendix B, Tables
10-12 and the ImageNet "Final hyperparameters" paragraph) and the accuracy they report (Tables 4-6 and
13, mean of 5 runs for CIFAR10/100 and TinyImageNet, 1 run for ImageNet; max-min over runs from Tables
7-9). ``bioconv_timm.train.paper_runs.cell_train_config(cell)`` is the exact ``TrainConfig`` of a cell.

Tables (``TABLES``):
  * ``'4'``, ``'5'``, ``'6'``: CIFAR10, CIFAR100, TinyImageNet with padding 0, 4, 8 (ResNet20).
  * ``'1'``: the main-text table; it is Table 5 (padding 4) repeated, the same rows and numbers.
  * ``'13'``: ImageNet, 0.5x ResNet18, conv / LC / LC with a conv first layer.
  * ``'2'``: the main-text ImageNet table; the first five rows of Table 13.

Row labels and model names map one to one through :func:`model_for_label` and :func:`label_for_model`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .models import model_spec

__all__ = ['CITATION', 'PaperCell', 'PAPER_CELLS', 'TABLES', 'TABLE_DATASETS', 'cells', 'model_for_label',
           'label_for_model', 'cifar10_pad4_lr', 'reported_top1', 'TABLE1_TOP1', 'reported_diff', 'TABLE1_DIFF']

CITATION = """@inproceedings{pogodin2021towards,
  title     = {Towards Biologically Plausible Convolutional Networks},
  author    = {Pogodin, Roman and Mehta, Yash and Lillicrap, Timothy P. and Latham, Peter E.},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2021}
}"""

TABLES: Tuple[str, ...] = ('1', '2', '4', '5', '6', '13')
SMALL_DATASETS: Tuple[str, ...] = ('cifar10', 'cifar100', 'tinyimagenet')
TABLE_DATASETS: Dict[str, Tuple[str, ...]] = {
    '1': SMALL_DATASETS, '4': SMALL_DATASETS, '5': SMALL_DATASETS, '6': SMALL_DATASETS,
    '2': ('imagenet',), '13': ('imagenet',),
}



@dataclass(frozen=True)
class PaperCell:
    """One cell of a paper table: the run's settings and the accuracy the paper reports for it."""
    table: str                          # '1', '2', '4', '5', '6' or '13'
    dataset: str                        # 'cifar10' | 'cifar100' | 'tinyimagenet' | 'imagenet'
    pad: int                            # translation padding (0 / 4 / 8); 0 for ImageNet (standard augmentation)
    label: str                          # the row as the paper names it, e.g. 'LC - ws(10)', 'LC - 4 reps'
    model: str                          # registered timm name, e.g. 'lc_resnet20_ws10'
    reps: int                           # n translated copies of each image per batch ("n reps")
    lr: float                           # AdamW learning rate (Tables 10-12, B.2)
    weight_decay: float                 # AdamW weight decay (Tables 10-12, B.2)
    batch_size: int                     # 512 CIFAR/TinyImageNet, 256 ImageNet
    paper_top1: float                   # reported top-1 (%), mean over `runs`
    paper_top5: Optional[float] = None  # reported top-5 (%); CIFAR10 has none
    paper_spread: Optional[float] = None  # max - min top-1 over the 5 runs (Tables 7-9); None for 1 run
    paper_spread_top5: Optional[float] = None  # max - min top-5 over the 5 runs (Tables 7-9)
    runs: int = 5                       # runs behind the paper's mean (5 small-scale, 1 ImageNet)
    epochs: int = 200
    lr_milestones: Tuple[int, ...] = (100, 150)
    lr_decay: float = 0.25              # lr divided by 4 at each milestone

    @property
    def sleep_every(self) -> int:
        """Optimizer steps between sleeps ("ws(n)") of the cell's model; 0 for no sharing."""
        return model_spec(self.model).sleep_every or 0

    @property
    def slug(self) -> str:
        """Folder name of the cell inside ``<root>/<table>/<dataset>/``, e.g. 'lc_resnet20-reps4'."""
        return self.model + (f'-reps{self.reps}' if self.reps > 1 else '')


# --- the numbers, transcribed from the paper --------------------------------------------------
# Small-scale rows (Tables 4-12). Padding 0 has no "n reps" rows.
_ROWS_PAD0 = ('conv', 'LC', 'LC - ws(1)', 'LC - ws(10)', 'LC - ws(100)')
_ROWS = ('conv', 'LC', 'LC - 4 reps', 'LC - 8 reps', 'LC - 16 reps', 'LC - ws(1)', 'LC - ws(10)', 'LC - ws(100)')

# Tables 4, 5, 6 (mean of 5 runs, %): CIFAR10 top-1, CIFAR100 top-1, top-5, TinyImageNet top-1, top-5.
_MEAN: Dict[int, Dict[str, Tuple[float, float, float, float, float]]] = {
    0: {  # Table 4
        'conv':         (84.1, 49.5, 78.2, 26.0, 51.2),
        'LC':           (67.2, 34.9, 62.2, 12.0, 30.4),
        'LC - ws(1)':   (74.8, 41.8, 70.1, 24.9, 49.1),
        'LC - ws(10)':  (75.9, 44.4, 72.0, 28.1, 52.5),
        'LC - ws(100)': (75.4, 43.4, 71.9, 27.4, 51.9),
    },
    4: {  # Table 5 (= Table 1)
        'conv':         (88.3, 59.2, 84.9, 38.6, 65.1),
        'LC':           (80.9, 49.8, 75.5, 29.6, 52.7),
        'LC - 4 reps':  (82.9, 52.1, 76.4, 31.9, 54.9),
        'LC - 8 reps':  (83.8, 54.3, 77.9, 33.0, 55.6),
        'LC - 16 reps': (85.0, 55.9, 78.8, 34.0, 56.2),
        'LC - ws(1)':   (87.4, 58.7, 83.4, 41.6, 66.1),
        'LC - ws(10)':  (85.1, 55.7, 80.9, 37.4, 61.8),
        'LC - ws(100)': (82.0, 52.8, 80.1, 37.1, 62.8),
    },
    8: {  # Table 6
        'conv':         (88.7, 59.6, 85.4, 42.6, 68.7),
        'LC':           (80.7, 47.7, 74.8, 31.9, 55.4),
        'LC - 4 reps':  (82.8, 50.6, 76.2, 35.5, 58.6),
        'LC - 8 reps':  (83.6, 53.0, 77.4, 35.8, 59.0),
        'LC - 16 reps': (85.0, 55.6, 78.4, 37.9, 60.3),
        'LC - ws(1)':   (87.8, 59.2, 84.0, 43.6, 67.9),
        'LC - ws(10)':  (84.3, 53.7, 80.4, 39.6, 64.5),
        'LC - ws(100)': (79.5, 50.0, 78.6, 39.2, 64.8),
    },
}

# Tables 7, 8, 9 (max - min over 5 runs, %), same columns as _MEAN.
_SPREAD: Dict[int, Dict[str, Tuple[float, float, float, float, float]]] = {
    0: {  # Table 7
        'conv':         (0.5, 1.0, 1.7, 1.0, 0.4),
        'LC':           (0.4, 1.6, 1.5, 1.0, 1.7),
        'LC - ws(1)':   (0.5, 1.3, 1.3, 1.2, 2.0),
        'LC - ws(10)':  (0.8, 1.0, 0.7, 1.8, 2.1),
        'LC - ws(100)': (0.9, 0.7, 0.9, 1.0, 1.3),
    },
    4: {  # Table 8
        'conv':         (0.7, 1.5, 0.2, 1.2, 1.1),
        'LC':           (0.8, 1.1, 0.4, 0.7, 0.8),
        'LC - 4 reps':  (0.8, 1.3, 0.8, 0.5, 0.8),
        'LC - 8 reps':  (0.3, 1.4, 1.3, 0.7, 1.2),
        'LC - 16 reps': (0.7, 0.7, 0.6, 0.9, 0.5),
        'LC - ws(1)':   (0.5, 1.1, 0.9, 0.9, 0.6),
        'LC - ws(10)':  (0.6, 1.1, 0.3, 0.6, 1.2),
        'LC - ws(100)': (0.7, 1.0, 0.6, 0.2, 0.9),
    },
    8: {  # Table 9
        'conv':         (0.9, 1.5, 1.2, 1.7, 1.0),
        'LC':           (0.5, 0.6, 0.5, 0.5, 0.9),
        'LC - 4 reps':  (0.4, 0.9, 0.3, 0.6, 0.8),
        'LC - 8 reps':  (0.6, 0.9, 0.5, 0.5, 0.6),
        'LC - 16 reps': (0.9, 0.9, 0.6, 0.5, 1.1),
        'LC - ws(1)':   (0.4, 1.2, 1.5, 0.7, 0.7),
        'LC - ws(10)':  (0.2, 1.4, 0.9, 1.4, 1.2),
        'LC - ws(100)': (0.4, 0.5, 0.7, 0.7, 0.9),
    },
}

# Tables 10, 11, 12 (AdamW): (lr, weight decay) for CIFAR10, CIFAR100, TinyImageNet.
_HPARAMS: Dict[int, Dict[str, Tuple[Tuple[float, float], Tuple[float, float], Tuple[float, float]]]] = {
    0: {  # Table 10
        'conv':         ((1e-2, 1e-2), (1e-2, 1e-2), (5e-3, 1e-2)),
        'LC':           ((1e-3, 1e-2), (1e-3, 1e-2), (1e-3, 1e-4)),
        'LC - ws(1)':   ((1e-3, 1e-2), (1e-3, 1e-2), (1e-3, 1e-4)),
        'LC - ws(10)':  ((5e-4, 1e-2), (5e-4, 1e-4), (5e-4, 1e-2)),
        'LC - ws(100)': ((1e-4, 1e-2), (1e-4, 1e-2), (1e-3, 1e-4)),
    },
    4: {  # Table 11
        'conv':         ((1e-2, 1e-4), (1e-2, 1e-2), (5e-3, 1e-4)),
        'LC':           ((1e-3, 1e-4), (5e-4, 1e-2), (5e-4, 1e-4)),
        'LC - 4 reps':  ((1e-3, 1e-2), (1e-3, 1e-2), (5e-4, 1e-2)),
        'LC - 8 reps':  ((5e-4, 1e-2), (5e-4, 1e-4), (5e-4, 1e-2)),
        'LC - 16 reps': ((5e-4, 1e-2), (5e-4, 1e-2), (5e-4, 1e-2)),
        'LC - ws(1)':   ((1e-3, 1e-2), (1e-3, 1e-4), (1e-3, 1e-2)),
        'LC - ws(10)':  ((5e-4, 1e-2), (5e-4, 1e-2), (1e-3, 1e-4)),
        'LC - ws(100)': ((5e-4, 1e-2), (5e-4, 1e-2), (1e-3, 1e-2)),
    },
    8: {  # Table 12
        'conv':         ((1e-2, 1e-2), (1e-2, 1e-2), (5e-3, 1e-2)),
        'LC':           ((1e-3, 1e-2), (5e-4, 1e-4), (1e-3, 1e-2)),
        'LC - 4 reps':  ((5e-4, 1e-2), (1e-3, 1e-4), (5e-4, 1e-2)),
        'LC - 8 reps':  ((1e-3, 1e-2), (5e-4, 1e-4), (5e-4, 1e-4)),
        'LC - 16 reps': ((5e-4, 1e-4), (5e-4, 1e-2), (5e-4, 1e-2)),
        'LC - ws(1)':   ((1e-3, 1e-4), (1e-3, 1e-2), (1e-3, 1e-2)),
        'LC - ws(10)':  ((5e-4, 1e-2), (5e-4, 1e-4), (1e-3, 1e-4)),
        'LC - ws(100)': ((5e-4, 1e-2), (5e-4, 1e-4), (1e-3, 1e-4)),
    },
}

# Table 13 (ImageNet, 1 run): label, model, top-1, top-5, lr. Appendix B.2 "Final hyperparameters":
# lr 1e-3 for conv and LC ws(1), 5e-4 for all other LC and every LC with a conv first layer; wd 1e-2.
_IMAGENET: Tuple[Tuple[str, str, float, float, float], ...] = (
    ('conv',                         'conv_resnet18_half',              63.5, 84.7, 1e-3),
    ('LC',                           'lc_resnet18_half',                46.7, 70.0, 5e-4),
    ('LC - ws(1)',                   'lc_resnet18_half_ws1',            61.7, 83.1, 1e-3),
    ('LC - ws(10)',                  'lc_resnet18_half_ws10',           59.3, 81.1, 5e-4),
    ('LC - ws(100)',                 'lc_resnet18_half_ws100',          54.5, 77.7, 5e-4),
    ('LC + 1st layer conv',          'lc_resnet18_half_convstem',       52.2, 75.1, 5e-4),
    ('LC + 1st layer conv - ws(1)',  'lc_resnet18_half_convstem_ws1',   63.6, 84.5, 5e-4),
    ('LC + 1st layer conv - ws(10)', 'lc_resnet18_half_convstem_ws10',  61.6, 83.1, 5e-4),
    ('LC + 1st layer conv - ws(100)', 'lc_resnet18_half_convstem_ws100', 59.1, 81.1, 5e-4),
)
_IMAGENET_TABLE2_ROWS = 5  # Table 2 = the plain 0.5x ResNet18 rows of Table 13


_CONV_STEM = 'LC + 1st layer conv'


def model_for_label(label: str, arch: str = 'resnet20') -> Tuple[str, int]:
    """A paper row label -> (registered model name, "n reps"): the one mapping from labels to models.

    'conv' -> ('conv_resnet20', 1); 'LC - ws(10)' -> ('lc_resnet20_ws10', 1); 'LC - 4 reps' -> ('lc_resnet20', 4);
    'LC + 1st layer conv - ws(1)' with arch 'resnet18_half' -> ('lc_resnet18_half_convstem_ws1', 1).
    """
    if label == 'conv':
        return f'conv_{arch}', 1
    m = re.fullmatch(rf'(LC|{re.escape(_CONV_STEM)})(?: - ws\((\d+)\)| - (\d+) reps)?', label)
    if m is None:
        raise ValueError(f"unrecognised paper row label {label!r}; labels look like 'conv', 'LC', 'LC - ws(10)', "
                         f"'LC - 4 reps' or '{_CONV_STEM} - ws(1)'")
    name = f'lc_{arch}' + ('_convstem' if m.group(1) == _CONV_STEM else '') + (f'_ws{m.group(2)}' if m.group(2) else '')
    return name, int(m.group(3) or 1)


def label_for_model(model_name: str, reps: int = 1) -> str:
    """The inverse of :func:`model_for_label`: 'lc_resnet20_ws10' -> 'LC - ws(10)'; ('lc_resnet20', 4) ->
    'LC - 4 reps'. The label names the cell whatever the architecture."""
    spec = model_spec(model_name)
    if spec.layer_type == 'conv':
        return 'conv'
    label = 'LC' if spec.stem_type == spec.layer_type else _CONV_STEM
    if spec.sleep_every:
        return f'{label} - ws({spec.sleep_every})'
    return f'{label} - {reps} reps' if reps > 1 else label


def _small_cells(table: str, pad: int) -> List[PaperCell]:
    out = []
    for d, dataset in enumerate(SMALL_DATASETS):
        for label in (_ROWS_PAD0 if pad == 0 else _ROWS):
            mean, spread = _MEAN[pad][label], _SPREAD[pad][label]
            lr, wd = _HPARAMS[pad][label][d]
            # columns: CIFAR10 top-1 | CIFAR100 top-1, top-5 | TinyImageNet top-1, top-5
            top1_col, top5_col = {'cifar10': (0, None), 'cifar100': (1, 2), 'tinyimagenet': (3, 4)}[dataset]
            model, reps = model_for_label(label, 'resnet20')
            out.append(PaperCell(
                table=table, dataset=dataset, pad=pad, label=label, model=model, reps=reps, lr=lr,
                weight_decay=wd, batch_size=512, paper_top1=mean[top1_col],
                paper_top5=None if top5_col is None else mean[top5_col], paper_spread=spread[top1_col],
                paper_spread_top5=None if top5_col is None else spread[top5_col], runs=5))
    return out


def _imagenet_cells(table: str, n_rows: int) -> List[PaperCell]:
    # pad 0: ImageNet uses the standard resize/random-crop/flip augmentation, not translation padding
    return [PaperCell(table=table, dataset='imagenet', pad=0, label=label, model=model, reps=1, lr=lr,
                      weight_decay=1e-2, batch_size=256, paper_top1=top1, paper_top5=top5, runs=1)
            for label, model, top1, top5, lr in _IMAGENET[:n_rows]]


PAPER_CELLS: Tuple[PaperCell, ...] = tuple(
    _small_cells('1', 4) + _imagenet_cells('2', _IMAGENET_TABLE2_ROWS)
    + _small_cells('4', 0) + _small_cells('5', 4) + _small_cells('6', 8)
    + _imagenet_cells('13', len(_IMAGENET)))


def cells(table: str, dataset: Optional[str] = None) -> List[PaperCell]:
    """The cells of one table (in the paper's row order, dataset by dataset), optionally one dataset's."""
    table = str(table)
    if table not in TABLES:
        raise ValueError(f'unknown table {table!r}; the paper tables with results are {list(TABLES)}')
    if dataset is not None and dataset not in TABLE_DATASETS[table]:
        raise ValueError(f'table {table} has no {dataset!r} column; it covers {list(TABLE_DATASETS[table])}')
    return [c for c in PAPER_CELLS if c.table == table and (dataset is None or c.dataset == dataset)]


def cifar10_pad4_lr(model_name: str) -> float:
    """The AdamW learning rate of Table 11 (CIFAR10, padding 4) for the model's row: conv 1e-2, LC and ws(1) 1e-3,
    ws(10) and ws(100) 5e-4. A conv-stem model takes its LC row's."""
    spec = model_spec(model_name)
    label = 'conv' if spec.layer_type == 'conv' else 'LC' + (f' - ws({spec.sleep_every})' if spec.sleep_every else '')
    return _HPARAMS[4][label][0][0]


def reported_top1(dataset: str = 'cifar10', pad: int = 4) -> Dict[str, float]:
    """{row label: the paper's mean top-1} of one small-scale dataset and padding (default: Table 1)."""
    return {c.label: c.paper_top1 for c in PAPER_CELLS if c.table in ('4', '5', '6') and c.dataset == dataset
            and c.pad == pad}


# Table 1 (= Table 5, CIFAR10, padding 4): {row label: mean top-1}, the numbers compare and the model cards quote.
TABLE1_TOP1: Dict[str, float] = reported_top1('cifar10', pad=4)


# The "Diff" column (top-1 minus conv's) as the paper prints it for CIFAR10: Table 4 (padding 0) and Table 5 = Table 1
# (padding 4), for the rows `bioconv compare` runs. Quoted, never recomputed: the paper took its differences from
# unrounded means, so some are 0.1 away from the difference of the rounded means in _MEAN (padding 4, ws(1): -0.8,
# not 87.4 - 88.3 = -0.9; padding 0, LC / ws(10) / ws(100): -16.8 / -8.1 / -8.6). Read against the paper for issue 25.
_CIFAR10_DIFF: Dict[int, Dict[str, float]] = {
    0: {'LC': -16.8, 'LC - ws(1)': -9.3, 'LC - ws(10)': -8.1, 'LC - ws(100)': -8.6},  # Table 4
    4: {'LC': -7.4, 'LC - 4 reps': -5.4, 'LC - ws(1)': -0.8, 'LC - ws(10)': -3.2, 'LC - ws(100)': -6.3},  # Table 5
}


def reported_diff(dataset: str = 'cifar10', pad: int = 4) -> Dict[str, float]:
    """{row label: the paper's printed Diff (top-1 minus conv's, points)} of CIFAR10 at padding 0 or 4; conv has none.

    Quote these rather than subtracting :func:`reported_top1` values, which are rounded."""
    if dataset != 'cifar10' or pad not in _CIFAR10_DIFF:
        raise ValueError(f'the paper\'s Diff values are transcribed for cifar10 at padding 0 and 4, not {dataset!r} '
                         f'at padding {pad}')
    return dict(_CIFAR10_DIFF[pad])


# Table 1's Diff column (CIFAR10, padding 4): {row label: Diff}, what compare's and the reports' "paper Diff" quote.
TABLE1_DIFF: Dict[str, float] = reported_diff('cifar10', pad=4)
