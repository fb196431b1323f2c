"""``bioconv bench``: the LC layer vs Conv2d vs the einsum baseline, and LC vs conv training steps."""
from __future__ import annotations

import argparse
import sys

from .._lazy import lazy_function
from ..bench.config import BenchConfig

# the work, imported when the command runs (torch): `bioconv bench --help` and a bad flag load none of it
run_benchmark = lazy_function('bioconv_timm.bench.run', 'run_benchmark')
format_report = lazy_function('bioconv_timm.bench.report', 'format_report')
from .flags import add_setting_flags, settings_from_args


SETTINGS = {'bench': BenchConfig}  # the settings class of each command (docs/flags.md, tests)

def add_bench_args(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bioconv bench`` (also ``scripts/bench_lc.py``): one per BenchConfig field."""
    add_setting_flags(parser, BenchConfig)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return settings_from_args(args, BenchConfig)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed flags, print the report (progress on stderr); exit status 0."""
    cfg = config_from_args(args)
    result = run_benchmark(cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_report(result))
    if cfg.json_path:
        print(f'\nJSON: {cfg.json_path}')
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        'bench', help='time the LC layer vs Conv2d (NCHW, channels-last) vs the unfold + einsum baseline, and LC vs '
                      'conv training steps',
        description='Layer timings at the paper\'s shapes (median and spread, GFLOP/s, ratios, peak memory) and '
                    'training-step images/s, in one run. Run it alone on the machine.')
    add_bench_args(p)
    p.set_defaults(func=run_from_args)
