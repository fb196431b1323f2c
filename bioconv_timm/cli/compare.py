"""``bioconv compare``: conv / LC / LC-reps / LC-ws(1,10,100) trained side by side, shaped like paper Table 1."""
from __future__ import annotations

import argparse
import dataclasses

from ..train.compare import CompareConfig, compare, format_compare_table, preset_config
from .flags import add_config_flag, add_setting_flags, given_settings


SETTINGS = {'compare': CompareConfig}  # the settings class of each command (docs/flags.md, tests)

def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """The dataset's preset (``PRESETS``), then the ``--config`` file, then the flags given; ``--lr CELL=LR``
    changes only the cells it names."""
    given = given_settings(args, CompareConfig)
    lrs = given.pop('lrs', None)
    dataset = given.pop('dataset', CompareConfig.dataset)
    config = preset_config(dataset, **given)
    if lrs:
        config = dataclasses.replace(config, lrs={**config.lrs, **lrs})
    return config


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    rows = compare(config)
    print()
    print(format_compare_table(rows, config))
    print(f'\ntable: {config.output_dir}/compare.md, chart: {config.output_dir}/compare.png')
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('compare', help="train conv / LC / LC-reps / LC-ws(1,10,100) and print paper Table 1's shape",
                              description='Budgets per dataset (bioconv_timm.train.compare.PRESETS) fit ~15 min on 2 '
                                          'CPU cores; a --config file overrides the preset, and every flag both.')
    add_config_flag(p)
    add_setting_flags(p, CompareConfig)
    p.set_defaults(func=run)
