"""Fashion-MNIST study (issue 8): the paper's Table 1 ordering at CPU scale, and what sleep does to AdamW.

Trains conv, LC, LC 4 reps, and LC-ws1/10/100 with each ``--sleep-optimizer`` policy (keep / average /
reset), at pad 0 and pad 4, over several seeds, then writes ``docs/results/fashion_mnist.md`` (tables
shaped like paper Table 1 with the paper's CIFAR10 numbers beside them) and ``fashion_mnist.png``.

Every run keeps its result in its own folder under ``--runs-dir``: rerunning the script skips finished
runs, so an interrupted study continues where it stopped, and ``--report-only`` only rewrites the report.
Runs execute ``--jobs`` at a time, one torch thread each (two jobs fill this 2-core machine).

    apt-get install dataset-fashion-mnist
    python scripts/fashion_mnist_study.py --jobs 2            # ~1.5 h on a 2-core CPU
    python scripts/fashion_mnist_study.py --report-only
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from bioconv_timm import stats
from bioconv_timm.train.compare import DEFAULT_CELLS, DEFAULT_LRS, CompareCell, CompareConfig, cell_config
from bioconv_timm.train.config import TrainConfig
from bioconv_timm.train.data import DATASETS, dataset_spec
from bioconv_timm.train.sweep import sweep
from bioconv_timm.paper import reported_diff, reported_top1

POLICIES = ('keep', 'average', 'reset')
PADS = (4, 0)


def study_cells() -> Tuple[CompareCell, ...]:
    out = []
    for cell in DEFAULT_CELLS:
        if cell.sleep:
            out.extend(replace(cell, label=f'{cell.label}, {p}', sleep_optimizer=p) for p in POLICIES)
        else:
            out.append(cell)
    return tuple(out)


def study_config(pad: int, args: argparse.Namespace) -> CompareConfig:
    # ResNet-8 (one block per stage, 16/32/64) with a stride-2 stem: the budget that lets 90 runs fit
    # in about 1.5 h on two cores (an LC run ~2 min, a conv run ~1 min on one core).
    return CompareConfig(
        dataset=args.dataset, data_dir=args.data_dir, arch='resnet20',
        model_kwargs=dict(layers=(1, 1, 1), stem_stride=2), epochs=args.epochs, batch_size=128, pad=pad,
        seeds=tuple(range(args.seeds)), weight_decay=1e-4, lrs=dict(DEFAULT_LRS), train_subset=args.train_subset,
        split='test', output_dir=str(Path(args.runs_dir) / f'pad{pad}'), cells=study_cells(), progress=False,
        eval_every=5, final_sleep=True, refresh_bn=True, snr_at_sleep=False)


def _result(out_dir: str, epochs: int) -> Optional[Dict[str, Any]]:
    path = Path(out_dir) / 'result.json'
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    if result.get('epochs') != epochs:
        return None
    # accuracy at the last step (before the extra final sleep) from metrics.csv's last row
    import csv
    with open(Path(out_dir) / 'metrics.csv') as f:
        last = list(csv.DictReader(f))[-1]
    result['top1_last_step'] = float(last['eval_top1'])
    result['train_top1_last_epoch'] = float(last['train_top1'])
    return result


def all_runs(args: argparse.Namespace) -> List[Tuple[int, CompareCell, int, Dict[str, Any]]]:
    """(pad, cell, seed, TrainConfig dict) in priority order: every pad-4 cell and the pad-0 cells with the
    default sleep optimizer (keep) first, seed by seed; the other sleep optimizers at pad 0 last (on
    Fashion-MNIST pad 0 shows no conv/LC gap, so they are the least informative)."""
    first, last = [], []
    for seed in range(args.seeds):
        for pad in PADS:
            config = study_config(pad, args)
            for cell in config.cells:
                tc = cell_config(config, cell, seed)
                run = (pad, cell, seed, dict(tc.to_dict(), resume=True))
                (last if pad == 0 and cell.sleep_optimizer not in (None, 'keep') else first).append(run)
    return first + last


def _mean_sd(values: List[float]) -> Tuple[float, float]:
    return stats.mean_sd(values)


def collect(args: argparse.Namespace) -> List[Dict[str, Any]]:
    rows = []
    for pad in PADS:
        config = study_config(pad, args)
        for cell in config.cells:
            results = [r for seed in config.seeds
                       if (r := _result(cell_config(config, cell, seed).output_dir, args.epochs)) is not None]
            if not results:
                continue
            top1 = [r['top1_last_step'] for r in results]
            slept = [r['final']['top1'] for r in results] if cell.sleep else None
            rows.append(dict(pad=pad, label=cell.label, base=cell.label.split(',')[0], sleep=cell.sleep,
                             policy=cell.sleep_optimizer, lr=config.lrs[cell.lr_key], reps=cell.reps,
                             seeds=len(results), top1=top1, train_top1=[r['train_top1_last_epoch'] for r in results],
                             top1_final_sleep=slept))
    for row in rows:
        conv = next((r for r in rows if r['pad'] == row['pad'] and r['label'] == 'conv'), None)
        row['diff'] = _mean_sd(row['top1'])[0] - _mean_sd(conv['top1'])[0] if conv else None
    return rows


def _paper(pad: int) -> Tuple[Dict[str, float], Dict[str, float]]:
    """({label: top-1}, {label: Diff}) of the paper's CIFAR10 table at ``pad`` (Table 4 pad 0, Table 5 pad 4); the
    Diff values are the printed ones, not differences of the rounded means."""
    return reported_top1('cifar10', pad), reported_diff('cifar10', pad)


def _fmt(mean: float, sd: float) -> str:
    return f'{mean:.1f}' + ('' if math.isnan(sd) else f' ± {sd:.1f}')


def _dataset_flag(args: argparse.Namespace) -> str:
    return '' if args.dataset == 'fashion-mnist' else f' --dataset {args.dataset}'


def _dataset_title(args: argparse.Namespace) -> str:
    spec = dataset_spec(args.dataset)
    return 'Fashion-MNIST' if spec.name == 'fashion-mnist' else f'`{spec.name}` ({spec.description})'


def write_report(rows: List[Dict[str, Any]], args: argparse.Namespace, cost: Dict[str, float]) -> Path:
    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ['# Fashion-MNIST: the paper\'s Table 1 at CPU scale', '',
             f'Regenerate with `python scripts/fashion_mnist_study.py{_dataset_flag(args)} --jobs 2` (skips finished runs; '
             '`--report-only` rewrites this file from the run folders).', '',
             f'Setup: {_dataset_title(args)}, first {args.train_subset} training images of a seeded permutation, '
             f'the full 10k test set; ResNet-8 (one basic block per stage, 16/32/64 channels, 3x3 stride-2 stem: '
             f'`model_kwargs=dict(layers=(1, 1, 1), stem_stride=2)` on the resnet20 entrypoints), every conv '
             f'locally connected in LC models (stem and 1x1 shortcuts included); AdamW, batch 128, weight decay '
             f'1e-4, {args.epochs} epochs, lr divided by 4 at 50% and 75%; pad with the training mean then '
             f'random-crop {dataset_spec(args.dataset).img_size}; learning rates {DEFAULT_LRS} (`bioconv compare` defaults). '
             '"top-1" is the test accuracy after the last optimizer step, mean ± standard deviation over seeds; '
             '"after final sleep" is the same network after one more sleep and a BatchNorm refresh '
             '(`--final-sleep --refresh-bn`). Sleep policies (`--sleep-optimizer`): what each sleep does to '
             'the AdamW moments of LC weights: keep (the authors), average (grid-averaged like the weights), '
             'reset (zeroed). Paper: CIFAR10, ResNet20, 200 epochs, 5 runs (Table 4 pad 0, Table 5 pad 4).', '']
    for pad in PADS:
        prow = [r for r in rows if r['pad'] == pad]
        if not prow:
            continue
        paper, paper_diff = _paper(pad)
        lines += [f'## Pad {pad}', '',
                  '| Connectivity | sleep optimizer | lr | seeds | top-1 (%) | Diff vs conv | after final sleep | '
                  'train top-1 | paper CIFAR10 | paper Diff |',
                  '|---|---|---|---|---|---|---|---|---|---|']
        for r in prow:
            m, sd = _mean_sd(r['top1'])
            slept = _fmt(*_mean_sd(r['top1_final_sleep'])) if r['top1_final_sleep'] else '-'
            p = paper.get(r['base'])
            pd = '-' if r['base'] not in paper_diff else f"{paper_diff[r['base']]:+.1f}"
            diff = '-' if r['label'] == 'conv' else f"{r['diff']:+.1f}"
            lines.append(f"| {r['base']} | {r['policy'] or '-'} | {r['lr']:g} | {r['seeds']} | {_fmt(m, sd)} | {diff} "
                         f"| {slept} | {_mean_sd(r['train_top1'])[0]:.1f} | {p if p is not None else '-'} | {pd} |")
        lines.append('')
    if cost:
        lines += ['## Cost', '',
                  f"{cost['runs']} runs, {cost['cpu_minutes']:.0f} run-minutes in total "
                  f"(median {cost['median_s']:.0f} s per run, one torch thread each), measured on this project's "
                  f'2-core CPU machine.', '']
    if Path(args.findings).exists():
        lines += [Path(args.findings).read_text().strip(), '']
    lines += ['![Fashion-MNIST study](fashion_mnist.png)', '']
    out.write_text('\n'.join(lines))
    plot(rows, out.with_suffix('.png'))
    return out


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    colors = {None: 'tab:gray', 'keep': 'tab:blue', 'average': 'tab:orange', 'reset': 'tab:green'}
    for ax, pad in zip(axes, PADS):
        prow = [r for r in rows if r['pad'] == pad]
        for i, r in enumerate(prow):
            m, sd = _mean_sd(r['top1'])
            ax.bar(i, m, yerr=0 if math.isnan(sd) else sd, color=colors[r['policy']], capsize=3)
            ax.scatter([i] * len(r['top1']), r['top1'], color='k', s=6, zorder=3)
        ax.set_xticks(range(len(prow)), [r['label'].replace(', ', '\n') for r in prow], rotation=90, fontsize=7)
        lo = min((min(r['top1']) for r in rows), default=50)
        ax.set_ylim(max(0, lo - 3), None)
        ax.set_title(f'pad {pad}')
        ax.grid(axis='y', alpha=0.3)
    axes[0].set_ylabel('test top-1 (%)')
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    axes[1].legend(handles, ['no sleep', 'keep', 'average', 'reset'], title='sleep optimizer', fontsize=8)
    fig.suptitle('Fashion-MNIST, ResNet-8, conv vs LC vs LC with sleep (bars: mean, dots: seeds)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (one torch thread each)')
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--epochs', type=int, default=15)
    parser.add_argument('--train-subset', type=int, default=10000)
    parser.add_argument('--dataset', default='fashion-mnist', choices=DATASETS,
                        help='a 1-channel, 10-class dataset of the registry (fashion-mnist, fashion-mnist-shifted)')
    parser.add_argument('--data-dir', default=None)
    # default paths follow the dataset: another dataset's runs and report never overwrite Fashion-MNIST's
    parser.add_argument('--runs-dir', default=None, help='default runs/<dataset>_study')
    parser.add_argument('--report', default=None, help='default docs/results/<dataset>.md')
    parser.add_argument('--findings', default=None,
                        help='hand-written conclusions appended to the report when the file exists '
                             '(default docs/results/<dataset>_findings.md)')
    parser.add_argument('--report-only', action='store_true')
    args = parser.parse_args(argv)
    spec = dataset_spec(args.dataset)
    if (spec.in_chans, spec.num_classes) != (1, 10):
        parser.error(f'--dataset {args.dataset}: the study\'s ResNet-8 and lrs are for 1-channel, 10-class data')
    slug = spec.name.replace('-', '_')
    args.runs_dir = args.runs_dir or f'runs/{slug}_study'
    args.report = args.report or f'docs/results/{slug}.md'
    args.findings = args.findings or f'docs/results/{slug}_findings.md'

    if not args.report_only:
        from bioconv_timm.train.data import build_datasets
        build_datasets(args.dataset, data_dir=args.data_dir, pad=0, split='test', train_subset=10, eval_subset=10)
        pending = [r for r in all_runs(args) if _result(r[3]['output_dir'], args.epochs) is None]
        print(f'{len(pending)} runs to do, {args.jobs} at a time', flush=True)
        os.environ['OMP_NUM_THREADS'] = '1'
        by_dir = {r[3]['output_dir']: r for r in pending}

        def done(outcome, left: int) -> None:
            pad, cell, seed, _ = by_dir[outcome.config.output_dir]
            res = _result(outcome.config.output_dir, args.epochs)
            print(f'[{len(pending) - left}/{len(pending)}] pad {pad} {cell.label} seed {seed}: top-1 '
                  f"{res['top1_last_step']:.2f} (after final sleep {res['final']['top1']:.2f}) in "
                  f'{outcome.seconds:.0f} s', flush=True)
            if not outcome.reused:
                (Path(outcome.config.output_dir) / 'time.json').write_text(json.dumps(dict(seconds=outcome.seconds)))
            write_report(collect(args), args, _cost(args))

        sweep([TrainConfig(**r[3]) for r in pending], jobs=args.jobs, on_done=done)
    path = write_report(collect(args), args, _cost(args))
    print(path.read_text())
    return 0


def _cost(args: argparse.Namespace) -> Dict[str, float]:
    times = [json.loads(p.read_text())['seconds'] for p in Path(args.runs_dir).glob('*/*/time.json')]
    if not times:
        return {}
    return dict(runs=len(times), cpu_minutes=sum(times) / 60, median_s=statistics.median(times))


if __name__ == '__main__':
    sys.exit(main())
