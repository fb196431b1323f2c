"""Every setting declared once: its type, valid range or choices, help text and resume rule, in one ``field``.

A settings dataclass (``TrainConfig``, ``CompareConfig``, ``BenchConfig``, ...) declares each field with
:func:`setting`. From that one declaration come:

* the validation that runs when the dataclass is built (:func:`validate_settings`, called from its
  ``__post_init__``), so a bad value never reaches a data loader or an allocator;
* the command-line flags (``bioconv_timm.cli.flags`` reads the declarations; no flag is written by hand);
* which fields a resumed run may change (:func:`fields_with_resume`);
* the docs' tables of flags (:func:`flags_markdown`).

Ours rather than pydantic or jsonargparse: the configs are plain dataclasses that the whole package (and
checkpoints, and JSON run records) already use, and a ~200-line generator over ``dataclasses.fields`` keeps the
error text and the CLI's start-up time under our control.
"""
from __future__ import annotations

import collections.abc
import functools
import dataclasses
import math
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import UserValueError

__all__ = ['ConfigError', 'Setting', 'setting', 'inherit', 'validate_settings', 'lists_as_tuples', 'declared_fields', 'field_kind',
           'fields_with_resume', 'flag_name', 'flags_markdown', 'settings_from_mapping', 'load_settings_file', 'device_problem',
           'registered_model_problem', 'one_line_problem',
           'RESUME_RULES', 'PATH_KINDS']

# same: a resumed run must have the value the run started with; neutral: never changes what a run computes
# (where it runs, what it prints); extend: a resumed run may change it (train longer, evaluate differently).
RESUME_RULES = ('same', 'neutral', 'extend')
# dir_in: an existing folder; dir_out: a folder we may create (not a file); file_in: an existing file;
# file_out: a file we may create (not a folder).
PATH_KINDS = ('dir_in', 'dir_out', 'file_in', 'file_out')


class ConfigError(UserValueError):
    """A setting the user can fix (unknown model, a number out of range, a path of the wrong kind)."""


@dataclass(frozen=True)
class Setting:
    """The declaration of one field. Bounds are inclusive (``ge``/``le``) or strict (``gt``/``lt``); they apply
    to a number, or to every element of a tuple of numbers. ``choices`` is a sequence or a zero-argument callable
    (looked up when checked: timm's model list, the registered datasets). ``check(value, config)`` returns a
    problem (text) or None. ``convert`` turns a value as given (from a flag or a JSON/YAML file) into the field's
    type before it is checked. ``flag`` overrides the flag name (``None``: ``--field-name``); ``cli=False``
    keeps a field off the command line (the API only, e.g. objects a flag cannot spell)."""
    help: str
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    choices: Union[Sequence[Any], Callable[[], Sequence[Any]], None] = None
    resume: Optional[str] = None
    path: Optional[str] = None
    check: Optional[Callable[[Any, Any], Optional[str]]] = None
    convert: Optional[Callable[[Any], Any]] = None
    flag: Optional[str] = None
    metavar: Optional[str] = None
    default_help: Optional[str] = None   # what a None default stands for, e.g. "the dataset's"
    valid: Optional[str] = None          # the valid values in words, where a check function decides them
    cli: bool = True
    empty: bool = False                  # an empty list is a value (e.g. bench --shapes none: no layers)

    def choice_list(self) -> Optional[List[Any]]:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)

    def bounds_text(self) -> str:
        bounds = (('>', self.gt), ('>=', self.ge), ('<', self.lt), ('<=', self.le))
        return ' and '.join(f'{op} {_number(v)}' for op, v in bounds if v is not None)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f'{value:g}'


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, **declaration: Any) -> Any:
    """A dataclass ``field`` carrying its :class:`Setting` (keyword arguments: the Setting's fields)."""
    decl = Setting(**declaration)
    if decl.resume is not None and decl.resume not in RESUME_RULES:
        raise ValueError(f'resume rule {decl.resume!r} is not one of {RESUME_RULES}')
    if decl.path is not None and decl.path not in PATH_KINDS:
        raise ValueError(f'path kind {decl.path!r} is not one of {PATH_KINDS}')
    return dataclasses.field(default=default, default_factory=default_factory, metadata={'setting': decl})


