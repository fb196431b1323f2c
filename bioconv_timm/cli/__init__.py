"""The ``bioconv`` command line: one module per subcommand, each a thin layer over the Python API.

This package is the only place in ``bioconv_timm`` that imports argparse, and no library module imports it
(tests/test_architecture.py checks both). Flags come from the settings declarations (``cli.flags``), and
:func:`main` is the one error boundary: every error bad input can cause reaches the user as one line.

It starts at once: the settings classes and what they list (datasets, models, sleep modes) import without torch or
timm, and each command's work loads when it runs (``_lazy.lazy_function``), so ``--help``, ``bioconv list`` and a
bad flag never import them (tests/test_cli_startup.py). A check that needs timm (an optimizer name, a model name
that is not ours) runs after every declared bound and choice.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .._malloc import tune_this_process
from ..errors import BioconvError
from . import bench, brainscore, compare, export, list_models, publish, sleep_sim, train, verify
from .flags import Parser

__all__ = ['build_parser', 'main', 'flags_page', 'COMMAND_SETTINGS']

SUBCOMMANDS = (list_models, train, compare, publish, verify, export, bench, brainscore, sleep_sim)
# each command's settings class, from which its flags are generated ('brainscore score': ...)
COMMAND_SETTINGS = {name: cls for command in SUBCOMMANDS for name, cls in getattr(command, 'SETTINGS', {}).items()}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog='bioconv', description='Locally connected ResNets with a sleep phase, as timm models.')
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


def _check_environment() -> None:
    """Settings read from the environment, checked before any work (a bad one raises a BioconvError)."""
    from ..layers.native import get_backend
    get_backend()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``bioconv`` command. Run as a command (``argv`` None: the console script, ``python -m
    bioconv_timm.cli``) it first tunes glibc malloc for this process; ``main([...])`` called from Python leaves
    the caller's allocator alone.

    Exit status 2, with one line ``bioconv <command>: error: <what is wrong and what to do>`` on stderr, for
    every error that bad input can cause: a bad flag (argparse), a setting or file the project refuses (any
    :class:`~bioconv_timm.errors.BioconvError`) and an ``OSError`` on a user's path. Anything else is a bug and
    keeps its traceback."""
    if argv is None:
        _tune_malloc_for_command()
    args = build_parser().parse_args(argv)
    command = ' '.join(['bioconv', args.command] + [getattr(args, 'brainscore_command', None) or ''][:1]).strip()
    try:
        _check_environment()
        return args.func(args)
    except BioconvError as exc:
        print(f'{command}: error: {exc}', file=sys.stderr)
        return 2
    except BrokenPipeError:  # `bioconv list | head`: the reader left; not an error of ours or theirs
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave: a bug, keep the traceback
            raise
        what = exc.strerror or type(exc).__name__
        print(f'{command}: error: {exc.filename}: {what}; check the path (and that it is writable where '
              'output goes)', file=sys.stderr)
        return 2


def flags_page() -> str:
    """docs/flags.md: every command's flags, generated from the settings declarations
    (``python scripts/write_flags_doc.py`` rewrites the file; tests/test_settings.py checks it is current)."""
    from ..settings import flags_markdown
    parts = ['# Command-line flags', '',
             'Generated from the settings declarations (`bioconv_timm.settings`): each flag is one field of a settings '
             'dataclass, with its type, default, valid values and, for `train`, whether a resumed run (`--resume`) may '
             'change it (*same*: must equal the run\'s; *neutral*: never changes what a run computes; *extend*: may '
             'change). `train` and `compare` also take `--config FILE`, a YAML or JSON mapping of these settings '
             '(names with `_` or `-`), which the flags given on the command line override.', '',
             'Regenerate with `python scripts/write_flags_doc.py`.', '']
    for name, cls in COMMAND_SETTINGS.items():
        parts += [f'## `bioconv {name}`', '', f'Settings class: `{cls.__module__}.{cls.__qualname__}`.', '',
                  flags_markdown(cls), '']
    return '\n'.join(parts)
