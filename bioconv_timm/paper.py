"""The paper's experiment grid as data, and a runner that reproduces one table.

Every cell of the result tables of Pogodin et al. 2021 is a ``PaperCell``: which model, which data
(dataset, padding, "n reps"), the AdamW hyperparameters the authors chose for it (appendix B, Tables
10-12 and the ImageNet "Final hyperparameters" paragraph) and the accuracy they report (Tables 4-6 and
13, mean of 5 runs for CIFAR10/100 and TinyImageNet, 1 run for ImageNet; max-min over runs from Tables
7-9). ``cell.train_config(...)`` is the exact ``TrainConfig`` of that cell.

Tables (``TABLES``):
  * ``'4'``, ``'5'``, ``'6'``: CIFAR10, CIFAR100, TinyImageNet with padding 0, 4, 8 (ResNet20).
  * ``'1'``: the main-text table; it is Table 5 (padding 4) repeated, the same rows and numbers.
  * ``'13'``: ImageNet, 0.5x ResNet18, conv / LC / LC with a conv first layer.
  * ``'2'``: the main-text ImageNet table; the first five rows of Table 13.

``run_table('5', 'cifar10', data_dir=..., seeds=[0, 1, 2, 3, 4], output_root='paper_runs')`` trains
every cell that has no ``result.json`` yet and returns one row per cell (measured vs paper);
``scripts/run_paper_table.py`` is its command line.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .models import _parse_variant
from .train import TrainConfig, finished_run, train

__all__ = ['PaperCell', 'PAPER_CELLS', 'TABLES', 'TABLE_DATASETS', 'cells', 'run_table', 'format_paper_comparison',
           'summarize_runs', 'run_dir']

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
        """Optimizer steps between sleeps ("ws(n)"), read from the model name; 0 for no sharing."""
        return _parse_variant(self.model)[3] or 0

    @property
    def slug(self) -> str:
        """Folder name of the cell inside ``<root>/<table>/<dataset>/``, e.g. 'lc_resnet20-reps4'."""
        return self.model + (f'-reps{self.reps}' if self.reps > 1 else '')

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The ``TrainConfig`` of this cell; ``overrides`` replace any of its fields.

        Overriding ``epochs`` without ``lr_milestones`` compresses the schedule proportionally (the
        paper's own shortcut for grid search: 50 epochs -> decays at 25 and 37, 20 -> 10 and 15).
        """
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f'unknown TrainConfig field(s) {unknown}; available: {sorted(names)}')
        epochs = overrides.get('epochs', self.epochs)
        milestones = self.lr_milestones
        if 'lr_milestones' not in overrides and epochs != self.epochs:
            milestones = _compress_milestones(self.lr_milestones, self.epochs, epochs)
        config = TrainConfig(
            model=self.model, dataset=self.dataset, split='test', pad=self.pad, reps=self.reps,
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            opt='adamw', lr_milestones=milestones, lr_decay=self.lr_decay,
            # explicit, so config.json states the period even though the model name carries it too
            sleep_every=self.sleep_every)
        return dataclasses.replace(config, **overrides)


