"""``bioconv compare``: conv / LC / LC-reps / LC-ws(1,10,100) trained side by side, shaped like paper Table 1."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..models import TIMM_ARCHS
from ..train.compare import CompareConfig, compare, format_compare_table, preset_config, select_cells
from ..train.data import DATASETS


def _parse_lrs(items: Sequence[str], preset: dict) -> dict:
    """The preset's learning rates with the ``--lr CELL=VALUE`` overrides applied."""
    lrs = dict(preset)
    for item in items or ():
        key, sep, value = item.partition('=')
        if not sep or key not in lrs:
            raise SystemExit(f'--lr expects CELL=VALUE with CELL in {sorted(lrs)}, got {item!r}')
        lrs[key] = float(value)
    return lrs


def run(args: argparse.Namespace) -> int:
    config = preset_config(
        args.dataset, data_dir=args.data_dir, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
        pad=args.pad, img_size=args.img_size, seeds=tuple(args.seeds), weight_decay=args.weight_decay,
        train_subset=args.train_subset, eval_subset=args.eval_subset, split=args.split,
        output_dir=args.output_dir, progress=args.progress, device=args.device,
        sleep_optimizer=args.sleep_optimizer)
    config.lrs = _parse_lrs(args.lr, config.lrs)
    if args.cells:
        try:
            config.cells = select_cells(args.cells)
        except ValueError as exc:
            raise SystemExit(f'--cells: {exc}') from exc
    rows = compare(config)
    print()
    print(format_compare_table(rows, config))
    print(f'\ntable: {config.output_dir}/compare.md, chart: {config.output_dir}/compare.png')
    return 0


def add_parser(subparsers) -> None:
    d = CompareConfig()
    p = subparsers.add_parser('compare', help="train conv / LC / LC-reps / LC-ws(1,10,100) and print paper Table 1's shape",
                       description='Budgets per dataset (bioconv_timm.train.compare.PRESETS) fit ~15 min on 2 CPU cores; '
                                   'every flag overrides its preset.')
    p.add_argument('--dataset', default=d.dataset, choices=DATASETS)
    p.add_argument('--data-dir', default=None)
    p.add_argument('--arch', default=None, choices=('resnet20', 'resnet18_half') + TIMM_ARCHS,
                   help='the network: the paper ResNets or a converted timm CNN (default: the dataset preset)')
    p.add_argument('--epochs', type=int, default=None, help='default: the dataset preset (digits 10, fashion-mnist 15)')
    p.add_argument('--batch-size', type=int, default=None)
    p.add_argument('--pad', type=int, default=None)
    p.add_argument('--img-size', type=int, default=None, help="network input side (default: the dataset's)")
    p.add_argument('--seeds', type=int, nargs='+', default=list(d.seeds))
    p.add_argument('--cells', nargs='+', default=None, metavar='CELL',
                   help='train only these rows: conv lc lc_4reps lc_ws1 lc_ws10 lc_ws100 (default: all)')
    p.add_argument('--weight-decay', type=float, default=None)
    p.add_argument('--lr', nargs='*', metavar='CELL=LR', help='override a learning rate, e.g. lc_ws10=2e-3')
    p.add_argument('--sleep-optimizer', default=None, choices=('keep', 'average', 'reset'),
                   help='what a sleep does to the AdamW moments of LC weights')
    p.add_argument('--train-subset', type=int, default=None)
    p.add_argument('--eval-subset', type=int, default=None)
    p.add_argument('--split', default=d.split, choices=('val', 'test'))
    p.add_argument('--output-dir', default=None, help='default: runs/compare-<dataset>')
    p.add_argument('--device', default=None)
    p.add_argument('--progress', action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=run)
