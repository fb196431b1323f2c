"""``bioconv compare``: the paper's Table 1 comparison on one dataset with one command.

Trains conv, LC, LC with n translated copies ("n reps") and LC with sleep every 1 / 10 / 100 steps,
then prints a table shaped like paper Table 1 (top-1, difference to conv, and the paper's CIFAR10
pad-4 numbers beside them) and writes a bar chart. Each finished cell's result is kept in its run
folder, so an interrupted comparison continues where it stopped.
"""
from __future__ import annotations

import copy

import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .._atomic import atomic_write_text, write_json
from ..paper import TABLE1_DIFF, TABLE1_TOP1, model_for_label
from ..run_folder import hold_run_folder
from ..models import TIMM_ARCHS
from ..settings import ConfigError, inherit, setting, validate_settings
from .config import TrainConfig
from .datasets import canonical_dataset_name

if TYPE_CHECKING:
    from .sweep import RunOutcome
# .sweep (torch) is imported when a comparison runs: CompareConfig (`bioconv compare`'s flags) loads at once

__all__ = ['CompareConfig', 'CompareCell', 'compare', 'preset_config', 'PRESETS', 'cell_config', 'format_compare_table', 'DEFAULT_CELLS', 'PAPER_CIFAR10_PAD4']

# Paper Table 1 / Table 5: CIFAR10, padding 4, mean of 5 runs, top-1 (%), by row label.
PAPER_CIFAR10_PAD4 = TABLE1_TOP1


@dataclass(frozen=True)
class CompareCell:
    label: str               # row name, as in the paper's table
    regularizer: str         # '-', 'Data Translation', 'Weight Sharing'
    layer: str               # 'conv' or 'lc'
    sleep: Optional[int] = None
    reps: int = 1
    sleep_optimizer: Optional[str] = None  # None: the CompareConfig's

    @property
    def slug(self) -> str:
        """Run-folder name: 'LC - ws(10), average' -> 'lc_ws10_average'."""
        return ''.join(c for c in self.label.replace(' - ', '_').replace(', ', '_').replace(' ', '')
                       if c.isalnum() or c == '_').lower()

    def model(self, arch: str) -> str:
        """The registered model of this row (its label without a ', policy' suffix) at ``arch``."""
        return model_for_label(self.label.split(',')[0], arch)[0]

    @property
    def lr_key(self) -> str:
        return self.layer + (f'_ws{self.sleep}' if self.sleep else '')


DEFAULT_CELLS: Tuple[CompareCell, ...] = (
    CompareCell('conv', '-', 'conv'),
    CompareCell('LC', '-', 'lc'),
    CompareCell('LC - 4 reps', 'Data Translation', 'lc', reps=4),
    CompareCell('LC - ws(1)', 'Weight Sharing', 'lc', sleep=1),
    CompareCell('LC - ws(10)', 'Weight Sharing', 'lc', sleep=10),
    CompareCell('LC - ws(100)', 'Weight Sharing', 'lc', sleep=100),
)

def select_cells(slugs: Sequence[str], cells: Sequence[CompareCell] = DEFAULT_CELLS) -> Tuple[CompareCell, ...]:
    """The cells named by their slugs ('conv', 'lc', 'lc_4reps', 'lc_ws1', ...), in the given order."""
    by_slug = {c.slug: c for c in cells}
    unknown = [s for s in slugs if s not in by_slug]
    if unknown:
        raise ConfigError(f'unknown compare cell(s) {unknown}; the cells are {list(by_slug)}')
    return tuple(by_slug[s] for s in slugs)


# Learning rates for the short CPU budget (AdamW). From our Fashion-MNIST and digits probes
# (docs/results/fashion_mnist.md): sharing shrinks the effective step of an LC layer, so frequent sharing wants a larger lr, not the paper's smaller
# one (the paper's lrs are what `bioconv train` uses by default).
DEFAULT_LRS = {'conv': 5e-3, 'lc': 1e-3, 'lc_ws1': 3e-3, 'lc_ws10': 1e-3, 'lc_ws100': 5e-4}


