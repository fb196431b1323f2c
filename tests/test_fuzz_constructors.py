"""Bad constructor arguments are fuzzed, not listed (issue 23, mechanism 3, the constructor part).

Each example starts from a call that is valid by the documented contract and replaces up to two of its arguments by
values the contract excludes: wrong types, malformed pairs and sequences, out-of-range numbers. Hypothesis draws
both, for ``timm.create_model(name, **kwargs)`` (one name per registered family), ``LocallyConnected2d(...)`` and
``to_locally_connected(...)``. The properties:

* a call with a bad value is refused with exactly :class:`bioconv_timm.checks.ModelArgError`, in one line that names
  one of the call's arguments;
* a call of valid values builds within the parameter limit, or is refused the same way (a model too large, an input
  too small for the network);
* any other exception is an escape, and fails the test.

Everything is built on the meta device, so no example allocates memory (tests/test_model_args.py checks on the CPU
that refusals come before allocation). ``pytest -s`` prints how many inputs were drawn and how each ended.
"""
from __future__ import annotations

import collections
import math
import numbers
from typing import Any, Callable, Dict, Tuple

import timm
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bioconv_timm  # noqa: F401  (registers the models)
from bioconv_timm import LocallyConnected2d, to_locally_connected
from bioconv_timm.checks import DEFAULT_MAX_PARAMS, MAX_CHANNELS, MAX_CLASSES, MAX_SIDE, ModelArgError, ModelSizeError
from bioconv_timm.models import FEATURE_CLASSES, GLOBAL_POOLS, MAX_BLOCKS, MODEL_SPECS, TIMM_FAMILIES

# one registered name per family (its LC model: the one with the most to check)
FAMILY_NAMES = sorted(name for name, spec in MODEL_SPECS.items() if name == f'lc_{spec.arch}')
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.filter_too_much])

# --- the contract: which values are valid (written from the docs, not from the checks) -----------------------------


def is_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def is_pair(v: Any, lo: int, hi: int) -> bool:
    return is_int(v, lo, hi) or (isinstance(v, (tuple, list)) and len(v) == 2 and all(is_int(x, lo, hi) for x in v))


def is_real(v: Any, lo: float, hi: float) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def is_ints(v: Any, lo: int, hi: int, most: int) -> bool:
    return isinstance(v, (tuple, list)) and 1 <= len(v) <= most and all(is_int(x, lo, hi) for x in v)


def is_count(v: Any) -> bool:
    return is_real(v, 1, 2 ** 62) and v == int(v)


def is_indices(v: Any, n: int) -> bool:
    if isinstance(v, (tuple, list)):
        return is_ints(v, -n, n - 1, n) and len({i % n for i in v}) == len(v)
    return is_int(v, 1, n)


def is_feature_cls(v: Any) -> bool:
    return (isinstance(v, str) and v.lower() in FEATURE_CLASSES) or (isinstance(v, type) and issubclass(v, nn.Module))


def is_feature_cfg(v: Any, n: int) -> bool:
    return isinstance(v, dict) and is_feature_cls(v.get('feature_cls', 'list')) and (
        'out_indices' not in v or is_indices(v['out_indices'], n))


# --- values -----------------------------------------------------------------------------------------------------

junk = st.one_of(
    st.booleans(), st.none(), st.text(max_size=6), st.sampled_from(['32', 'same', '', 'cpu', '1e9', 'avg', 'lc', 'fx']),
    st.integers(-10 ** 6, 10 ** 6), st.integers(-10 ** 30, 10 ** 30), st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-9, 300), max_size=10), st.tuples(st.integers(-9, 9), st.text(max_size=2)),
    st.tuples(st.integers(-3, 70000), st.integers(-3, 70000)), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                 max_size=2),
    st.binary(max_size=3), st.complex_numbers(max_magnitude=10), st.just(object()), st.just(torch.tensor(3)),
    st.sampled_from([torch.float32, torch.int64, torch.bool, nn.ReLU, torch.device('meta')]),
)


def bad(valid: Callable[[Any], bool], *more: st.SearchStrategy) -> st.SearchStrategy:
    """Values the contract excludes: junk (and ``more``) that ``valid`` rejects. None is no value (timm drops it)."""
    return st.one_of(junk, *more).filter(lambda v: v is not None and not valid(v))