def inherit(source: type, name: str, default: Any = MISSING, *, default_factory: Any = MISSING,
            **changes: Any) -> Any:
    """The declaration of ``source``'s field ``name`` for another settings class (e.g. ``CompareConfig.pad``
    from ``TrainConfig.pad``), with a new default and any Setting fields in ``changes`` replaced."""
    src = next(f for f in dataclasses.fields(source) if f.name == name)
    decl = dataclasses.replace(src.metadata['setting'], **changes)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={'setting': decl})


def declared_fields(cls: type) -> Iterator[Tuple[dataclasses.Field, Setting]]:
    """``(field, Setting)`` for every field of the settings class ``cls`` (every field must be declared)."""
    for f in dataclasses.fields(cls):
        decl = f.metadata.get('setting')
        if decl is None:
            raise TypeError(f'{cls.__name__}.{f.name} has no setting() declaration')
        yield f, decl


def flag_name(f: dataclasses.Field, decl: Setting) -> str:
    return decl.flag or '--' + f.name.replace('_', '-')


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> Dict[str, Any]:
    # resolving a dataclass's string annotations takes ~1 ms a field; every config built would pay it again
    return typing.get_type_hints(cls)


def field_kind(cls: type, name: str) -> Tuple[Any, bool, Any]:
    """``(kind, nullable, element)`` of a field's annotation: kind is bool, int, float, str, tuple, dict or
    another class; element is a tuple's element type (or a dict's value type)."""
    hint = _type_hints(cls)[name]
    nullable = False
    if typing.get_origin(hint) is Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else str
    origin = typing.get_origin(hint)
    if origin in (tuple, list, collections.abc.Sequence) or hint in (tuple, list):
        args = typing.get_args(hint)
        return tuple, nullable, (args[0] if args else Any)
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return dict, nullable, (args[1] if len(args) == 2 else Any)
    return hint, nullable, None


def fields_with_resume(cls: type, *rules: str) -> frozenset:
    """The names of ``cls``'s fields whose resume rule is one of ``rules``."""
    return frozenset(f.name for f, decl in declared_fields(cls) if decl.resume in rules)


def _type_problem(value: Any, kind: Any) -> Optional[str]:
    if kind is bool:
        return None if isinstance(value, bool) else 'must be true or false'
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else 'must be an integer'
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return 'must be a number'
        return None if math.isfinite(value) else 'must be a finite number'
    if kind is str:
        return None if isinstance(value, str) and value and '\x00' not in value else 'must be a non-empty string'
    if kind is Any:
        return None
    if isinstance(kind, type) and not isinstance(value, kind):
        return f'must be a {kind.__name__}'
    return None


def _bound_problem(value: Any, decl: Setting) -> Optional[str]:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    ok = ((decl.ge is None or value >= decl.ge) and (decl.gt is None or value > decl.gt)
          and (decl.le is None or value <= decl.le) and (decl.lt is None or value < decl.lt))
    return None if ok else f'must be {decl.bounds_text()}'


def _path_problem(value: str, kind: str, metavar: Optional[str] = None) -> Optional[str]:
    """What is wrong with ``value`` as a path of ``kind`` (PATH_KINDS), or None. ``metavar`` (e.g. 'OUTPUT.onnx')
    gives the file suffix a message suggests."""
    path = Path(value)
    if kind in ('dir_in', 'file_in') and not path.exists():
        return 'does not exist'
    if kind == 'dir_in' and not path.is_dir():
        return 'is not a folder'
    if kind == 'file_in' and not path.is_file():
        return 'is not a file'
    if kind in ('dir_out', 'file_out'):  # tried, not read off permission bits (root passes os.access on /proc)
        from .output_paths import check_output_file, check_output_folder
        try:
            if kind == 'dir_out':
                check_output_folder(path, ConfigError)
            else:
                check_output_file(path, ConfigError, example='out' + Path(metavar or '').suffix)
        except ConfigError as exc:
            return f'cannot be used: {exc}'
    return None


