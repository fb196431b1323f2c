"""``bioconv list``: the registered models with input size, parameter count and sleep period."""
from __future__ import annotations

import argparse
import fnmatch
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..models import MODEL_NAMES, model_table
from ..settings import setting, validate_settings
from .flags import add_setting_flags, settings_from_args


def _matches_a_model(pattern: str, config: Any) -> Optional[str]:
    if fnmatch.filter(MODEL_NAMES, pattern):
        return None
    return "matches no registered model; try 'lc_*' or leave it out to list all"


@dataclass
class ListConfig:
    filter: str = setting('*', help="shell-style name filter, e.g. 'lc_resnet20*'", check=_matches_a_model,
                         valid='a pattern that matches a model')

    def __post_init__(self) -> None:
        validate_settings(self)


SETTINGS = {'list': ListConfig}  # the settings class of each command (docs/flags.md, tests)


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Plain-text table with a header and aligned columns."""
    cells = [[str(c) for c in columns]] + [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ['  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    rows = model_table(settings_from_args(args, ListConfig).filter)
    for row in rows:
        row['params'] = f"{row['params'] / 1e6:.2f}M"
        row['sleep_every'] = '-' if row['sleep_every'] is None else row['sleep_every']
    print(format_table(rows, ['name', 'input_size', 'params', 'sleep_every', 'layer_type', 'family']))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('list', help='list the registered models (input size, parameters, sleep period)')
    add_setting_flags(p, ListConfig)
    p.set_defaults(func=run)