def arg(good: st.SearchStrategy, valid: Callable[[Any], bool], *more: st.SearchStrategy) -> Tuple:
    return good, bad(valid, *more)


def devices_ok(v: Any) -> bool:
    """A device this machine has (the good values draw only 'meta': a CPU build would allocate)."""
    return isinstance(v, (str, torch.device)) and v in ('meta', 'cpu', torch.device('meta'), torch.device('cpu'))


DTYPES = st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16])
SIZE_PAIR = st.one_of(st.integers(8, 320), st.tuples(st.integers(8, 320), st.integers(8, 320)),
                      st.sampled_from([1024, 4096, (64, 8192)]))  # too large for the LC models


def create_args(name: str) -> Dict[str, Tuple[st.SearchStrategy, st.SearchStrategy]]:
    """(good, bad) strategies for each keyword argument ``timm.create_model(name, ...)`` documents."""
    spec = MODEL_SPECS[name]
    n = len(MODEL_SPECS[name].model_args()['layers']) + 1 if spec.is_bioresnet else TIMM_FAMILIES[spec.arch].feature_levels
    levels = st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True)  # distinct levels, some negative
    indices = st.one_of(st.integers(1, n), levels.flatmap(
        lambda ls: st.tuples(*[st.sampled_from([i, i - n]) for i in ls]).map(list)))
    indices_ok = lambda v: is_indices(v, n)  # noqa: E731
    feature_cls = st.sampled_from([*FEATURE_CLASSES, 'HOOK', 'Fx'])
    pools = GLOBAL_POOLS if spec.is_bioresnet else TIMM_FAMILIES[spec.arch].global_pools
    args = {
        'img_size': arg(SIZE_PAIR, lambda v: is_pair(v, 1, MAX_SIDE)),
        'in_chans': arg(st.one_of(st.integers(1, 6), st.just(50_000)), lambda v: is_int(v, 1, MAX_CHANNELS)),
        'num_classes': arg(st.integers(0, 3000), lambda v: is_int(v, 0, MAX_CLASSES)),
        'drop_rate': arg(st.floats(0, 1), lambda v: is_real(v, 0, 1)),
        'global_pool': arg(st.sampled_from(pools), lambda v: isinstance(v, str) and v in pools,
                           st.sampled_from(['mean', 'AVG', 'fast', 'catavgmax'])),
        'features_only': arg(st.booleans(), lambda v: isinstance(v, bool)),
        'out_indices': arg(indices, indices_ok, st.lists(st.integers(-9, 9), max_size=6)),
        'feature_cls': arg(feature_cls, is_feature_cls, st.sampled_from(['bogus', 'graph'])),
        'feature_cfg': arg(st.fixed_dictionaries({}, optional={'feature_cls': feature_cls, 'out_indices': indices}),
                           lambda v: is_feature_cfg(v, n),
                           st.fixed_dictionaries({'out_indices': st.integers(-9, 9)}),
                           st.fixed_dictionaries({'feature_cls': st.text(max_size=4)})),
        'max_params': arg(st.integers(10 ** 6, 10 ** 10), is_count, st.floats(-1e3, 1e12)),
        'sleep_every': arg(st.integers(1, 1000), lambda v: is_int(v, 1, 10 ** 9)),
        'device': arg(st.just('meta'), devices_ok, st.sampled_from(['nosuch', 'cpu:x', 'gpu', '', 'cuda:x'])),
        'dtype': arg(DTYPES, lambda v: isinstance(v, torch.dtype) and v.is_floating_point),
    }
    if spec.is_bioresnet:
        args.update({
            'layers': arg(st.lists(st.integers(1, 3), min_size=n - 1, max_size=n - 1),
                          lambda v: is_ints(v, 1, MAX_BLOCKS, 8), st.tuples(st.integers(257, 10 ** 6))),
            'channels': arg(st.lists(st.integers(1, 48), min_size=n - 1, max_size=n - 1),
                            lambda v: is_ints(v, 1, MAX_CHANNELS, 8)),
            'stem': arg(st.sampled_from(['cifar', 'imagenet']), lambda v: v in ('cifar', 'imagenet')),
            'stem_stride': arg(st.sampled_from([1, 2]), lambda v: is_int(v, 1, 2)),
            'layer_type': arg(st.sampled_from(['conv', 'lc']), lambda v: v in ('conv', 'lc')),
            'stem_type': arg(st.sampled_from(['conv', 'lc']), lambda v: v in ('conv', 'lc')),
        })
    else:
        args['drop_path_rate'] = arg(st.floats(0, 1), lambda v: is_real(v, 0, 1))
    return args


