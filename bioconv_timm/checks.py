"""Argument checks shared by every constructor: the models, ``LocallyConnected2d`` and ``to_locally_connected``.

Every bad argument raises :class:`ModelArgError` (a :class:`~bioconv_timm.errors.UserValueError`, so also a
``ValueError``) with one line: where (the model name or the function), the argument and its bad value, what it takes,
and how to fix it. :func:`check_arg` is the one helper that checks a type and a range; the constructors call it for
each argument before they build anything.

The size limit (issue 23, mechanism 7). Every builder estimates its parameter count from its arguments before it
allocates anything, and refuses with :class:`ModelSizeError` above the limit: :data:`DEFAULT_MAX_PARAMS` (1e9, about
twice the largest registered model, ``lc_resnet18_half`` at 483M; 4 GiB of fp32 weights, 16 GiB to train with
AdamW). The limit is raised deliberately, in Python, in one of two ways:

* ``timm.create_model(name, max_params=N)`` for one call (also ``to_locally_connected(..., max_params=N)`` and
  ``LocallyConnected2d(..., max_params=N)``);
* ``with bioconv_timm.checks.allow_params(N): ...`` for every build inside the block, including models loaded from a
  Hub or ``local-dir:`` config.

A ``max_params`` inside a Hub ``config.json`` (its ``model_args``, which timm passes to the entrypoint as keyword
arguments) is never obeyed: timm marks those arguments (``pretrained_model_args``), and a ``max_params`` that equals
the file's value is taken as the file's and ignored with a warning. A file cannot raise the limit, so a downloaded
config cannot make ``create_model`` allocate terabytes.

The meta device is checked like any other: a meta build is the dry run of the real one (``to_empty`` allocates what it
describes), so it refuses exactly what the real build would refuse.
"""
from __future__ import annotations

import contextlib
import logging
import math
import numbers
from contextvars import ContextVar
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import torch

from .errors import UserValueError

__all__ = ['ModelArgError', 'ModelSizeError', 'PretrainedWeightsError', 'DEFAULT_MAX_PARAMS', 'MAX_SIDE', 'is_int',
           'allow_params', 'param_limit', 'resolve_max_params', 'check_arg', 'check_size', 'arg_error',
           'short_repr']

_logger = logging.getLogger(__name__)

DEFAULT_MAX_PARAMS = 1_000_000_000
# Largest image side (and stride, padding, kernel) any constructor takes: 4.3 gigapixels; beyond it shape products
# near int64 and nothing a model here can run.
MAX_SIDE = 65_536
MAX_CHANNELS = 65_536
MAX_CLASSES = 10_000_000


class ModelArgError(UserValueError):
    """A bad argument to a model, layer or conversion; the message names it, its value and the fix."""


class ModelSizeError(ModelArgError):
    """The arguments describe a model over the parameter limit; the message gives the estimate and how to raise it."""


class PretrainedWeightsError(UserValueError, RuntimeError):
    """Pretrained weights that do not fit the model as declared (a RuntimeError too, as timm's own refusal)."""


_LIMIT: ContextVar[Optional[int]] = ContextVar('bioconv_max_params', default=None)


def param_limit() -> int:
    """The parameter limit of builds here: the innermost :func:`allow_params`, else :data:`DEFAULT_MAX_PARAMS`."""
    limit = _LIMIT.get()
    return DEFAULT_MAX_PARAMS if limit is None else limit


@contextlib.contextmanager
def allow_params(max_params: int) -> Iterator[int]:
    """Builds inside the block may have up to ``max_params`` parameters (higher or lower than the default).

    The deliberate way to build a large model from a Hub or ``local-dir:`` config, whose own ``max_params`` is
    ignored::

        with bioconv_timm.checks.allow_params(2_000_000_000):
            model = timm.create_model('lc_resnet18', img_size=224)
    """
    limit = check_arg('allow_params', 'max_params', max_params, 'count')
    token = _LIMIT.set(limit)
    try:
        yield limit
    finally:
        _LIMIT.reset(token)


def resolve_max_params(where: str, kwargs: Dict[str, Any]) -> int:
    """Pop ``max_params`` from a builder's ``kwargs`` and return the limit of this build.

    An explicit ``max_params=`` wins; one that timm copied from a config.json's ``model_args`` (the same value as in
    ``kwargs['pretrained_model_args']``) is ignored with a warning; else :func:`param_limit`.
    """
    value = kwargs.pop('max_params', None)
    from_file = kwargs.get('pretrained_model_args') or {}
    if value is not None and 'max_params' in from_file and _same(value, from_file['max_params']):
        _logger.warning(
            f'{where}: ignoring max_params={short_repr(value)} from the model\'s config.json (model_args): a '
            'downloaded config may not raise the size limit. Raise it in Python with '
            'bioconv_timm.checks.allow_params(N) or an explicit max_params= that differs from the file\'s.')
        value = None
    if value is None:
        return param_limit()
    return check_arg(where, 'max_params', value, 'count')


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an odd object whose == raises: not the file's value
        return False


def short_repr(value: Any, most: int = 60) -> str:
    """``repr(value)`` on one line, cut to about ``most`` characters."""
    try:
        text = repr(value)
    except Exception:  # a repr that raises still leaves a message
        text = f'<{type(value).__name__}>'
    text = ' '.join(text.split())
    return text if len(text) <= most else text[:most - 3] + '...'


def arg_error(where: str, name: str, value: Any, expected: str, fix: str = '') -> ModelArgError:
    """The one-line error for ``name=value``: ``'<where>: <name>=<value> is invalid: it takes <expected>; <fix>'``."""
    message = f'{where}: {name}={short_repr(value)} is invalid: it takes {expected}'
    return ModelArgError(message + (f'; {fix}' if fix else ''))


