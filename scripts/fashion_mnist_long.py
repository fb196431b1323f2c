"""Fashion-MNIST, long budget: does dynamic weight sharing beat plain LC once training is long enough?

Three questions, one resumable job:

1. ``sweep``: learning rate of LC, ws(10) and ws(100) (``--sleep-optimizer average``) on a held-out
   validation split (``split='val'``: 6,000 training images never trained on; the test set is never
   looked at), one seed, the short study's 10k-image / 15-epoch budget, lr in {5e-4, 1e-3, 2e-3}; when a
   cell's best lr is the largest tried, it is also tried at twice that (up to 8e-3), so the grid's edge does
   not choose for it.
2. ``long``: all 60,000 training images, the full test set, evaluated every epoch: conv, LC, ws(1),
   ws(10), ws(100) (average policy), 3 seeds each. LC / ws(10) / ws(100) use the sweep's best lr; conv
   and ws(1) keep the short study's lrs.
3. ``hebbian``: ws(10) with the section-4 Hebbian sleep against the instant sleep, 10k-image budget,
   3 seeds each, the sweep's ws(10) lr.

A finished run leaves a compact record (config, every epoch's metrics, final result, wall time) in
``--records`` (committed with the report), so the study resumes across sessions and machines; an
interrupted run resumes from its last epoch checkpoint in ``--runs-dir`` while that folder exists.
``--jobs`` runs go at a time, one torch thread each (``bioconv_timm.train.sweep``); to change it, stop the
study and start it again: finished runs are skipped and an interrupted one resumes from its last epoch.

    apt-get install dataset-fashion-mnist
    python scripts/fashion_mnist_long.py --jobs 2        # ~3 h on a 2-core CPU
    python scripts/fashion_mnist_long.py --report-only   # rewrite the report from the records
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from bioconv_timm import stats
from bioconv_timm.paper import TABLE1_DIFF, TABLE1_TOP1
from bioconv_timm._atomic import write_json
from bioconv_timm.train.config import TrainConfig
from bioconv_timm.train.run_log import read_history
from bioconv_timm.train.data import DATASETS, dataset_spec
from bioconv_timm.train.sweep import sweep

SWEEP_LRS = (5e-4, 1e-3, 2e-3)
MAX_SWEEP_LR = 8e-3  # a cell whose best lr is its largest is also tried at twice that, up to here
SWEPT = ('lc', 'lc_ws10', 'lc_ws100')
FIXED_LRS = {'conv': 5e-3, 'lc_ws1': 3e-3}  # the short study's (bioconv compare --dataset fashion-mnist)
LONG_CELLS = ('conv', 'lc', 'lc_ws1', 'lc_ws10', 'lc_ws100')
LABELS = {'conv': 'conv', 'lc': 'LC', 'lc_ws1': 'LC - ws(1)', 'lc_ws10': 'LC - ws(10)', 'lc_ws100': 'LC - ws(100)'}
SLEEPING = ('lc_ws1', 'lc_ws10', 'lc_ws100')
# Paper Table 1 / 5: CIFAR10, ResNet20, pad 4, 200 epochs, mean of 5 runs; its Diff column as printed (paper.py)
PAPER_CIFAR10_PAD4 = {cell: TABLE1_TOP1[label] for cell, label in LABELS.items()}
PAPER_DIFF = {cell: TABLE1_DIFF[label] for cell, label in LABELS.items() if label in TABLE1_DIFF}
SEEDS = (0, 1, 2)
# two more seeds where the 3-seed difference was marginal (ws(10) vs LC: +0.31, Welch p 0.13), so that
# "ws(10) above LC" is shown or withdrawn on 5 seeds (issue 25, part 3)
EXTRA_SEEDS = {'lc': (3, 4), 'lc_ws10': (3, 4)}
SHORT_EPOCHS = 15
SHORT_SUBSET = 10000


@dataclass(frozen=True)
class Run:
    name: str                 # record file stem, unique
    phase: str                # sweep | long | hebbian
    cell: str                 # conv | lc | lc_ws1 | ...
    seed: int
    lr_key: Optional[str] = None   # lr comes from the sweep's best for this cell (None: fixed lr below)
    lr: Optional[float] = None
    overrides: Dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def base_config(args: argparse.Namespace) -> Dict[str, Any]:
    return dict(dataset=args.dataset, data_dir=args.data_dir, pad=4, batch_size=128, weight_decay=1e-4,
                opt='adamw', lr_decay=0.25, model_kwargs=dict(layers=[1, 1, 1], stem_stride=2),
                sleep_optimizer='average', progress=False, snr_at_sleep=False, resume=True)


def _sweep_run(cell: str, lr: float) -> Run:
    return Run(f'sweep-{cell}-lr{lr:g}', 'sweep', cell, 0, lr=lr)


def sweep_lrs(args: argparse.Namespace, cell: str) -> List[float]:
    """The learning rates to try for ``cell``: the grid, extended upwards while the best is at its top."""
    lrs = list(SWEEP_LRS)
    while True:
        recs = [load_record(args, _sweep_run(cell, lr)) for lr in lrs]
        if not all(recs):
            return lrs
        best = max(recs, key=lambda r: r['top1_last_step'])['config']['lr']
        if best != lrs[-1] or lrs[-1] * 2 > MAX_SWEEP_LR:
            return lrs
        lrs.append(lrs[-1] * 2)


def all_runs(args: argparse.Namespace) -> List[Run]:
    """Every run, in the order they should start (each lr-dependent run waits for its sweep)."""
    sweep = [_sweep_run(cell, lr) for cell in SWEPT for lr in sweep_lrs(args, cell)]
    long_ = [Run(f'long-{cell}-seed{seed}', 'long', cell, seed,
                 lr_key=cell if cell in SWEPT else None, lr=FIXED_LRS.get(cell))
             for seed in SEEDS for cell in LONG_CELLS]
    long_ += [Run(f'long-{cell}-seed{seed}', 'long', cell, seed, lr_key=cell)
              for seed in (3, 4) for cell, seeds in EXTRA_SEEDS.items() if seed in seeds]
    heb = [Run(f'hebbian-lc_ws10-{mode}-seed{seed}', 'hebbian', 'lc_ws10', seed, lr_key='lc_ws10',
               overrides=dict(sleep_mode=mode)) for seed in SEEDS for mode in ('instant', 'hebbian')]
    # the sweep first; then conv/ws(1) long runs (no lr to wait for) fill the gaps while it finishes
    return sweep + long_ + heb


def train_config(run: Run, lr: float, args: argparse.Namespace) -> Dict[str, Any]:
    cfg = base_config(args)
    model = ('conv_resnet20' if run.cell == 'conv' else 'lc_resnet20' + run.cell[2:])
    cfg.update(model=model, seed=run.seed, lr=lr, output_dir=str(Path(args.runs_dir) / run.name))
    if run.phase == 'sweep':
        cfg.update(split='val', train_subset=SHORT_SUBSET, epochs=SHORT_EPOCHS, eval_every=5)
    elif run.phase == 'long':
        cfg.update(split='test', epochs=args.long_epochs, eval_every=1)
    else:
        cfg.update(split='test', train_subset=SHORT_SUBSET, epochs=SHORT_EPOCHS, eval_every=1)
    if run.cell != 'conv' and run.cell != 'lc':
        cfg.update(final_sleep=True, refresh_bn=True)
    cfg.update(run.overrides)
    return cfg


# --- records ----------------------------------------------------------------------------------

def record_path(args: argparse.Namespace, run: Run) -> Path:
    return Path(args.records) / f'{run.name}.json'


def load_record(args: argparse.Namespace, run: Run) -> Optional[Dict[str, Any]]:
    path = record_path(args, run)
    return json.loads(path.read_text()) if path.exists() else None


def best_lrs(args: argparse.Namespace) -> Dict[str, float]:
    """Best val top-1 per swept cell, once all of that cell's sweep runs are done."""
    out = {}
    for cell in SWEPT:
        recs = [load_record(args, _sweep_run(cell, lr)) for lr in sweep_lrs(args, cell)]
        if all(recs):
            out[cell] = max(recs, key=lambda r: r['top1_last_step'])['config']['lr']
    return out


