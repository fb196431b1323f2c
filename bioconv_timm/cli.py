"""The ``bioconv`` command line: a thin layer over the Python API."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence


def model_table(pattern: str = '*') -> List[dict]:
    """One row per registered bioconv model: name, input size, parameter count, sleep period."""
    import fnmatch

    import timm
    import torch

    from .models import MODEL_NAMES

    rows = []
    for name in MODEL_NAMES:
        if not fnmatch.fnmatch(name, pattern):
            continue
        with torch.device('meta'):  # count parameters without allocating ~500M floats
            model = timm.create_model(name)
        rows.append(dict(
            name=name,
            input_size='x'.join(str(s) for s in model.pretrained_cfg['input_size']),
            params=sum(p.numel() for p in model.parameters()),
            sleep_every=model.sleep_every,
            layer_type=model.layer_type if model.stem_type == model.layer_type else f'{model.layer_type} (conv stem)',
        ))
    return rows


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Plain-text table with a header and aligned columns."""
    cells = [[str(c) for c in columns]] + [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ['  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    rows = model_table(args.filter)
    for row in rows:
        row['params'] = f"{row['params'] / 1e6:.2f}M"
        row['sleep_every'] = '-' if row['sleep_every'] is None else row['sleep_every']
    print(format_table(rows, ['name', 'input_size', 'params', 'sleep_every', 'layer_type']))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='bioconv', description='Locally connected ResNets with a sleep phase, as timm models.')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('list', help='list the registered models (input size, parameters, sleep period)')
    p.add_argument('--filter', default='*', help="shell-style name filter, e.g. 'lc_resnet20*'")
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
