"""Checks of the arguments timm's builder takes for every bioconv model, both families alike: the pool type, the
feature-extraction options and unknown keywords. Each bad value raises one
:class:`~bioconv_timm.checks.ModelArgError` line naming it (the generic checks are in :mod:`bioconv_timm.checks`)."""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import torch.nn as nn

from ..checks import ModelArgError, arg_error, check_arg, is_int, short_repr
from .registry import GLOBAL_POOLS

__all__ = ['BUILDER_KWARGS', 'FEATURE_KWARGS', 'FEATURE_CLASSES', 'check_pool', 'check_feature_args',
           'check_known_kwargs']

# Keyword arguments timm.create_model passes to every entrypoint, and build_model_with_cfg's own (not the model's).
BUILDER_KWARGS = frozenset({'pretrained_cfg', 'pretrained_cfg_overlay', 'pretrained_model_args', 'cache_dir',
                            'pretrained_strict'})
FEATURE_KWARGS = frozenset({'features_only', 'out_indices', 'feature_cls', 'feature_cfg'})
FEATURE_CLASSES = ('list', 'dict', 'hook', 'fx', 'getter')


def check_pool(where: str, global_pool: Any, num_classes: Any, choices: Sequence[str] = GLOBAL_POOLS) -> str:
    """``global_pool``: one of ``choices``; '' (no pooling: the classifier would see a feature map) only with
    ``num_classes=0``. ``num_classes`` is assumed checked."""
    global_pool = check_arg(where, 'global_pool', global_pool, 'choice', choices=choices)
    if global_pool == '' and num_classes:
        raise ModelArgError(f"{where}: global_pool='' (no pooling) is invalid with num_classes={num_classes}: the "
                            'classifier needs pooled features; pass num_classes=0 for feature maps, or '
                            "global_pool='avg'")
    return global_pool


def _check_out_indices(where: str, name: str, out_indices: Any, n_levels: int) -> None:
    levels = f'{n_levels} feature levels (indices 0..{n_levels - 1} or -{n_levels}..-1)'
    if is_int(out_indices):
        check_arg(where, name, out_indices, 'int', lo=1, hi=n_levels, fix=f'an int k takes the last k of the {levels}')
        return
    indices = check_arg(where, name, out_indices, 'ints', lo=-n_levels, hi=n_levels - 1, length=(1, n_levels),
                        fix=f'this model has {levels}')
    if len({i % n_levels for i in indices}) != len(indices):
        raise arg_error(where, name, out_indices, 'distinct feature levels', f'this model has {levels}')


def check_feature_args(where: str, kwargs: Dict[str, Any], n_levels: int) -> Dict[str, Any]:
    """Check ``features_only``, ``out_indices``, ``feature_cls`` and ``feature_cfg`` (timm's feature-extraction
    arguments) against a model with ``n_levels`` feature levels; pop ``feature_cfg`` and return it (a new dict).

    ``out_indices``: an int k (the last k levels) or distinct indices in -n_levels..n_levels-1;
    ``feature_cls``: one of timm's names ('list', 'dict', 'hook', 'fx', 'getter') or a module class.
    """
    features_only = check_arg(where, 'features_only', kwargs.get('features_only', False), 'bool')
    feature_cfg = kwargs.pop('feature_cfg', None)
    if feature_cfg is None:
        feature_cfg = {}
    if not isinstance(feature_cfg, dict):
        raise arg_error(where, 'feature_cfg', feature_cfg, "a dict of timm's feature options, e.g. "
                        "feature_cfg={'feature_cls': 'fx'}")
    feature_cfg = dict(feature_cfg)
    for name in ('out_indices', 'feature_cls'):
        if name in kwargs and not features_only:
            raise arg_error(where, name, kwargs[name], 'a value only with features_only=True',
                            'add features_only=True, or drop it')

    def option(key: str) -> Tuple[str, Any]:  # (its name in the message, its value): a keyword wins over feature_cfg
        return (key, kwargs[key]) if key in kwargs else (f"feature_cfg['{key}']", feature_cfg.get(key))

    name, out_indices = option('out_indices')
    if out_indices is not None:
        _check_out_indices(where, name, out_indices, n_levels)
    name, feature_cls = option('feature_cls')
    if feature_cls is not None and not (isinstance(feature_cls, type) and issubclass(feature_cls, nn.Module)):
        if not (isinstance(feature_cls, str) and feature_cls.lower() in FEATURE_CLASSES):
            raise arg_error(where, name, feature_cls, 'one of ' + ', '.join(map(repr, FEATURE_CLASSES)) + ' or a '
                            'feature wrapper class')
    return feature_cfg


def check_known_kwargs(where: str, kwargs: Dict[str, Any], accepted: Sequence[str]) -> None:
    """ModelArgError naming the first keyword argument not in ``accepted`` (instead of a TypeError from deep inside
    the builder)."""
    for name in kwargs:
        if name not in accepted:
            raise ModelArgError(f'{where}: unknown argument {name}={short_repr(kwargs[name])}; it takes '
                                + ', '.join(sorted(accepted)))