CREATE_ARGS = {name: create_args(name) for name in FAMILY_NAMES}


@st.composite
def calls(draw: Callable, table: Dict[str, Tuple[st.SearchStrategy, st.SearchStrategy]],
          most_good: int = 4) -> Tuple[Dict[str, Any], frozenset]:
    """kwargs of up to ``most_good`` valid arguments and 0-2 bad ones; and the names of the bad ones."""
    names = sorted(table)
    bad_names = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
    good_names = draw(st.lists(st.sampled_from([n for n in names if n not in bad_names]), max_size=most_good,
                               unique=True))
    kwargs = {n: draw(table[n][0]) for n in good_names}
    kwargs.update({n: draw(table[n][1]) for n in bad_names})
    return kwargs, frozenset(bad_names)


# --- running an example -----------------------------------------------------------------------------------------

class Outcomes(collections.Counter):
    def line(self, what: str) -> str:
        drawn = self['built'] + self['refused'] + self['escaped']
        return (f'{what}: {drawn} inputs drawn ({self["with a bad value"]} with a bad value), {self["built"]} built, '
                f'{self["refused"]} refused with ModelArgError ({self["too large"]} of them as too large), '
                f'{self["escaped"]} escaped')


REFUSED = object()


def run(call: Callable[[], Any], kwargs: Dict[str, Any], bad_names: frozenset, outcomes: Outcomes,
        also_named: Tuple[str, ...] = ()) -> Any:
    """``call()``'s result, or REFUSED once the refusal is checked: one line naming an argument of the call (or one of
    ``also_named``, the size arguments a too-large or too-small refusal names). A call with a bad value must be
    refused; any exception but ModelArgError is an escape."""
    outcomes['with a bad value'] += bool(bad_names)
    try:
        result = call()
    except ModelArgError as exc:
        message = str(exc)
        assert '\n' not in message, message
        assert any(name in message for name in (*kwargs, *also_named)), (kwargs, message)
        if isinstance(exc, ModelSizeError):
            outcomes['too large'] += 1
            assert 'parameters' in message and 'max_params=' in message and 'allow_params' in message, message
        outcomes['refused'] += 1
        return REFUSED
    except Exception:
        outcomes['escaped'] += 1
        raise
    outcomes['built'] += 1
    assert not bad_names, f'accepted bad value(s) {sorted(bad_names)}: {kwargs}'
    return result


def limit(kwargs: Dict[str, Any]) -> int:
    return int(kwargs.get('max_params') or DEFAULT_MAX_PARAMS)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the properties ---------------------------------------------------------------------------------------------

def test_create_model_fuzz():
    outcomes = Outcomes()

    @settings(max_examples=150, **SETTINGS)
    @given(st.sampled_from(FAMILY_NAMES).flatmap(lambda name: st.tuples(st.just(name), calls(CREATE_ARGS[name]))))
    def prop(example: tuple) -> None:
        name, (kwargs, bad_names) = example
        with torch.device('meta'):
            model = run(lambda: timm.create_model(name, **kwargs), kwargs, bad_names, outcomes,
                        also_named=('img_size', 'in_chans'))
        if model is not REFUSED:
            assert all(p.device.type == 'meta' for p in model.parameters())
            assert n_params(model) <= limit(kwargs)

    prop()
    print(outcomes.line('timm.create_model'))
    assert outcomes['escaped'] == 0 and outcomes['built'] > 10 and outcomes['refused'] > 10