def _compress_milestones(milestones: Sequence[int], epochs: int, new_epochs: int) -> Tuple[int, ...]:
    scaled = {m * new_epochs // epochs for m in milestones}
    # a milestone at epoch 0 would just lower the initial lr; one past the end never fires
    return tuple(sorted(m for m in scaled if 0 < m < new_epochs))


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


def _small_model(label: str) -> Tuple[str, int]:
    """'LC - ws(10)' -> ('lc_resnet20_ws10', 1); 'LC - 4 reps' -> ('lc_resnet20', 4); 'conv' -> ('conv_resnet20', 1)."""
    if label == 'conv':
        return 'conv_resnet20', 1
    if label == 'LC':
        return 'lc_resnet20', 1
    m = re.fullmatch(r'LC - ws\((\d+)\)', label)
    if m:
        return f'lc_resnet20_ws{m.group(1)}', 1
    m = re.fullmatch(r'LC - (\d+) reps', label)
    if m:
        return 'lc_resnet20', int(m.group(1))
    raise ValueError(f'unrecognised row label {label!r}')


def _small_cells(table: str, pad: int) -> List[PaperCell]:
    out = []
    for d, dataset in enumerate(SMALL_DATASETS):
        for label in (_ROWS_PAD0 if pad == 0 else _ROWS):
            mean, spread = _MEAN[pad][label], _SPREAD[pad][label]
            lr, wd = _HPARAMS[pad][label][d]
            # columns: CIFAR10 top-1 | CIFAR100 top-1, top-5 | TinyImageNet top-1, top-5
            top1_col, top5_col = {'cifar10': (0, None), 'cifar100': (1, 2), 'tinyimagenet': (3, 4)}[dataset]
            model, reps = _small_model(label)
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


# --- running a table ---------------------------------------------------------------------------

def run_dir(output_root: Union[str, Path], cell: PaperCell, seed: int) -> Path:
    """``<output_root>/<table>/<dataset>/<cell slug>-seed<seed>``: one training run's folder."""
    return Path(output_root) / cell.table / cell.dataset / f'{cell.slug}-seed{seed}'


def summarize_runs(cell: PaperCell, results: Sequence[Dict[str, Any]], seeds: Sequence[int],
                   dirs: Sequence[str], reused: int = 0) -> Dict[str, Any]:
    """One comparison row from the ``final`` metrics of a cell's runs (one per seed)."""
    top1 = [float(r['top1']) for r in results]
    top5 = [float(r['top5']) for r in results if r.get('top5') is not None]
    row: Dict[str, Any] = dict(
        table=cell.table, dataset=cell.dataset, pad=cell.pad, label=cell.label, model=cell.model, reps=cell.reps,
        lr=cell.lr, weight_decay=cell.weight_decay, seeds=list(seeds), top1_runs=top1, top5_runs=top5,
        top1=sum(top1) / len(top1), top1_spread=max(top1) - min(top1),
        top5=sum(top5) / len(top5) if top5 else None, top5_spread=max(top5) - min(top5) if top5 else None,
        paper_top1=cell.paper_top1, paper_top5=cell.paper_top5, paper_spread=cell.paper_spread,
        paper_spread_top5=cell.paper_spread_top5, paper_runs=cell.runs, run_dirs=list(dirs), reused=reused)
    row['diff_top1'] = row['top1'] - cell.paper_top1
    row['diff_top5'] = row['top5'] - cell.paper_top5 if row['top5'] is not None and cell.paper_top5 is not None \
        else None
    return row


def run_table(table: str, dataset: Optional[str] = None,
              data_dir: Union[None, str, Path, Mapping[str, Union[str, Path]]] = None,
              seeds: Optional[Sequence[int]] = None, output_root: Union[str, Path] = 'paper_runs',
              epochs: Optional[int] = None, train_subset: Optional[int] = None, eval_subset: Optional[int] = None,
              device: Optional[str] = None, val_size: Optional[int] = None, batch_size: Optional[int] = None,
              labels: Optional[Sequence[str]] = None, write: bool = True, verbose: bool = True,
              **overrides: Any) -> List[Dict[str, Any]]:
    """Train every cell of ``table`` (for ``dataset``, or all of the table's datasets) and compare.

    Args:
        table: one of ``TABLES``.
        dataset: one of the table's datasets; None runs them all.
        data_dir: dataset folder, or a mapping dataset -> folder when running several datasets.
        seeds: one run per seed per cell; default ``range(cell.runs)`` (5 small-scale, 1 ImageNet).
        output_root: runs go to ``<output_root>/<table>/<dataset>/<cell slug>-seed<k>/``; a run whose
            ``result.json`` exists is read back instead of retrained, an unfinished one resumes from
            its ``last.pth``.
        epochs, train_subset, eval_subset, device, val_size, batch_size, **overrides: TrainConfig fields
            that replace the paper's settings (None keeps them), e.g. for a short smoke run.
        labels: run only these rows (paper labels, e.g. ``['conv', 'LC - ws(10)']``); default all.
        write: also write ``table<id>[-<dataset>].md`` / ``.json`` into ``output_root``.

    Returns:
        One row per cell (see ``summarize_runs``): measured mean/spread over seeds next to the paper's.
    """
    selected = cells(table, dataset)
    if labels is not None:
        unknown = sorted(set(labels) - {c.label for c in selected})
        if unknown:
            raise ValueError(f'table {table} has no row(s) {unknown}; its rows are '
                             f'{sorted({c.label for c in selected})}')
        selected = [c for c in selected if c.label in set(labels)]
    common = dict(overrides)
    for key, value in dict(epochs=epochs, train_subset=train_subset, eval_subset=eval_subset, device=device,
                           val_size=val_size, batch_size=batch_size).items():
        if value is not None:
            common[key] = value
    total = sum(len(seeds) if seeds is not None else c.runs for c in selected)
    done = 0
    rows = []
    for cell in selected:
        cell_seeds = list(seeds) if seeds is not None else list(range(cell.runs))
        folder_data = data_dir.get(cell.dataset) if isinstance(data_dir, Mapping) else data_dir
        results, dirs, reused = [], [], 0
        for seed in cell_seeds:
            done += 1
            folder = run_dir(output_root, cell, seed)
            config = cell.train_config(data_dir=None if folder_data is None else str(folder_data), seed=seed,
                                       output_dir=str(folder), resume=True, **common)
            finished = finished_run(folder, config)  # refuses a finished run with other settings
            if finished is not None:
                final = finished['final']
                reused += 1
                if verbose:
                    print(f'[{done}/{total}] table {cell.table} {cell.dataset} {cell.label!r} seed {seed}: '
                          f'done before (top1 {final["top1"]:.2f}) {folder}', flush=True)
            else:
                if verbose:
                    print(f'[{done}/{total}] table {cell.table} {cell.dataset} {cell.label!r} seed {seed}: '
                          f'training {cell.model} -> {folder}', flush=True)
                final = train(config).final
            results.append(final)
            dirs.append(str(folder))
        rows.append(summarize_runs(cell, results, cell_seeds, dirs, reused))

    text = format_paper_comparison(rows)
    if verbose:
        print(text, flush=True)
    if write:
        root = Path(output_root)
        root.mkdir(parents=True, exist_ok=True)
        stem = f'table{table}' + (f'-{dataset}' if dataset else '')
        _atomic_write(root / f'{stem}.md', f'# Paper Table {table}: measured vs reported\n\n{text}\n')
        _atomic_write(root / f'{stem}.json', json.dumps(rows, indent=2))
    return rows


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the comparison table ----------------------------------------------------------------------

def _pm(mean: Optional[float], spread: Optional[float], digits: int) -> str:
    """'85.12 ± 0.30' (half the max-min spread), or just the mean when there is no spread."""
    if mean is None:
        return '-'
    if spread is None:
        return f'{mean:.{digits}f}'
    return f'{mean:.{digits}f} ± {spread / 2:.2f}'


def _signed(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:+.2f}'


def format_paper_comparison(rows: Sequence[Dict[str, Any]]) -> str:
    """Markdown table of measured vs paper accuracy, one line per row from ``run_table``.

    Measured accuracies are the mean over seeds ± half their max-min spread (paper: the same from
    Tables 7-9, where given). "diff" is measured - paper; "vs conv" is each row's top-1 minus the conv
    row of the same table and dataset (measured / paper), the paper's own "Diff" column.
    """
    conv = {(r['table'], r['dataset']): r for r in rows if r['label'] == 'conv'}
    show_top5 = any(r.get('paper_top5') is not None for r in rows)
    header = ['table', 'dataset', 'pad', 'label', 'runs', 'top-1 (ours)', 'top-1 (paper)', 'diff',
              'vs conv (ours / paper)']
    if show_top5:
        header += ['top-5 (ours)', 'top-5 (paper)', 'diff top-5']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    for r in rows:
        ref = conv.get((r['table'], r['dataset']))
        if ref is not None and r is not ref:
            vs_conv = f"{r['top1'] - ref['top1']:+.2f} / {r['paper_top1'] - ref['paper_top1']:+.1f}"
        else:
            vs_conv = '-'
        cols = [r['table'], r['dataset'], str(r['pad']), r['label'], str(len(r['top1_runs'])),
                _pm(r['top1'], r['top1_spread'] if len(r['top1_runs']) > 1 else None, 2),
                _pm(r['paper_top1'], r.get('paper_spread'), 1), _signed(r['diff_top1']), vs_conv]
        if show_top5:
            cols += [_pm(r.get('top5'), r.get('top5_spread') if len(r.get('top5_runs', ())) > 1 else None, 2),
                     _pm(r.get('paper_top5'), r.get('paper_spread_top5'), 1), _signed(r.get('diff_top5'))]
        lines.append('| ' + ' | '.join(cols) + ' |')
    return '\n'.join(lines)