def _write_record(run: Run, cfg: Dict[str, Any], result: Dict[str, Any], seconds: float, args) -> None:
    """The compact committed record of a finished run: its settings, every epoch's metrics, result, wall time."""
    history = read_history(Path(cfg['output_dir']))
    rec = dict(name=run.name, phase=run.phase, cell=run.cell, seed=run.seed, config=cfg, seconds=seconds,
               history=history, final=result['final'], top1_last_step=history[-1]['eval_top1'],
               train_top1_last_epoch=history[-1]['train_top1'])
    write_json(record_path(args, run), rec)


def run_study(args: argparse.Namespace) -> None:
    """Train every run whose record is missing, ``--jobs`` at a time (train.sweep), the sweep before the runs that
    need its learning rates; a run interrupted before its record was written resumes from its checkpoint."""
    from bioconv_timm.train.data import build_datasets
    build_datasets(args.dataset, data_dir=args.data_dir, pad=0, split='test', train_subset=10, eval_subset=10)
    os.environ['OMP_NUM_THREADS'] = '1'
    while True:
        lrs = best_lrs(args)
        ready = [run for run in all_runs(args) if run.phase in args.phases and load_record(args, run) is None
                 and (run.lr_key is None or run.lr_key in lrs)]
        if not ready:
            break
        cfgs = [train_config(run, lrs[run.lr_key] if run.lr_key else run.lr, args) for run in ready]
        print(f'{time.strftime("%H:%M:%S")} {len(ready)} runs to train, {args.jobs} at a time', flush=True)

        def done(outcome, left: int) -> None:
            run, cfg = ready[outcome.index], cfgs[outcome.index]
            if load_record(args, run) is None:
                _write_record(run, cfg, outcome.result, outcome.seconds, args)
            rec = load_record(args, run)
            print(f'{time.strftime("%H:%M:%S")} done {run.name}: top-1 {rec["top1_last_step"]:.2f} '
                  f'(train {rec["train_top1_last_epoch"]:.2f}) in {outcome.seconds / 60:.1f} min ({left} left)',
                  flush=True)
            write_report(args)

        sweep([TrainConfig(**cfg) for cfg in cfgs], jobs=args.jobs, on_done=done)


