"""Hebbian sleep in a deep LC network (issue 4, part 3): how close it gets to the instant sleep, and
what it gives in training.

1. Convergence: on lc_resnet20 (32x32) at initialization - every location independent, the least
   shared a network gets - run the Hebbian sleep with 0..40 updates per input grid on representative
   layers and on the whole network, and record the relative distance to the instant sleep's grid
   means and -log SNR per layer (CSV + PNG).
2. Training: lc_resnet20_ws10 on the embedded digits task (the `bioconv compare` budget: 10 epochs,
   batch 64, pad 4, lr 1e-3, weight decay 1e-4) with instant vs Hebbian sleep, same seeds.

Writes docs/results/hebbian_deep_sleep.md (+ .csv, .png). Training runs are resumable (run folders
under --runs-dir).

    python scripts/hebbian_deep_sleep.py            # ~15 min on a 2-core CPU
    python scripts/hebbian_deep_sleep.py --quick    # seconds, for a smoke test
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import timm

import bioconv_timm  # noqa: F401  (registers the models)
from bioconv_timm import lc_layers
from bioconv_timm.sleep.hebbian import (HebbianSleepConfig, distance_to_grid_means, hebbian_share_weights_,
                                        hebbian_sleep_curve)
from bioconv_timm.sleep import weight_snr
from bioconv_timm.train import TrainConfig, train

LAYERS = ('conv1', 'layer1.0.conv1', 'layer2.0.conv1', 'layer2.0.downsample.0', 'layer3.2.conv2')
ITERATIONS = (0, 1, 2, 5, 10, 20, 40)


def convergence(quick: bool):
    torch.manual_seed(0)
    img = 12 if quick else 32
    model = timm.create_model('lc_resnet20', img_size=img)
    layers = dict(lc_layers(model))
    iterations = (0, 2, 5) if quick else ITERATIONS
    rows = []
    for name in LAYERS:
        layer = layers[name]
        for r in hebbian_sleep_curve(layer, list(iterations)):
            rows.append(dict(layer=name, shape='x'.join(map(str, layer.weight.shape)), stride=layer.stride[0], **r))
    # the whole network, default settings, layer after layer
    start = {n: l.weight.detach().clone() for n, l in layers.items()}
    config = HebbianSleepConfig(iterations=3) if quick else HebbianSleepConfig()
    t0 = time.perf_counter()
    hebbian_share_weights_(model, config)
    seconds = time.perf_counter() - t0
    whole = [dict(layer=n, rel_distance=distance_to_grid_means(l.weight, start[n], l.kernel_size),
                  neg_log_snr=-torch.tensor(weight_snr(l)).log().item()) for n, l in layers.items()]
    return rows, whole, seconds, config


def training(args):
    results = []
    for mode in ('instant', 'hebbian'):
        for seed in range(args.seeds):
            out = Path(args.runs_dir) / f'{mode}-seed{seed}'
            tc = TrainConfig(model='lc_resnet20_ws10', dataset='digits', epochs=1 if args.quick else 10,
                             batch_size=64, lr=1e-3, weight_decay=1e-4, pad=4, seed=seed, sleep_mode=mode,
                             train_subset=128 if args.quick else None, eval_subset=64 if args.quick else None,
                             output_dir=str(out), resume=True, progress=False)
            done = out / 'result.json'
            if not (done.exists() and json.loads(done.read_text()).get('epochs') == tc.epochs):
                t0 = time.perf_counter()
                train(tc)
                (out / 'time.json').write_text(json.dumps(dict(seconds=time.perf_counter() - t0)))
            res = json.loads(done.read_text())
            seconds = json.loads((out / 'time.json').read_text())['seconds'] if (out / 'time.json').exists() else None
            results.append(dict(mode=mode, seed=seed, top1=res['final']['top1'], sleeps=res['sleeps'], seconds=seconds))
    return results


def plot(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in dict.fromkeys(r['layer'] for r in rows):
        pts = [r for r in rows if r['layer'] == name]
        ax.plot([r['iterations'] for r in pts], [r['rel_distance'] for r in pts], marker='o', label=name)
    ax.axhline(rows[0]['floor'], color='k', ls='--', lw=1, label='gamma / (1 + gamma)')
    ax.set(yscale='log', xlabel='updates per input grid', ylabel='distance to grid means (relative)',
           title='Hebbian sleep on lc_resnet20 at init')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='tiny sizes, for a smoke test')
    p.add_argument('--seeds', type=int, default=2)
    p.add_argument('--runs-dir', default='runs/hebbian_deep_sleep')
    p.add_argument('--out', default='docs/results/hebbian_deep_sleep.md')
    p.add_argument('--skip-training', action='store_true')
    args = p.parse_args(argv)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, whole, seconds, config = convergence(args.quick)
    with open(out.with_suffix('.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out.with_suffix('.png'))
    train_rows = [] if args.skip_training else training(args)

    lines = ['# Hebbian sleep in a deep LC network', '',
             'Regenerate with `python scripts/hebbian_deep_sleep.py` (see its docstring; the method is in '
             '`bioconv_timm/sleep/hebbian.py`).', '',
             f'## Convergence to the instant sleep (lc_resnet20 at initialization, gamma = {config.gamma:g}, '
             f'lr {config.lr:g}, momentum {config.momentum:g})', '',
             'Relative distance = ||W - grid means|| / ||W_start - grid means||, grid means of the weights at the '
             'start of sleep (what the instant sleep sets). The eq. 5 fixed point for whitened inputs is '
             f'gamma / (1 + gamma) = {config.gamma / (1 + config.gamma):.2e}.', '',
             '| layer | weight shape | stride | ' + ' | '.join(f'{n} upd.' for n in dict.fromkeys(r['iterations'] for r in rows)) + ' |',
             '|---|---|---|' + '---|' * len(set(r['iterations'] for r in rows))]
    for name in dict.fromkeys(r['layer'] for r in rows):
        pts = [r for r in rows if r['layer'] == name]
        lines.append(f"| {name} | {pts[0]['shape']} | {pts[0]['stride']} | "
                     + ' | '.join(f"{r['rel_distance']:.1e} (-log SNR {r['neg_log_snr']:.1f})" for r in pts) + ' |')
    d = [w['rel_distance'] for w in whole]
    s = [w['neg_log_snr'] for w in whole]
    lines += ['', f'Whole network ({len(whole)} LC layers, stem and 1x1 shortcuts included, {config.iterations} updates '
              f'per grid): relative distance min {min(d):.1e} / median {statistics.median(d):.1e} / max {max(d):.1e}; '
              f'-log SNR median {statistics.median(s):.1f}; {seconds:.1f} s on this CPU '
              f'({torch.get_num_threads()} threads).', '', '![convergence](hebbian_deep_sleep.png)', '']
    if train_rows:
        lines += ['## Training: lc_resnet20_ws10 on digits, instant vs Hebbian sleep', '',
                  'Budget of `bioconv compare`: 10 epochs, batch 64, pad 4, AdamW lr 1e-3, weight decay 1e-4, '
                  'sleep after steps 1, 11, 21, ...; test top-1 after the last step.', '',
                  '| sleep mode | seed | top-1 (%) | sleeps | wall time (s) |', '|---|---|---|---|---|']
        for r in train_rows:
            sec = f"{r['seconds']:.0f}" if r['seconds'] else '-'
            lines.append(f"| {r['mode']} | {r['seed']} | {r['top1']:.2f} | {r['sleeps']} | {sec} |")
        for mode in ('instant', 'hebbian'):
            accs = [r['top1'] for r in train_rows if r['mode'] == mode]
            lines.append(f'\n{mode}: mean top-1 {statistics.mean(accs):.2f} over {len(accs)} seed(s).')
        lines.append('')
    findings = out.with_name('hebbian_deep_sleep_findings.md')
    if findings.exists():
        lines += [findings.read_text().strip(), '']
    out.write_text('\n'.join(lines))
    print(out.read_text())
    return 0


if __name__ == '__main__':
    sys.exit(main())