def _cells(value: Any) -> Tuple[CompareCell, ...]:
    """Cells as given: CompareCell objects, or slugs ('conv', 'lc_ws10', ...) as on the command line."""
    if isinstance(value, (str, CompareCell)):
        value = (value,)
    slugs = [v for v in value if not isinstance(v, CompareCell)]
    by_slug = dict(zip(slugs, select_cells(slugs))) if slugs else {}
    return tuple(v if isinstance(v, CompareCell) else by_slug[v] for v in value)


def _distinct(values: Tuple[Any, ...], config: Any) -> Optional[str]:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        return f'repeats {repeated[0]!r}; give each once'
    return None if values else 'is empty; give at least one'


def _known_lr_keys(lrs: Dict[str, float], config: Any) -> Optional[str]:
    unknown = sorted(set(lrs) - set(DEFAULT_LRS))
    return f'names no cell: {unknown[0]!r}; the cells are {", ".join(DEFAULT_LRS)}' if unknown else None


@dataclass
class CompareConfig:
    """One comparison: the cells, the seeds and the training settings they share. Every field is declared once
    (``bioconv_timm.settings``); the training settings share TrainConfig's declarations (``inherit``)."""
    dataset: str = inherit(TrainConfig, 'dataset', 'digits', help='dataset; its preset sets the budget (PRESETS)')
    data_dir: Optional[str] = inherit(TrainConfig, 'data_dir', None)
    arch: str = setting('resnet20', help='the network: the paper ResNets or a converted timm CNN',
                        choices=('resnet20', 'resnet18_half') + TIMM_ARCHS)
    epochs: int = inherit(TrainConfig, 'epochs', 10, help='training epochs of every cell')
    batch_size: int = inherit(TrainConfig, 'batch_size', 64)
    pad: int = inherit(TrainConfig, 'pad', 4)
    img_size: Optional[int] = inherit(TrainConfig, 'img_size', None)  # ConvNeXt needs >= 32
    seeds: Tuple[int, ...] = setting((0,), help='seeds; every cell is trained once per seed', ge=0, le=2 ** 31 - 1,
                                     check=_distinct, metavar='SEED')
    weight_decay: float = inherit(TrainConfig, 'weight_decay', 1e-4, help='AdamW weight decay of every cell')
    lrs: Dict[str, float] = setting(default_factory=lambda: dict(DEFAULT_LRS), flag='--lr', metavar='CELL=LR',
                                    help='learning rate per cell kind, e.g. lc_ws10=2e-3 (the others keep the '
                                         "preset's)", gt=0, le=100, check=_known_lr_keys)
    train_subset: Optional[int] = inherit(TrainConfig, 'train_subset', None)
    eval_subset: Optional[int] = inherit(TrainConfig, 'eval_subset', None)
    split: str = inherit(TrainConfig, 'split', 'test')
    output_dir: str = inherit(TrainConfig, 'output_dir', 'runs/compare', help='folder of the comparison: one run '
                              'folder per cell and seed, compare.json/.md/.png')
    cells: Tuple[CompareCell, ...] = setting(DEFAULT_CELLS, help='train only these rows: ' + ' '.join(
        c.slug for c in DEFAULT_CELLS), convert=_cells, check=_distinct, metavar='CELL', default_help='all')
    progress: Optional[bool] = inherit(TrainConfig, 'progress', None)
    device: Optional[str] = inherit(TrainConfig, 'device', None)
    num_workers: int = inherit(TrainConfig, 'num_workers', 0)
    model_kwargs: Dict[str, Any] = inherit(TrainConfig, 'model_kwargs', default_factory=dict)
    eval_every: int = inherit(TrainConfig, 'eval_every', 1)
    sleep_optimizer: str = inherit(TrainConfig, 'sleep_optimizer', 'keep')
    final_sleep: bool = inherit(TrainConfig, 'final_sleep', False, help='sleeping cells: one more sleep before '
                                'the final evaluation')
    refresh_bn: bool = inherit(TrainConfig, 'refresh_bn', False)
    snr_at_sleep: Optional[bool] = inherit(TrainConfig, 'snr_at_sleep', None)
    jobs: int = setting(1, help='runs at a time, one torch thread each (2 fill a 2-core machine)', ge=1, le=64)

    def __post_init__(self) -> None:
        validate_settings(self)
        missing = sorted({c.lr_key for c in self.cells} - set(self.lrs))
        if missing:
            raise ConfigError(f'lrs (--lr) has no learning rate for {missing[0]}; add {missing[0]}=LR')
        if self.batch_size % max(c.reps for c in self.cells):
            reps = max(c.reps for c in self.cells)
            raise ConfigError(f'batch_size={self.batch_size} (--batch-size) must be a multiple of {reps}, the reps '
                              'of the LC - 4 reps cell')