# --- report -----------------------------------------------------------------------------------

def _fmt(values: List[float]) -> str:
    return stats.format_mean_sd(values)


def _steps(recs: List[Dict[str, Any]]) -> str:
    """The optimizer steps the records ran (their last evaluation's step), e.g. '1170' (or '1170-1185')."""
    steps = sorted({int(r['history'][-1]['step']) for r in recs})
    return str(steps[0]) if len(steps) == 1 else f'{steps[0]}-{steps[-1]}'


def _records(args: argparse.Namespace, phase: str) -> List[Dict[str, Any]]:
    out = []
    for run in all_runs(args):
        if run.phase == phase and (rec := load_record(args, run)) is not None:
            out.append(rec)
    return out


def _curves(recs: List[Dict[str, Any]]) -> Tuple[List[float], List[List[float]]]:
    """Steps and per-seed test top-1 at every epoch (seeds cut to the shortest history)."""
    n = min(len(r['history']) for r in recs)
    steps = [recs[0]['history'][i]['step'] for i in range(n)]
    return steps, [[r['history'][i]['eval_top1'] for i in range(n)] for r in recs]


def _by_seed(recs: List[Dict[str, Any]], key: str = 'top1_last_step') -> Dict[int, float]:
    return {r['seed']: r[key] for r in recs}


def _mean_curve(recs: List[Dict[str, Any]]) -> Tuple[List[float], List[float]]:
    steps, curves = _curves(recs)
    return steps, [stats.mean_sd(v)[0] for v in zip(*curves)]


def _crossing(ws_recs: List[Dict[str, Any]], lc_recs: List[Dict[str, Any]]) -> Optional[float]:
    """The step from which the mean test curve of ``ws_recs`` stays at or above LC's (stats.crossing_step)."""
    steps, ws = _mean_curve(ws_recs)
    _, lc = _mean_curve(lc_recs)
    n = min(len(ws), len(lc))
    return stats.crossing_step(steps[:n], ws[:n], lc[:n])


def _step_text(step: Optional[float]) -> str:
    return 'never' if step is None else f'{step:.0f}'