LAYER_ARGS = {
    'in_channels': arg(st.sampled_from([2, 4, 6]), lambda v: is_int(v, 1, MAX_CHANNELS)),
    'out_channels': arg(st.sampled_from([2, 4, 6]), lambda v: is_int(v, 1, MAX_CHANNELS)),
    'kernel_size': arg(st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))),
                       lambda v: is_pair(v, 1, MAX_SIDE)),
    'input_size': arg(st.one_of(st.integers(1, 12), st.tuples(st.integers(1, 12), st.integers(1, 12)),
                                st.sampled_from([4096, (2048, 4096)])), lambda v: is_pair(v, 1, MAX_SIDE)),
    'stride': arg(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))),
                  lambda v: is_pair(v, 1, MAX_SIDE)),
    'padding': arg(st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3))),
                   lambda v: is_pair(v, 0, MAX_SIDE), st.sampled_from(['same', 'valid'])),
    'dilation': arg(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))),
                    lambda v: is_pair(v, 1, MAX_SIDE)),
    'groups': arg(st.sampled_from([1, 2]), lambda v: is_int(v, 1, 2 ** 31)),
    'bias': arg(st.booleans(), lambda v: isinstance(v, bool)),
    'device': arg(st.just('meta'), devices_ok, st.sampled_from(['nosuch', 'cpu:x', 'gpu', ''])),
    'dtype': arg(DTYPES, lambda v: isinstance(v, torch.dtype) and v.is_floating_point),
    'max_params': arg(st.integers(10 ** 3, 10 ** 10), is_count, st.floats(-1e3, 1e12)),
}
VALID_LAYER = dict(in_channels=4, out_channels=4, kernel_size=3, input_size=8)


def test_locally_connected2d_fuzz():
    outcomes = Outcomes()

    @settings(max_examples=200, **SETTINGS)
    @given(calls(LAYER_ARGS, most_good=6))
    def prop(example: tuple) -> None:
        kwargs, bad_names = example
        kwargs = {**VALID_LAYER, **kwargs}
        with torch.device('meta'):
            layer = run(lambda: LocallyConnected2d(**kwargs), kwargs, bad_names, outcomes)
        if layer is not REFUSED:
            assert layer.weight.device.type == 'meta' and n_params(layer) <= limit(kwargs)
            assert min(layer.output_size) >= 1

    prop()
    print(outcomes.line('LocallyConnected2d'))
    assert outcomes['escaped'] == 0 and outcomes['built'] > 10 and outcomes['refused'] > 10


CONVERT_ARGS = {
    'img_size': arg(st.one_of(st.integers(3, 40), st.tuples(st.integers(3, 40), st.integers(3, 40))),
                    lambda v: is_pair(v, 1, MAX_SIDE)),
    'in_chans': arg(st.just(3), lambda v: is_int(v, 1, MAX_CHANNELS)),
    'keep_conv': arg(st.sampled_from(['0', '2', ('0',), ['2'], ()]),
                     lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(p, str)
                                                                                            for p in v))),
    'sleep_every': arg(st.integers(1, 100), lambda v: is_int(v, 1, 10 ** 9)),
    'max_params': arg(st.integers(10 ** 3, 10 ** 9), is_count, st.floats(-1e3, 1e12)),
    'verbose': arg(st.just(False), lambda v: isinstance(v, bool)),
    'skip_unsupported': arg(st.booleans(), lambda v: isinstance(v, bool)),
    'init': arg(st.sampled_from(['copy', 'independent']), lambda v: v in ('copy', 'independent') or callable(v),
                st.sampled_from(['kaiming', 'COPY'])),
}


def test_to_locally_connected_fuzz():
    outcomes = Outcomes()

    @settings(max_examples=120, **SETTINGS)
    @given(calls(CONVERT_ARGS, most_good=5))
    def prop(example: tuple) -> None:
        kwargs, bad_names = example
        kwargs = {'img_size': 16, 'verbose': False, **kwargs}
        with torch.device('meta'):
            model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
            converted = run(lambda: to_locally_connected(model, **kwargs), kwargs, bad_names, outcomes)
        if converted is REFUSED:  # a refusal leaves the model as it was
            assert all(isinstance(model[i], nn.Conv2d) for i in (0, 2))
        else:
            assert n_params(converted) <= limit(kwargs)

    prop()
    print(outcomes.line('to_locally_connected'))
    assert outcomes['escaped'] == 0 and outcomes['built'] > 10 and outcomes['refused'] > 10
