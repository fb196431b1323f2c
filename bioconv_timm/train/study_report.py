"""The report of a study file (``train.study``), written from its committed records alone: the tuning grid, each
cell's test top-1 over seeds, the paired differences and gap fractions (``bioconv_timm.stats``), learning curves,
and the paper's Table 1 row beside each cell.

``write_report(study, study_file)`` writes ``<records>.md`` and ``<records>.png`` next to the records folder.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import stats
from ..paper import TABLE1_DIFF, TABLE1_TOP1
from .study import Study, best_settings, load_records

__all__ = ['write_report', 'close_pairs', 'final_lr_slope']

Record = Dict[str, Any]
PAPER_RATIO_WS100 = 0.5  # Table 11: LC 1e-3, ws(100) 5e-4 (rarer sharing, lower rate)


def _main(records: Dict[str, Record], cell: str) -> List[Record]:
    return sorted((r for r in records.values() if r['phase'] == 'main' and r['cell'] == cell), key=lambda r: r['seed'])


def _by_seed(recs: Sequence[Record]) -> Dict[int, float]:
    return {r['seed']: r['top1_last_step'] for r in recs}


def _curve(rec: Record, key: str) -> Tuple[List[float], List[float]]:
    rows = [h for h in rec['history'] if h.get(key) is not None]
    return [h['step'] for h in rows], [h[key] for h in rows]


def final_lr_slope(rec: Record) -> Optional[float]:
    """How fast the training top-1 still rose at the end: its change per 1,000 optimizer steps over the epochs
    trained at the final learning rate, from the first of them (which carries the jump of the last lr drop)
    to the last; near 0 when training accuracy has flattened. None with fewer than two such epochs."""
    rows = [h for h in rec['history'] if h.get('train_top1') is not None]
    start = max((i for i in range(1, len(rows)) if rows[i].get('lr') != rows[i - 1].get('lr')), default=0)
    tail = rows[start:]  # the epochs at the final lr; the drop's jump lies between rows[start - 1] and tail[0]
    if len(tail) < 2 or tail[-1]['step'] == tail[0]['step']:
        return None
    return (tail[-1]['train_top1'] - tail[0]['train_top1']) / (tail[-1]['step'] - tail[0]['step']) * 1000


def close_pairs(by_cell: Dict[str, Dict[int, float]], reference: str = 'lc') -> List[Tuple[str, str, float, float]]:
    """Pairs (cell, reference) whose paired mean difference is under two standard deviations of the per-seed
    differences: the ones that want 5 seeds. Returns (cell, reference, mean difference, sd)."""
    out = []
    for cell, values in by_cell.items():
        if cell == reference or reference not in by_cell:
            continue
        d = stats.paired_difference(values, by_cell[reference])
        if d.interval.n >= 2 and abs(d.interval.mean) < 2 * d.interval.sd:
            out.append((cell, reference, d.interval.mean, d.interval.sd))
    return out


def _tuning_section(study: Study, records: Dict[str, Record]) -> List[str]:
    if study.tune_source is not None:
        source = study.tune_source
        lines = _tuning_section(source, load_records(source))
        reused = (f'This study reuses the tuning of the study `{source.name}` (its records: `{source.records}`): '
                  'each cell trains with the learning rate and weight decay that were best there, at that '
                  "study's budget, not at this one.")
        return lines[:2] + [reused, ''] + lines[2:] if lines else [reused, '']
    tune = [r for r in records.values() if r['phase'] == 'tune']
    if not tune:
        return []
    best = best_settings(study, records)
    pairs = sorted({(r['settings']['lr'], r['settings']['weight_decay']) for r in tune})
    steps = sorted({r['steps'] for r in tune})
    lines = ['## 1. Tuning on the validation split', '',
             f'Seed {study.tune_seed}; each cell trained at its study budget ({", ".join(map(str, steps))} steps) on '
             'the training images minus a held-out validation split, and scored on that split (never the test '
             'set). Val top-1 after the last step (train top-1 of the last epoch in brackets); the best pair in bold.',
             '', '| cell | ' + ' | '.join(f'lr {lr:g}, wd {wd:g}' for lr, wd in pairs) + ' | chosen |',
             '|---' * (len(pairs) + 2) + '|']
    for cell in study.cells.values():
        if cell.tune_as is not None:
            continue
        cells = []
        for lr, wd in pairs:
            rec = next((r for r in tune if r['cell'] == cell.name and r['settings']['lr'] == lr
                        and r['settings']['weight_decay'] == wd), None)
            text = '-' if rec is None else f"{rec['top1_last_step']:.2f} ({rec['train_top1_last_epoch']:.1f})"
            chosen = best.get(cell.name)
            cells.append(f'**{text}**' if chosen == {'lr': lr, 'weight_decay': wd} else text)
        chosen = best.get(cell.name)
        lines.append(f'| {cell.label} | ' + ' | '.join(cells) + ' | '
                     + (f"lr {chosen['lr']:g}, wd {chosen['weight_decay']:g}" if chosen else '(running)') + ' |')
    shared = [f'{c.label} uses the tuning of {study.cells[c.tune_as].label}' for c in study.cells.values() if c.tune_as]
    lines += [''] + ([('; '.join(shared) + '.'), ''] if shared else [])
    return lines + _paper_ratio_lines(study, records, tune)


def _paper_ratio_lines(study: Study, records: Dict[str, Record], tune: List[Record]) -> List[str]:
    """ws(100) at the paper's lr ratio to LC (Table 11: half) against ws(100) at LC's own rate."""
    best = best_settings(study, records)
    if 'lc' not in best or 'lc_ws100' not in best:
        return []
    lc_lr = best['lc']['lr']

    def val(lr: float) -> Optional[float]:
        recs = [r['top1_last_step'] for r in tune if r['cell'] == 'lc_ws100' and math.isclose(r['settings']['lr'], lr)]
        return max(recs) if recs else None

    paper, same = val(lc_lr * PAPER_RATIO_WS100), val(lc_lr)
    fmt = lambda v: 'not in the grid' if v is None else f'{v:.2f}'  # noqa: E731
    return [f"Learning-rate ratio of ws(100) to LC: at the paper's ratio (Table 11, 1/2: lr "
            f'{lc_lr * PAPER_RATIO_WS100:g}) ws(100) reaches {fmt(paper)} val top-1, at LC\'s own rate (lr {lc_lr:g}, '
            f"this project's presets) {fmt(same)}; its tuned best is lr {best['lc_ws100']['lr']:g}.", '']


def _row(study: Study, records: Dict[str, Record], cell) -> Optional[str]:
    recs = _main(records, cell.name)
    if not recs:
        return None
    top1 = [r['top1_last_step'] for r in recs]
    conv, lc = _main(records, 'conv'), _main(records, 'lc')
    diff = lambda other: '-' if not other or other is recs else (  # noqa: E731
        f'{stats.mean_sd(top1)[0] - stats.mean_sd([r["top1_last_step"] for r in other])[0]:+.2f}')
    slept = stats.format_mean_sd([r['final']['top1'] for r in recs]) if recs[0]['config'].get('final_sleep') else '-'
    paper = TABLE1_TOP1.get(cell.paper_row, '-') if cell.paper_row else '-'
    pdiff = f'{TABLE1_DIFF[cell.paper_row]:+.1f}' if cell.paper_row in TABLE1_DIFF else '-'
    s = recs[0]['settings']
    return (f"| {cell.label} | {s['lr']:g} / {s['weight_decay']:g} | {len(recs)} | {recs[0]['steps']} "
            f"| {stats.format_mean_sd(top1)} | {diff(conv) if cell.name != 'conv' else '-'} "
            f"| {diff(lc) if cell.name != 'lc' else '-'} | {slept} "
            f"| {stats.format_mean_sd([r['train_top1_last_epoch'] for r in recs])} "
            f"| {_slopes(recs)} | {paper} | {pdiff} "
            f"| {stats.mean_sd([r['seconds'] for r in recs])[0] / 60:.1f} |")


def _slopes(recs: Sequence[Record]) -> str:
    slopes = [final_lr_slope(r) for r in recs]
    return '-' if None in slopes else stats.format_mean_sd(slopes)


def _results_section(study: Study, records: Dict[str, Record]) -> List[str]:
    rows = [row for cell in study.cells.values() if (row := _row(study, records, cell))]
    if not rows:
        return []
    return ['## 2. Test top-1 over seeds', '',
            'Mean ± sd over seeds, after the last optimizer step; "after final sleep" adds one more sleep and a '
            'BatchNorm refresh; "train slope at final lr" is how fast the training top-1 still rose at the end, in '
            'points per 1,000 steps over the epochs at the final learning rate (near 0: flattened; the jump of the '
            'last lr drop is left out). Paper: CIFAR10, ResNet20, pad 4, 200 epochs, mean of 5 runs '
            '(Table 1; its Diff as printed).', '',
            '| cell | lr / wd | seeds | steps | test top-1 (%) | vs conv | vs LC | after final sleep | train top-1 '
            '| train slope at final lr | paper top-1 | paper Diff | minutes per run |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|---|'] + rows + ['']


def _paired_section(study: Study, records: Dict[str, Record]) -> List[str]:
    by_cell = {c: _by_seed(_main(records, c)) for c in study.cells if _main(records, c)}
    if 'lc' not in by_cell or 'conv' not in by_cell:
        return []
    paper_gap = TABLE1_TOP1['conv'] - TABLE1_TOP1['LC']
    lines = ['## 3. Against LC, paired by seed', '',
             'Per-seed differences to the same seed\'s LC run (mean ± sd, 95% t interval, paired p); "ordering": '
             'above or below LC in every seed and outside the spread (`stats.ordering_holds`); gap closed: '
             '(cell - LC) / (conv - LC) of the means, and per seed with a 95% t interval; crossing: the first step '
             'from which the seed\'s test curve stays at or above its LC run\'s.', '',
             '| cell | per seed | mean ± sd | 95% interval | paired p | ordering | gap closed | per seed [95%] '
             '| paper gap closed | crossing step per seed |', '|---|---|---|---|---|---|---|---|---|---|']
    for cell in study.cells.values():
        if cell.name in ('lc',) or cell.name not in by_cell:
            continue
        lines.append(_paired_row(study, records, cell, by_cell, paper_gap))
    close = close_pairs(by_cell)
    lines += ['', 'Pairs whose mean difference is under two sd of the per-seed differences (they want 5 seeds): '
              + ('; '.join(f'{study.cells[a].label} vs LC ({m:+.2f} ± {sd:.2f})' for a, _, m, sd in close)
                 if close else 'none') + '.', '']
    return lines


def _paired_row(study: Study, records: Dict[str, Record], cell, by_cell: Dict[str, Dict[int, float]],
                paper_gap: float) -> str:
    values, lc = by_cell[cell.name], by_cell['lc']
    d = stats.paired_difference(values, lc)
    iv = d.interval
    order = 'above' if stats.ordering_holds(values, lc) else 'below' if stats.ordering_holds(lc, values) else 'no'
    p = d.paired_t_p() if iv.n >= 2 else float('nan')
    gap = frac = paper = '-'
    if cell.name != 'conv':
        try:
            g = stats.gap_fraction(values, by_cell['conv'], lc)
            gap = f'{100 * g.fraction:.0f}%'
            frac = f'{100 * g.interval.mean:.0f}% [{100 * g.interval.lo:.0f}, {100 * g.interval.hi:.0f}]'
        except ValueError:  # conv and LC equal (in the mean or in a seed): no gap to take a fraction of
            gap = frac = 'no gap'
        if cell.paper_row in TABLE1_TOP1:
            paper = f"{100 * (TABLE1_TOP1[cell.paper_row] - TABLE1_TOP1['LC']) / paper_gap:.0f}%"
    lc_runs = {r['seed']: r for r in _main(records, 'lc')}
    crossings = []
    for rec in _main(records, cell.name):
        if rec['seed'] in lc_runs:
            steps, upper = _curve(rec, 'eval_top1')
            lsteps, lower = _curve(lc_runs[rec['seed']], 'eval_top1')
            step = (stats.crossing_step(steps, upper, lower) if steps == lsteps else None)
            crossings.append('-' if steps != lsteps else 'never' if step is None else f'{step:.0f}')
    per_seed = ' / '.join(f'{v:+.2f}' for _, v in sorted(d.per_seed.items()))
    return (f'| {cell.label} | {per_seed} | {iv.mean:+.2f} ± {iv.sd:.2f} | [{iv.lo:+.2f}, {iv.hi:+.2f}] | {p:.3f} '
            f'| {order} | {gap} | {frac} | {paper} | {" / ".join(crossings) or "-"} |')


def plot(study: Study, records: Dict[str, Record], path: Path) -> bool:
    """Test and training top-1 against optimizer steps, mean over seeds with the min-max band; False: no runs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cells = [c for c in study.cells.values() if _main(records, c.name)]
    if not cells:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for color, cell in zip(plt.get_cmap('tab10').colors, cells):
        recs = _main(records, cell.name)
        for ax, key in zip(axes, ('eval_top1', 'train_top1')):
            curves = [_curve(r, key) for r in recs]
            n = min(len(c[0]) for c in curves)
            steps = curves[0][0][:n]
            values = list(zip(*(c[1][:n] for c in curves)))
            ax.plot(steps, [stats.mean_sd(v)[0] for v in values], color=color, label=f'{cell.label} ({len(recs)})')
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.2,
                            linewidth=0)
    for ax, title in zip(axes, ('test top-1 (%)', 'training top-1, augmented batches (%)')):
        ax.set_xlabel('optimizer step')
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f'{study.name}: mean over seeds, band min-max')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(study: Study, study_file: str) -> Path:
    """Write ``<records>.md`` (and the curves as ``<records>.png``) from the study's records; returns the path."""
    records = load_records(study)
    out = Path(study.records).with_suffix('.md')
    figure = out.with_suffix('.png')
    main = [r for r in records.values() if r['phase'] == 'main']
    lines = [f'# Study `{study.name}`', '', study.description, '',
             f'Regenerate with `python scripts/run_study.py {study_file} --jobs 2` (skips finished runs, whose '
             f'records are in `{Path(study.records).name}/`); `--report-only` rewrites this file and the figure '
             'from the records. One torch thread per run.', '']
    lines += _tuning_section(study, records) + _results_section(study, records)
    if main and plot(study, records, figure):
        lines += [f'![learning curves]({figure.name})', '']
    lines += _paired_section(study, records)
    findings = out.with_name(out.stem + '_findings.md')
    if findings.exists():
        lines += [findings.read_text().strip(), '']
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text('\n'.join(lines))
    return out