def is_int(value: Any) -> bool:
    """An int (numpy ints included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_range(lo: Optional[int], hi: Optional[int]) -> str:
    if lo == 1:
        return 'a positive int' + (f' (at most {hi:,})' if hi is not None else '')
    if lo is not None and hi is not None:
        return f'an int from {lo:,} to {hi:,}'
    if lo is not None:
        return f'an int >= {lo:,}'
    return 'an int' if hi is None else f'an int <= {hi:,}'


def check_arg(where: str, name: str, value: Any, kind: str, *, lo: Optional[float] = None,
              hi: Optional[float] = None, choices: Sequence[Any] = (), length: Tuple[int, int] = (1, 2 ** 31),
              fix: str = '') -> Any:
    """Check one argument's type and range and return it normalized; raise :class:`ModelArgError` naming it.

    Kinds:
        ``'int'``: an int (not a bool) in [lo, hi].
        ``'count'``: a positive int (a float with an integral value is taken: ``max_params=2e9``), at most ``hi``.
        ``'real'``: a finite int or float in [lo, hi] (returned as float).
        ``'bool'``: True or False.
        ``'choice'``: one of ``choices``.
        ``'pair'``: an int or an (H, W) pair of ints, each in [lo, hi]; returned as a tuple of 2.
        ``'ints'``: a non-empty list or tuple of ints in [lo, hi] with ``length[0] <= len <= length[1]``; a tuple.
    """
    if kind == 'int':
        if is_int(value) and (lo is None or value >= lo) and (hi is None or value <= hi):
            return int(value)
        raise arg_error(where, name, value, _int_range(lo, hi), fix)
    if kind == 'count':
        top = 2 ** 62 if hi is None else hi
        if _is_real(value) and math.isfinite(value) and value == int(value) and 1 <= value <= top:
            return int(value)
        raise arg_error(where, name, value, f'a positive int (at most {top:,})', fix)
    if kind == 'real':
        if _is_real(value) and math.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi):
            return float(value)
        bounds = f'from {lo} to {hi}' if lo is not None and hi is not None else ''
        raise arg_error(where, name, value, f'a finite number {bounds}'.rstrip(), fix)
    if kind == 'bool':
        if isinstance(value, bool):
            return value
        raise arg_error(where, name, value, 'True or False', fix)
    if kind == 'choice':
        if isinstance(value, (str, type(None), numbers.Number)) and value in choices:
            return value
        raise arg_error(where, name, value, 'one of ' + ', '.join(repr(c) for c in choices), fix)
    if kind == 'pair':
        if is_int(value):
            pair: Tuple[Any, ...] = (value, value)
        elif isinstance(value, (tuple, list, torch.Size)) and len(value) == 2:
            pair = tuple(value)
        else:
            pair = ()
        if pair and all(is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi) for v in pair):
            return int(pair[0]), int(pair[1])
        raise arg_error(where, name, value, f'{_int_range(lo, hi)}, or an (H, W) pair of them', fix)
    if kind == 'ints':
        n_lo, n_hi = length
        if isinstance(value, (tuple, list)) and n_lo <= len(value) <= n_hi and all(
                is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi) for v in value):
            return tuple(int(v) for v in value)
        count = f'{n_lo}' if n_lo == n_hi else f'{n_lo} to {n_hi}'
        raise arg_error(where, name, value, f'a list or tuple of {count} values, each {_int_range(lo, hi)}', fix)
    raise AssertionError(f'check_arg: unknown kind {kind!r}')  # a bug in the caller, not user input


def check_device(where: str, value: Any) -> Optional[torch.device]:
    """``device=``: None, a torch.device or a string torch understands, of a kind this machine has."""
    if value is None:
        return None
    try:
        device = torch.device(value) if isinstance(value, (str, torch.device)) else None
    except (RuntimeError, ValueError):
        device = None
    if device is None:
        raise arg_error(where, 'device', value, "a torch.device or a device string such as 'cpu', 'cuda' or 'meta'")
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise arg_error(where, 'device', value, 'a device this machine has', "there is no CUDA device here: use "
                        "device='cpu' (or 'meta' to build without memory)")
    return device


def check_dtype(where: str, value: Any) -> Optional[torch.dtype]:
    """``dtype=``: None or a floating-point torch.dtype (parameters are trained)."""
    if value is None or (isinstance(value, torch.dtype) and value.is_floating_point):
        return value
    raise arg_error(where, 'dtype', value, 'a floating-point torch.dtype such as torch.float32 or torch.bfloat16')


def format_params(n: int) -> str:
    """``'668,672,723,114 parameters (668.67G, 2,491.0 GiB in fp32)'``: a parameter count as a reader wants it."""
    for unit, scale in (('G', 1e9), ('M', 1e6)):
        if n >= scale:
            short = f'{n / scale:,.2f}{unit}, '
            break
    else:
        short = ''
    return f'{n:,} parameters ({short}{n * 4 / 2 ** 30:,.1f} GiB in fp32)'


def check_size(where: str, estimate: int, limit: int, built_from: str = '', fix: str = '') -> None:
    """Raise :class:`ModelSizeError` when ``estimate`` parameters exceed ``limit``; called before allocating."""
    if estimate <= limit:
        return
    what = f' with {built_from}' if built_from else ''
    raise ModelSizeError(
        f'{where}{what} would have {format_params(estimate)}, more than max_params={limit:,}; '
        f'{fix + "; " if fix else ""}to build it anyway pass max_params={estimate} or build inside '
        f'`with bioconv_timm.checks.allow_params({estimate}):` (a config.json cannot raise the limit)')