def _problem(value: Any, f: dataclasses.Field, decl: Setting, cls: type, config: Any) -> Optional[str]:
    kind, nullable, element = field_kind(cls, f.name)
    if value is None:
        return None if nullable else 'must be set'
    items: Sequence[Any] = [value]
    if kind is tuple:
        if not isinstance(value, tuple):
            return 'must be a list'
        if not value and decl.choices is not None and not decl.empty:
            return 'is empty; give at least one of: ' + ', '.join(map(str, decl.choice_list()))
        items = value
        kind = element
    elif kind is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return 'must be a mapping of names to values'
        items = list(value.values())
        kind = element
    for item in items:
        problem = _type_problem(item, kind) or _bound_problem(item, decl)
        if problem:
            return problem if len(items) == 1 and items[0] is value else f'{problem} (each item; {item!r} is not)'
        choices = decl.choice_list()
        if choices is not None and item not in choices:
            return 'is not one of: ' + ', '.join(map(str, choices))
        if decl.path and isinstance(item, str):
            problem = _path_problem(item, decl.path, decl.metavar)
            if problem:
                return problem
    return None


def _label(f: dataclasses.Field, decl: Setting) -> str:
    """How a message names a setting: the field and its flag ('seed (--seed)'; a positional: 'source')."""
    flag = flag_name(f, decl)
    return f'{f.name} ({flag})' if flag.startswith('-') else f.name


