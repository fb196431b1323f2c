"""The ``bioconv`` command line: one module per subcommand, each a thin layer over the Python API.

This package is the only place in ``bioconv_timm`` that imports argparse, and no library module imports it
(tests/test_architecture.py checks both).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .._malloc import tune_this_process
from ..train import CheckpointError, ConfigError
from ..train.data import DatasetError
from . import bench, brainscore, compare, list_models, publish, sleep_sim, train

__all__ = ['build_parser', 'main']

SUBCOMMANDS = (list_models, train, compare, publish, bench, brainscore, sleep_sim)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='bioconv', description='Locally connected ResNets with a sleep phase, as timm models.')
    sub = parser.add_subparsers(dest='command', required=True)
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def _tune_malloc_for_command() -> None:
    """Keep large freed blocks in glibc's heap for this ``bioconv`` process (``bioconv_timm._malloc``): LC
    training steps otherwise map, fault in and unmap their weight gradients every step. Skipped where the C
    library is not glibc, GLIBC_TUNABLES sets malloc tunables, LD_PRELOAD loads another allocator, or
    BIOCONV_MALLOC_TUNING=0."""
    tune_this_process()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``bioconv`` command. Run as a command (``argv`` None: the console script, ``python -m
    bioconv_timm.cli``) it first tunes glibc malloc for this process; ``main([...])`` called from Python leaves
    the caller's allocator alone."""
    if argv is None:
        _tune_malloc_for_command()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, CheckpointError, ConfigError) as exc:
        # bad input the user can fix: one clear line, no traceback
        print(f'bioconv {args.command}: error: {exc}', file=sys.stderr)
        return 2

