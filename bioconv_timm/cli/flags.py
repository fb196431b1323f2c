"""Command-line flags generated from the settings declarations (``bioconv_timm.settings``), and the parser that
reports a bad flag in one line.

No subcommand writes its flags by hand: :func:`add_setting_flags` turns each declared field of a settings
dataclass into one flag (its type, help, valid values and default from the declaration), and
:func:`settings_from_args` builds the dataclass from the flags that were given, over an optional ``--config``
file, so that the dataclass's own validation judges every value.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
from typing import Any, Dict, Iterable, Optional

from ..settings import declared_fields, field_kind, flag_name, load_settings_file

__all__ = ['Parser', 'add_setting_flags', 'add_config_flag', 'settings_from_args', 'given_settings']


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``bioconv train: error: argument --seed: invalid int value: 'x'``."""

    def error(self, message: str):  # argparse's prints the whole usage block first
        self.exit(2, f'{self.prog}: error: {message} (`{self.prog} --help` lists the flags)\n')


def _scalar(kind: Any):
    """The argparse ``type`` of a scalar field (argparse names it in its message: "invalid int value")."""
    return kind if kind in (int, float) else str


class _ListAction(argparse.Action):
    """A tuple field: items separated by spaces or commas, in one argument or several (``--seeds 0 1 2``,
    ``--lr-milestones '100 150'``); no item gives an empty tuple."""

    def __init__(self, *args: Any, element: Any = str, **kwargs: Any) -> None:
        self.element = element
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        out = []
        for text in values:
            for token in text.replace(',', ' ').split():
                try:
                    out.append(self.element(token))
                except ValueError:
                    parser.error(f'argument {option_string}: invalid {self.element.__name__} value: {token!r}')
        earlier = getattr(namespace, self.dest, None)  # a repeated flag adds to the list (--model a --model b)
        setattr(namespace, self.dest, (earlier if isinstance(earlier, tuple) else ()) + tuple(out))


class _KeyValueAction(argparse.Action):
    """KEY=VALUE pairs into a dict; values are Python literals when they parse as one, else strings. With
    ``numbers=True`` every value must be a number (``--lr conv=5e-3``).

    Ours, not timm.utils.ParseKwargs: that one raises a bare ValueError (a traceback) on an item without '=' and
    accepts keys that are no Python name; this one stops with a one-line error naming the item."""

    def __init__(self, *args: Any, numbers: bool = False, **kwargs: Any) -> None:
        self.numbers = numbers
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        out: Dict[str, Any] = {}
        for item in values:
            key, sep, value = item.partition('=')
            if not sep or not key.isidentifier():
                parser.error(f'argument {option_string}: expected KEY=VALUE, got {item!r}')
            if self.numbers:
                try:
                    out[key] = float(value)
                except ValueError:
                    parser.error(f'argument {option_string}: {key}={value!r} is not a number')
                continue
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                out[key] = value
        setattr(namespace, self.dest, out)


def _help(f: dataclasses.Field, decl) -> str:
    text = decl.help
    choices = decl.choice_list() if decl.choices is not None and not callable(decl.choices) else None
    if choices:
        text += f' (one of: {", ".join(map(str, choices))})'
    bounds = decl.bounds_text()
    if bounds:
        text += f' ({bounds})'
    default = f.default if f.default is not dataclasses.MISSING else None
    if default is None and decl.default_help:
        text += f'; default: {decl.default_help}'
    elif default not in (None, False, (), {}):
        text += f'; default: {default}'
    return text.replace('%', '%%')


def add_setting_flags(parser: argparse.ArgumentParser, cls: type, exclude: Iterable[str] = (),
                      defaults: Optional[Dict[str, Any]] = None) -> None:
    """One flag per declared field of ``cls`` (except ``exclude`` and fields declared ``cli=False``). A flag left
    out stays out of the parsed namespace, so the dataclass (or a preset) supplies its default; ``defaults``
    only changes the help text (e.g. a preset's values)."""
    exclude = set(exclude)
    for f, decl in declared_fields(cls):
        if not decl.cli or f.name in exclude:
            continue
        kind, nullable, element = field_kind(cls, f.name)
        flag = flag_name(f, decl)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kwargs: Dict[str, Any] = dict(help=_help(f, decl))
        if flag.startswith('-'):
            kwargs.update(dest=f.name, default=argparse.SUPPRESS, required=required)
        if decl.metavar:
            kwargs['metavar'] = decl.metavar
        if kind is bool:
            plain_switch = f.default is False and not nullable
            kwargs['action'] = 'store_true' if plain_switch else argparse.BooleanOptionalAction
        elif kind is tuple:
            kwargs.update(nargs='*', action=_ListAction, element=_scalar(element))
        elif kind is dict:
            kwargs.update(nargs='*', action=_KeyValueAction, numbers=element is float)
        else:
            kwargs['type'] = _scalar(kind)
        parser.add_argument(flag, **kwargs)


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--config', default=None, metavar='FILE',
                        help='a YAML or JSON file of settings (names as the flags, with _ or -); flags given on the '
                             'command line override it')


def given_settings(args: argparse.Namespace, cls: type) -> Dict[str, Any]:
    """The settings of ``cls`` from ``args``: the ``--config`` file's, then the flags given (which win)."""
    values: Dict[str, Any] = {}
    if getattr(args, 'config', None):
        values.update(load_settings_file(cls, args.config))
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return values


def settings_from_args(args: argparse.Namespace, cls: type) -> Any:
    """``cls(**given_settings(args, cls))``: validated as the dataclass declares."""
    return cls(**given_settings(args, cls))