PRESET_DIR = Path(__file__).parent / 'presets'


def _load_presets() -> Dict[str, Dict[str, Any]]:
    """Per-dataset budgets that fit about 15 minutes on a 2-core CPU, one file of CompareConfig settings per
    dataset (``train/presets/<dataset>.yaml``, the same format as ``bioconv compare --config``); a preset's
    ``lrs`` change only the cells they name. CompareConfig's own defaults are the digits ones."""
    import yaml  # PyYAML comes with timm
    presets = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(PRESET_DIR.glob('*.yaml'))}
    for preset in presets.values():
        if 'lrs' in preset:
            preset['lrs'] = dict(DEFAULT_LRS, **preset['lrs'])
    return presets


PRESETS: Dict[str, Dict[str, Any]] = _load_presets()


def preset_config(dataset: str, **overrides: Any) -> CompareConfig:
    """A CompareConfig with the dataset's CPU budget (``PRESETS``); keyword arguments override it."""
    dataset = canonical_dataset_name(dataset) if isinstance(dataset, str) else dataset  # else: refused below
    values = dict(copy.deepcopy(PRESETS.get(dataset, {})), dataset=dataset, output_dir=f'runs/compare-{dataset}')
    if overrides.get('arch') not in (None, values.get('arch')):
        values.pop('model_kwargs', None)  # the preset's model_kwargs belong to its own arch
    values.update({k: v for k, v in overrides.items() if v is not None})
    return CompareConfig(**values)


# the training settings a comparison passes to every cell as they are (the others are set per cell below)
_PER_CELL = {'output_dir', 'sleep_optimizer', 'final_sleep', 'refresh_bn', 'model_kwargs'}
_SHARED = tuple(f.name for f in dataclasses.fields(CompareConfig)
                if f.name in {g.name for g in dataclasses.fields(TrainConfig)} and f.name not in _PER_CELL)


def cell_config(config: CompareConfig, cell: CompareCell, seed: int) -> TrainConfig:
    """The TrainConfig of one (cell, seed) run of a comparison: the shared settings as they are, and the cell's
    model, reps, learning rate, sleep policy and run folder."""
    return TrainConfig(
        **{name: getattr(config, name) for name in _SHARED}, model=cell.model(config.arch), reps=cell.reps,
        lr=config.lrs[cell.lr_key], seed=seed, output_dir=str(Path(config.output_dir) / f'{cell.slug}-seed{seed}'),
        resume=True, model_kwargs=dict(config.model_kwargs),
        sleep_optimizer=cell.sleep_optimizer or config.sleep_optimizer,
        final_sleep=config.final_sleep and bool(cell.sleep), refresh_bn=config.refresh_bn and bool(cell.sleep))


def compare(config: CompareConfig) -> List[Dict[str, Any]]:
    """Train every cell (skipping finished ones) and return one row per cell.

    Row keys: label, regularizer, model, reps, lr, top1 (mean over seeds), top1_spread (max - min),
    diff (vs conv), seeds, paper_top1, paper_diff.
    """
    from .sweep import sweep

    out = Path(config.output_dir)
    with hold_run_folder(out, command='compare'):  # two comparisons into one folder would mix their cells
        grid = [(cell, seed) for cell in config.cells for seed in config.seeds]
        outcomes = sweep([cell_config(config, cell, seed) for cell, seed in grid], jobs=config.jobs,
                         on_done=_progress)
        rows = [_cell_row(cell, [o for (c, _), o in zip(grid, outcomes) if c == cell]) for cell in config.cells]
        conv = next((r['top1'] for r in rows if r['label'] == 'conv'), None)
        for r in rows:
            r['diff'] = r['top1'] - conv if conv is not None else None
            r['paper_diff'] = None if r['label'] == 'conv' else TABLE1_DIFF.get(r['label'])  # as the paper prints it
        write_json(out / 'compare.json', dict(config=_jsonable(config), rows=rows))
        table = format_compare_table(rows, config)
        atomic_write_text(out / 'compare.md', table + '\n')
        plot_compare(rows, out / 'compare.png', f'{config.dataset}, pad {config.pad}, {config.epochs} epochs')
    return rows


