"""``bioconv list``: the registered models with input size, parameter count and sleep period."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..models import model_table


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Plain-text table with a header and aligned columns."""
    cells = [[str(c) for c in columns]] + [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ['  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    rows = model_table(args.filter)
    for row in rows:
        row['params'] = f"{row['params'] / 1e6:.2f}M"
        row['sleep_every'] = '-' if row['sleep_every'] is None else row['sleep_every']
    print(format_table(rows, ['name', 'input_size', 'params', 'sleep_every', 'layer_type', 'family']))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('list', help='list the registered models (input size, parameters, sleep period)')
    p.add_argument('--filter', default='*', help="shell-style name filter, e.g. 'lc_resnet20*'")
    p.set_defaults(func=run)
