"""Reproducing a paper table: every cell of it trained with the paper's settings, compared with what it reports.

``run_table('5', 'cifar10', data_dir=..., seeds=[0, 1, 2, 3, 4], output_root='paper_runs')`` trains every cell
that has no ``result.json`` yet and returns one row per cell (measured vs paper); ``scripts/run_paper_table.py``
is its command line. The cells and their numbers are ``bioconv_timm.paper``'s.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .._atomic import atomic_write_text, write_json
from ..paper import PaperCell, cells
from .config import TrainConfig
from .sweep import RunOutcome, sweep

__all__ = ['cell_train_config', 'run_table', 'run_dir', 'summarize_runs', 'format_paper_comparison']


def cell_train_config(cell: PaperCell, **overrides: Any) -> TrainConfig:
    """The ``TrainConfig`` of a paper cell; ``overrides`` replace any of its fields.

    Overriding ``epochs`` without ``lr_milestones`` compresses the schedule proportionally (the
    paper's own shortcut for grid search: 50 epochs -> decays at 25 and 37, 20 -> 10 and 15).
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f'unknown TrainConfig field(s) {unknown}; available: {sorted(names)}')
    epochs = overrides.get('epochs', cell.epochs)
    milestones = cell.lr_milestones
    if 'lr_milestones' not in overrides and epochs != cell.epochs:
        milestones = _compress_milestones(cell.lr_milestones, cell.epochs, epochs)
    config = TrainConfig(
        model=cell.model, dataset=cell.dataset, split='test', pad=cell.pad, reps=cell.reps,
        epochs=cell.epochs, batch_size=cell.batch_size, lr=cell.lr, weight_decay=cell.weight_decay,
        opt='adamw', lr_milestones=milestones, lr_decay=cell.lr_decay,
        # explicit, so config.json states the period even though the model name carries it too
        sleep_every=cell.sleep_every)
    return dataclasses.replace(config, **overrides)


def _compress_milestones(milestones: Sequence[int], epochs: int, new_epochs: int) -> Tuple[int, ...]:
    scaled = {m * new_epochs // epochs for m in milestones}
    # a milestone at epoch 0 would just lower the initial lr; one past the end never fires
    return tuple(sorted(m for m in scaled if 0 < m < new_epochs))


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
              labels: Optional[Sequence[str]] = None, write: bool = True, verbose: bool = True, jobs: int = 1,
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
        jobs: runs at a time (``sweep``: worker processes with one torch thread each when above 1).

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
    grid = []  # (cell, seed, config)
    for cell in selected:
        folder_data = data_dir.get(cell.dataset) if isinstance(data_dir, Mapping) else data_dir
        for seed in (list(seeds) if seeds is not None else list(range(cell.runs))):
            grid.append((cell, seed, cell_train_config(
                cell, data_dir=None if folder_data is None else str(folder_data), seed=seed,
                output_dir=str(run_dir(output_root, cell, seed)), resume=True, **common)))

    def progress(outcome: RunOutcome, remaining: int) -> None:
        if verbose:
            cell, seed, config = grid[outcome.index]
            how = 'done before' if outcome.reused else 'trained'
            print(f'[{len(grid) - remaining}/{len(grid)}] table {cell.table} {cell.dataset} {cell.label!r} seed '
                  f'{seed}: {how} (top1 {outcome.result["final"]["top1"]:.2f}) {config.output_dir}', flush=True)

    outcomes = sweep([config for _, _, config in grid], jobs=jobs, on_done=progress)
    rows = []
    for cell in selected:
        mine = [(seed, o) for (c, seed, _), o in zip(grid, outcomes) if c is cell]
        rows.append(summarize_runs(cell, [o.result['final'] for _, o in mine], [s for s, _ in mine],
                                   [o.config.output_dir for _, o in mine], sum(o.reused for _, o in mine)))

    text = format_paper_comparison(rows)
    if verbose:
        print(text, flush=True)
    if write:
        root = Path(output_root)
        root.mkdir(parents=True, exist_ok=True)
        stem = f'table{table}' + (f'-{dataset}' if dataset else '')
        atomic_write_text(root / f'{stem}.md', f'# Paper Table {table}: measured vs reported\n\n{text}\n')
        write_json(root / f'{stem}.json', rows)
    return rows


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