def lists_as_tuples(value: Any) -> Any:
    """``value`` with every list inside it a tuple, mappings kept: a YAML/JSON file's ``layers: [1, 1, 1]`` then
    equals the flag's ``layers=(1,1,1)``."""
    if isinstance(value, dict):
        return {k: lists_as_tuples(v) for k, v in value.items()}
    return tuple(lists_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def validate_settings(config: Any) -> None:
    """Convert each field of the settings dataclass ``config`` as declared (lists to tuples, ...), then raise
    :class:`ConfigError` for the first value outside its declaration, naming the field, its flag and the value.

    Every field's type, bounds, choices and path kind are checked before any field's ``check`` function runs:
    a check may import torch or timm (a model name, a device), and a number out of range should be reported at
    once, not after a 10 s import."""
    cls = type(config)
    checks = []
    for f, decl in declared_fields(cls):
        value = getattr(config, f.name)
        kind, _, _ = field_kind(cls, f.name)
        try:
            if decl.convert is not None and value is not None:
                value = decl.convert(value)
            elif kind is tuple and isinstance(value, list):
                value = tuple(value)
        except (TypeError, ValueError, AttributeError) as exc:  # a value of the wrong kind for the converter
            raise ConfigError(f'{_label(f, decl)} = {value!r}: {exc}') from None
        object.__setattr__(config, f.name, value)
        _raise_if(_problem(value, f, decl, cls, config), f, decl, value)
        if decl.check is not None and value is not None:
            checks.append((f, decl, value))
    for f, decl, value in checks:
        _raise_if(decl.check(value, config), f, decl, value)


def _raise_if(problem: Optional[str], f: dataclasses.Field, decl: Setting, value: Any) -> None:
    if problem:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + '...'
        raise ConfigError(f'{_label(f, decl)} = {shown} {problem}')


def flags_markdown(cls: type) -> str:
    """A Markdown table of ``cls``'s command-line flags: flag, type, default, valid values, resume rule, help."""
    rows = ['| flag | type | default | valid | on resume | what it does |', '|---|---|---|---|---|---|']
    for f, decl in declared_fields(cls):
        if not decl.cli:
            continue
        kind, nullable, element = field_kind(cls, f.name)
        type_name = getattr(kind, '__name__', str(kind))
        if kind in (tuple, dict):
            type_name = f'{type_name} of {getattr(element, "__name__", "value")}'
        if f.default is MISSING and f.default_factory is MISSING:
            default_text = 'required'
        else:
            default = f.default if f.default is not MISSING else f.default_factory()
            default_text = decl.default_help if (default is None and decl.default_help) else repr(default)
        valid = decl.valid or decl.bounds_text()
        if decl.choices is not None and not callable(decl.choices):
            valid = ', '.join(map(str, decl.choices))
        elif callable(decl.choices):
            valid = 'a registered name'
        if decl.path:
            valid = {'dir_in': 'an existing folder', 'dir_out': 'a folder (created)', 'file_in': 'an existing file',
                     'file_out': 'a file (written)'}[decl.path]
        cell = lambda text: str(text).replace('|', '\\|')  # noqa: E731
        flag = flag_name(f, decl)
        if kind is bool and (f.default is not False or nullable):  # --x and --no-x
            flag = '--[no-]' + flag[2:]
        rows.append(f'| `{flag}` | {type_name} | {cell(default_text)} | {cell(valid)} | '
                    f'{decl.resume or "-"} | {cell(decl.help)} |')
    return '\n'.join(rows)


def one_line_problem(text: str, config: Any = None) -> Optional[str]:
    """A ``check`` for free text that goes into one line of a file (a commit message, a requirement line)."""
    return 'must be one line' if '\n' in text or '\r' in text else None


def registered_model_problem(name: str, config: Any = None) -> Optional[str]:
    """A ``check`` for a model name: None when timm knows it (``import bioconv_timm`` registers ours). Our own
    names are answered from the registry's data (no timm import, ~10 s); any other name asks timm."""
    from .models.registry import MODEL_SPECS
    if name.split('.', 1)[0] in MODEL_SPECS:
        return None
    import timm  # here, not at the top: the settings (and the CLI's flags) load without timm
    return None if timm.is_model(name) else 'is not a registered model; run `bioconv list` for the names'


def device_problem(name: str, config: Any = None) -> Optional[str]:
    """A ``check`` for a torch device setting: None when ``name`` is cpu or an available CUDA device."""
    if name == 'cpu':  # the default: answered without torch, so that a later setting's problem is too
        return None
    import torch  # here, not at the top: the settings (and the CLI's flags) load without torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return 'is not a device; use cpu, cuda or cuda:N'
    if device.type == 'cpu':
        return None
    if device.type != 'cuda':
        return f'is a {device.type} device, which bioconv does not run on; use cpu or cuda'
    if not torch.cuda.is_available():
        return 'names a CUDA device, but torch sees none; use --device cpu (or leave it unset)'
    if device.index is not None and device.index >= torch.cuda.device_count():
        return f'names GPU {device.index}, but torch sees {torch.cuda.device_count()}'
    return None


def settings_from_mapping(cls: type, values: Dict[str, Any], source: str) -> Dict[str, Any]:
    """The keyword arguments of ``cls`` from a mapping read from a config file (keys may use - or _); an unknown
    key raises ConfigError naming it and ``source``."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        name = str(key).replace('-', '_')
        if name not in names:
            raise ConfigError(f'{source}: unknown setting {key!r}; the settings are: {", ".join(sorted(names))}')
        out[name] = value
    return out


def load_settings_file(cls: type, path: Union[str, Path]) -> Dict[str, Any]:
    """The keyword arguments of ``cls`` stored in a YAML or JSON file (a mapping of setting names to values, as
    timm's train.py ``--config``); a missing, unreadable or malformed file raises ConfigError naming it."""
    import yaml  # PyYAML comes with timm; YAML is a superset of JSON, so one parser reads both

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f'cannot read config file {path}: {exc.strerror or exc}') from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f'{path} is not a YAML or JSON file: {first}') from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f'{path} must hold a mapping of setting names to values, not a {type(values).__name__}')
    return settings_from_mapping(cls, values, str(path))