def _progress(outcome: RunOutcome, remaining: int) -> None:
    tc, top1 = outcome.config, outcome.result['final']['top1']
    how = 'finished before' if outcome.reused else f'{outcome.seconds / 60:.1f} min'
    print(f'== {tc.model} reps {tc.reps} lr {tc.lr:g} seed {tc.seed}: top-1 {top1:.2f} ({how}); {remaining} to go',
          flush=True)


def _cell_row(cell: CompareCell, outcomes: Sequence[RunOutcome]) -> Dict[str, Any]:
    """One table row: a cell's top-1 over its seeds."""
    accs = [o.result['final']['top1'] for o in outcomes]
    tc = outcomes[0].config
    return dict(label=cell.label, regularizer=cell.regularizer, model=tc.model, reps=cell.reps, lr=tc.lr,
                top1=statistics.mean(accs), top1_spread=max(accs) - min(accs), seeds=len(accs),
                paper_top1=PAPER_CIFAR10_PAD4.get(cell.label))


def _jsonable(config: CompareConfig) -> Dict[str, Any]:
    d = dataclasses.asdict(config)
    d['cells'] = [c.label for c in config.cells]
    return d


def format_compare_table(rows: Sequence[Dict[str, Any]], config: CompareConfig) -> str:
    """Markdown table shaped like the paper's Table 1."""
    def fmt(v, signed=False):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return '-'
        return f'{v:+.1f}' if signed else f'{v:.1f}'

    seeds = rows[0]['seeds'] if rows else 0
    lines = [
        f'| Regularizer | Connectivity | {config.dataset} top-1 (%) | Diff | paper CIFAR10 pad 4 | paper Diff |',
        '|---|---|---|---|---|---|',
    ]
    for r in rows:
        acc = fmt(r['top1']) + (f" ± {r['top1_spread'] / 2:.1f}" if seeds > 1 else '')
        diff = '-' if r['label'] == 'conv' else fmt(r['diff'], signed=True)
        pdiff = '-' if r['label'] == 'conv' else fmt(r['paper_diff'], signed=True)
        lines.append(f"| {r['regularizer']} | {r['label']} | {acc} | {diff} | {fmt(r['paper_top1'])} | {pdiff} |")
    lines.append('')
    arch = config.arch + (f' {config.model_kwargs}' if config.model_kwargs else '')
    subset = f', {config.train_subset} training images' if config.train_subset else ''
    lines.append(f'{arch}, {config.epochs} epochs, batch {config.batch_size}, pad {config.pad}{subset}, sleep optimizer '
                 f'{config.sleep_optimizer}, {seeds} seed(s) (± is half the max-min spread); paper: CIFAR10, '
                 '200 epochs, 5 runs.')
    return '\n'.join(lines)


def plot_compare(rows: Sequence[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = [r['label'] for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], [r['top1'] for r in rows], width,
           yerr=[r['top1_spread'] / 2 for r in rows], label='this run', color='tab:blue')
    ax.bar([x + width / 2 for x in xs], [r['paper_top1'] or 0 for r in rows], width,
           label='paper (CIFAR10, pad 4)', color='tab:gray', alpha=0.6)
    for x, r in zip(xs, rows):
        ax.text(x - width / 2, r['top1'] + 0.3, f"{r['top1']:.1f}", ha='center', va='bottom', fontsize=8)
    lo = min(min(r['top1'] for r in rows), min(r['paper_top1'] or 100 for r in rows))
    ax.set_ylim(max(0, lo - 10), 100)
    ax.set_xticks(list(xs), labels, rotation=15)
    ax.set_ylabel('top-1 (%)')
    ax.set_title(title)
    ax.legend(loc='lower right', fontsize=8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