def paired_section(by: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """Differences vs LC per seed (the same seed's LC run), gap fractions and crossing steps, from stats."""
    lc = _by_seed(by['lc'])
    lines = ['### Paired by seed', '',
             'Each cell against the same seed\'s LC run: the mean of the per-seed differences ± their sd, a 95% t '
             'interval, the paired t-test p and Welch\'s (unpaired) p; "ordering" says whether the cell\'s and LC\'s '
             'ranges over seeds do not overlap (`bioconv_timm.stats.ordering_holds`: above or below in every seed, '
             'outside the spread). Gap closed: (cell - LC) / (conv - LC), of the means and, with a 95% t interval, '
             'per seed; the paper\'s from its means.', '',
             '| Connectivity | vs LC per seed | mean ± sd | 95% interval | paired p | Welch p | ordering | gap closed '
             '| per seed: mean [95% interval] | paper gap closed | crossing step per seed |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    paper_gap = PAPER_CIFAR10_PAD4['conv'] - PAPER_CIFAR10_PAD4['lc']
    for cell in ('conv',) + SLEEPING:
        if not by[cell]:
            continue
        values = _by_seed(by[cell])
        d = stats.paired_difference(values, lc)
        iv = d.interval
        per_seed = ' / '.join(f'{v:+.2f}' for _, v in sorted(d.per_seed.items()))
        welch = stats.welch_test(list(values.values()), list(lc.values())).p
        order = ('above' if stats.ordering_holds(values, lc) else
                 'below' if stats.ordering_holds(lc, values) else 'no')
        gap = frac = paper = crossings = '-'
        if cell != 'conv' and by['conv']:
            g = stats.gap_fraction(values, _by_seed(by['conv']), lc)
            gap = f'{100 * g.fraction:.0f}%'
            frac = f'{100 * g.interval.mean:.0f}% [{100 * g.interval.lo:.0f}, {100 * g.interval.hi:.0f}]'
            paper = f'{100 * (PAPER_CIFAR10_PAD4[cell] - PAPER_CIFAR10_PAD4["lc"]) / paper_gap:.0f}%'
            lc_runs = {r['seed']: r for r in by['lc']}
            crossings = ' / '.join(_step_text(_crossing([r], [lc_runs[r['seed']]]))
                                   for r in sorted(by[cell], key=lambda r: r['seed']) if r['seed'] in lc_runs)
        lines.append(f'| {LABELS[cell]} | {per_seed} | {iv.mean:+.2f} ± {iv.sd:.2f} | [{iv.lo:+.2f}, {iv.hi:+.2f}] '
                     f'| {d.paired_t_p():.3f} | {welch:.3f} | {order} | {gap} | {frac} | {paper} | {crossings} |')
    seeds = sorted(lc)
    lines += ['', f'Seeds {", ".join(map(str, seeds))}; per-seed values in the order of the seeds.', '']
    return lines


def _dataset_flag(args: argparse.Namespace) -> str:
    return '' if args.dataset == 'fashion-mnist' else f' --dataset {args.dataset}'


def _dataset_title(args: argparse.Namespace) -> str:
    spec = dataset_spec(args.dataset)
    return 'Fashion-MNIST' if spec.name == 'fashion-mnist' else f'`{spec.name}` ({spec.description})'


def write_report(args: argparse.Namespace) -> Path:
    out = Path(args.report)
    lines = ['# Fashion-MNIST, long budget: does dynamic weight sharing beat plain LC?', '',
             f'Regenerate with `python scripts/fashion_mnist_long.py{_dataset_flag(args)} --jobs 2` (skips finished '
             f'runs, whose records are in `{Path(args.records).name}/`); `--report-only` rewrites this file and the '
             'figure from the records.', '',
             f'Common setup: {_dataset_title(args)}, pad 4 with the training mean then random-crop '
             f'{dataset_spec(args.dataset).img_size}; ResNet-8 (one basic block '
             'per stage, 16/32/64 channels, 3x3 stride-2 stem: `model_kwargs=dict(layers=(1, 1, 1), stem_stride=2)` '
             'on the resnet20 entrypoints), every conv locally connected in LC models (stem and shortcuts included); '
             'AdamW, batch 128, weight decay 1e-4, lr divided by 4 at 50% and 75% of the epochs; sleeping cells '
             'grid-average the AdamW moments with the weights (`--sleep-optimizer average`); one torch thread per '
             'run. "top-1" is the test (or val) accuracy after the last optimizer step; "train top-1" is the '
             'running accuracy on augmented training batches during the last epoch.', '']
    sweep = _records(args, 'sweep')
    lrs = best_lrs(args)
    if sweep:
        all_lrs = sorted({r['config']['lr'] for r in sweep})
        lines += ['## 1. Learning-rate sweep (validation split, never the test set)', '',
                  f'{SHORT_SUBSET} training images, {SHORT_EPOCHS} epochs ({_steps(sweep)} steps: the loader drops '
                  'each epoch\'s last partial batch), seed 0, evaluated on 6,000 held-out training images '
                  '(`--split val`).', '',
                  '| cell | ' + ' | '.join(f'lr {lr:g}' for lr in all_lrs) + ' | best |', '|---' * (len(all_lrs) + 2) + '|']
        for cell in SWEPT:
            byl = {r['config']['lr']: r for r in sweep if r['cell'] == cell}
            vals = [f"{byl[lr]['top1_last_step']:.2f} (train {byl[lr]['train_top1_last_epoch']:.1f})" if lr in byl
                    else '-' for lr in all_lrs]
            lines.append(f'| {LABELS[cell]} | ' + ' | '.join(vals) + f" | {lrs[cell]:g} |" if cell in lrs
                         else f'| {LABELS[cell]} | ' + ' | '.join(vals) + ' | (running) |')
        lines += ['', 'conv (5e-3) and ws(1) (3e-3) keep the short study\'s learning rates.', '']
    long_ = _records(args, 'long')
    if long_:
        epochs = long_[0]['config']['epochs']
        steps = long_[0]['history'][-1]['step']
        lines += ['## 2. Long budget (all 60,000 training images, full test set)', '',
                  f'{epochs} epochs = {steps:.0f} optimizer steps; evaluated every epoch. Mean ± sd over seeds.', '',
                  '| Connectivity | lr | seeds | test top-1 (%) | Diff vs conv | Diff vs LC | after final sleep + BN refresh '
                  '| train top-1 | best epoch top-1 | paper CIFAR10 pad 4 | paper Diff | minutes per run |',
                  '|---|---|---|---|---|---|---|---|---|---|---|---|']
        by = {c: [r for r in long_ if r['cell'] == c] for c in LONG_CELLS}
        conv = stats.mean_sd([r['top1_last_step'] for r in by['conv']])[0] if by['conv'] else None
        lc = stats.mean_sd([r['top1_last_step'] for r in by['lc']])[0] if by['lc'] else None
        for cell in LONG_CELLS:
            recs = by[cell]
            if not recs:
                continue
            top1 = [r['top1_last_step'] for r in recs]
            m = stats.mean_sd(top1)[0]
            slept = _fmt([r['final']['top1'] for r in recs]) if cell not in ('conv', 'lc') else '-'
            best = _fmt([max(h['eval_top1'] for h in r['history']) for r in recs])
            paper = PAPER_CIFAR10_PAD4[cell]
            pdiff = '-' if cell == 'conv' else f'{PAPER_DIFF[cell]:+.1f}'  # quoted, not recomputed from rounded means
            dconv = '-' if cell == 'conv' or conv is None else f'{m - conv:+.2f}'
            dlc = '-' if cell == 'lc' or lc is None else f'{m - lc:+.2f}'
            lines.append(f"| {LABELS[cell]} | {recs[0]['config']['lr']:g} | {len(recs)} | {_fmt(top1)} | {dconv} | {dlc} "
                         f"| {slept} | {_fmt([r['train_top1_last_epoch'] for r in recs])} | {best} | {paper} | {pdiff} "
                         f"| {stats.mean_sd([r['seconds'] for r in recs])[0] / 60:.0f} |")
        lines += ['', 'Paper: CIFAR10, ResNet20, 200 epochs, 5 runs (Table 1 / 5).', '']
        if by['lc']:
            crossings = []
            for cell in SLEEPING:
                if by[cell]:
                    step = _crossing(by[cell], by['lc'])
                    crossings.append(f'{LABELS[cell]}: ' + (f'from step {step:.0f} on' if step is not None else 'never'))
            lines += ['Where each sleeping cell\'s mean test curve rises to LC\'s mean and stays at or above it to the '
                      'end (per-epoch evaluations): ' + '; '.join(crossings) + '.', '',
                      f'![learning curves]({out.with_suffix(".png").name})', '']
            lines += paired_section(by)
        plot_curves(by, out.with_suffix('.png'))
    heb = _records(args, 'hebbian')
    if heb:
        lines += ['## 3. Hebbian sleep in training (ws(10), 10k images, 15 epochs)', '',
                  '| sleep mode | lr | seeds | test top-1 (%) | after final sleep + BN refresh | train top-1 | '
                  'minutes per run |', '|---|---|---|---|---|---|---|']
        for mode in ('instant', 'hebbian'):
            recs = [r for r in heb if r['config'].get('sleep_mode') == mode]
            if recs:
                lines.append(f"| {mode} | {recs[0]['config']['lr']:g} | {len(recs)} | "
                             f"{_fmt([r['top1_last_step'] for r in recs])} | {_fmt([r['final']['top1'] for r in recs])} | "
                             f"{_fmt([r['train_top1_last_epoch'] for r in recs])} | "
                             f"{stats.mean_sd([r['seconds'] for r in recs])[0] / 60:.1f} |")
        lines.append('')
    if Path(args.findings).exists():
        lines += [Path(args.findings).read_text().strip(), '']
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text('\n'.join(lines))
    return out


def plot_curves(by: Dict[str, List[Dict[str, Any]]], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(13, 4.5))
    colors = {'conv': 'k', 'lc': 'tab:red', 'lc_ws1': 'tab:blue', 'lc_ws10': 'tab:green', 'lc_ws100': 'tab:purple'}
    for cell, recs in by.items():
        if not recs:
            continue
        steps, curves = _curves(recs)
        mean = [stats.mean_sd(v)[0] for v in zip(*curves)]
        lo = [min(v) for v in zip(*curves)]
        hi = [max(v) for v in zip(*curves)]
        for a in (ax, zoom):
            a.plot(steps, mean, color=colors[cell], label=f'{LABELS[cell]} ({len(recs)} seeds)')
            a.fill_between(steps, lo, hi, color=colors[cell], alpha=0.2, linewidth=0)
    for a in (ax, zoom):
        a.set_xlabel('optimizer step')
        a.set_ylabel('test top-1 (%)')
        a.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title('Fashion-MNIST, 60k images, pad 4 (line: mean, band: min-max over seeds)')
    all_last = [h for recs in by.values() for r in recs for h in r['history'][len(r['history']) // 2:]]
    if all_last:
        zoom.set_ylim(min(h['eval_top1'] for h in all_last) - 0.5, max(h['eval_top1'] for h in all_last) + 0.3)
        zoom.set_xlim(all_last and min(h['step'] for h in all_last), None)
    zoom.set_title('second half, zoomed')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (one torch thread each)')
    parser.add_argument('--long-epochs', type=int, default=20)
    parser.add_argument('--phases', nargs='+', default=['sweep', 'long', 'hebbian'])
    parser.add_argument('--dataset', default='fashion-mnist', choices=DATASETS,
                        help='a 1-channel, 10-class dataset of the registry (fashion-mnist, fashion-mnist-shifted)')
    parser.add_argument('--data-dir', default=None)
    # default paths follow the dataset (<slug>_long): another dataset's runs never mix with these records
    parser.add_argument('--runs-dir', default=None, help='default runs/<dataset>_long')
    parser.add_argument('--records', default=None, help='default docs/results/<dataset>_long')
    parser.add_argument('--report', default=None, help='default docs/results/<dataset>_long.md')
    parser.add_argument('--findings', default=None,
                        help='hand-written conclusions appended to the report when the file exists '
                             '(default docs/results/<dataset>_long_findings.md)')
    parser.add_argument('--report-only', action='store_true')
    args = parser.parse_args(argv)
    spec = dataset_spec(args.dataset)
    if (spec.in_chans, spec.num_classes) != (1, 10):
        parser.error(f'--dataset {args.dataset}: the study\'s ResNet-8 and lrs are for 1-channel, 10-class data')
    slug = spec.name.replace('-', '_') + '_long'
    args.runs_dir = args.runs_dir or f'runs/{slug}'
    args.records = args.records or f'docs/results/{slug}'
    args.report = args.report or f'docs/results/{slug}.md'
    args.findings = args.findings or f'docs/results/{slug}_findings.md'
    if not args.report_only:
        run_study(args)
    print(write_report(args).read_text())
    return 0


if __name__ == '__main__':
    sys.exit(main())
