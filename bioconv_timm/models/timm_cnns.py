"""timm CNNs beyond the paper's ResNets as conv, LC and LC + sleep models, registered with timm on
``import bioconv_timm``.

For each family F of :data:`~.registry.TIMM_FAMILIES` (timm's ``resnet18``; ``convnext_atto`` with its MLPs as 1x1
convs, so that they too become LC; ``mobilenetv3_small_050``, depthwise convs and squeeze-excite):

* ``conv_F``: timm's own network, built as timm builds it (the weight-sharing baseline);
* ``lc_F``: the same network with every ``nn.Conv2d`` made locally connected by
  :func:`bioconv_timm.to_locally_connected` (stem, depthwise, 1x1 and squeeze-excite convs included; ``nn.Linear``
  heads stay as they are), each location's kernel drawn independently with the family's own conv init (as the
  paper's LC layers are);
* ``lc_F_ws1``, ``lc_F_ws10``, ``lc_F_ws100``: ``lc_F`` trained with a sleep phase every 1, 10 or 100 optimizer
  steps (``model.sleep_every``).

Every name is built by timm's ``build_model_with_cfg`` with :func:`build_converted` as its ``model_cls``, so timm's
own pretrained loading (with :func:`~.pretrained.pretrained_filter`) and feature wrappers serve them:
``features_only=True`` takes the stages of the network the weights were loaded into, ``pretrained=True`` included.

Resolution: 64x64 (ImageNet downsampled to 64x64, the size of Tiny ImageNet's images) by default. LC weights grow
with the number of output locations: ``lc_resnet18`` has 148.6M parameters at 64x64 but 1.81B at 224x224, which no
single GPU trains; at 64x64 every family fits a 2-core CPU's memory with AdamW. ``img_size=`` builds another size
(32 for CIFAR, 28 for Fashion-MNIST). Every argument is checked first, and the parameter count is estimated on a
meta-device build before anything is allocated: above the limit (``max_params=``, default 1e9;
:mod:`bioconv_timm.checks`) the build refuses with its estimate.

Shapes: input (B, in_chans, *img_size) -> logits (B, num_classes); LC models take exactly ``img_size``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models import resolve_pretrained_cfg

from ..checks import MAX_CHANNELS, MAX_CLASSES, ModelArgError, check_arg, check_device, check_dtype, check_size
from ..checks import resolve_max_params, short_repr
from ..convert import converted_num_params, meta_copy, size_pair, to_locally_connected
from ..pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from .builder_args import check_feature_args, check_pool
from .pretrained import TagCfg, is_unreadable_weights_error, pretrained_filter, pretrained_source
from .pretrained import unreadable_weights_error
from .registry import HUB_ORG, MODEL_SPECS, PAPER, TIMM_FAMILIES, TIMM_IMG_SIZE, TimmFamily

__all__ = ['build_converted', 'lc_init']

LcInit = Union[str, Callable[[torch.Tensor, nn.Conv2d], None]]


def _trunc_normal(weight: torch.Tensor, conv: nn.Conv2d, std: float) -> None:
    nn.init.trunc_normal_(weight, std=std)  # timm's truncation at +-2 (absolute), as ConvNeXt's _init_weights


def lc_init(family: TimmFamily) -> LcInit:
    """``to_locally_connected``'s ``init`` for ``family``: ``'independent'`` (Kaiming fan_out at every location) or
    the family's truncated normal."""
    if family.lc_init_std is None:
        return 'independent'
    return functools.partial(_trunc_normal, std=family.lc_init_std)


def _feature_size(model: nn.Module, in_chans: int, img_size: Tuple[int, int]) -> Tuple[int, int]:
    """(h, w) of ``forward_features`` at ``img_size``, from a forward pass of a meta-device copy (no compute)."""
    twin = meta_copy(model).eval()
    with torch.no_grad():
        out = twin.forward_features(torch.empty(1, in_chans, *img_size, device='meta'))
    return tuple(out.shape[-2:])  # type: ignore[return-value]


def _cannot_take(variant: str, img_size: Tuple[int, int], in_chans: int, exc: BaseException) -> ModelArgError:
    reason = ' '.join(str(exc).split())
    return ModelArgError(
        f'{variant} cannot take {img_size[0]}x{img_size[1]} inputs with in_chans={in_chans} ({reason}); build it '
        'with a larger img_size= (32 works for every family; `bioconv train --img-size 32` resizes the images)')


def _build_base(variant: str, base: str, kwargs: Dict[str, Any]) -> nn.Module:
    """timm's ``base`` model with ``kwargs``; an argument timm's constructor does not take is a ModelArgError."""
    import timm

    try:
        return timm.create_model(base, **kwargs)
    except TypeError as exc:
        named = [name for name in kwargs if f"'{name}'" in str(exc)]
        if named and 'unexpected keyword argument' in str(exc):
            raise ModelArgError(f'{variant}: unknown argument {named[0]}={short_repr(kwargs[named[0]])}: '
                                f"timm's {base} does not take it ({exc})") from exc
        raise


def _dry_run(variant: str, family: TimmFamily, layer_type: str, base_kwargs: Dict[str, Any],
             img_size: Tuple[int, int], max_params: int) -> Tuple[int, int]:
    """The feature map's (h, w) at ``img_size``, from the same network on the meta device; refuses (ModelSizeError,
    before anything is allocated) a model over ``max_params`` and an input the network cannot take."""
    in_chans = base_kwargs['in_chans']
    dry = _build_base(variant, family.base, {**base_kwargs, 'device': 'meta'})
    try:
        feature_size = _feature_size(dry, in_chans, img_size)
        estimate = (converted_num_params(dry, img_size, in_chans) if layer_type == 'lc'
                    else sum(p.numel() for p in dry.parameters()))
    except RuntimeError as exc:  # e.g. ConvNeXt's 2x2 downsampling of a 1x1 map at 24x24
        raise _cannot_take(variant, img_size, in_chans, exc) from exc
    check_size(variant, estimate, max_params,
               f'img_size={img_size}, in_chans={in_chans}, num_classes={base_kwargs["num_classes"]}',
               fix='a smaller img_size (LC weights grow with the number of locations)' if layer_type == 'lc'
               else 'fewer classes')
    return feature_size


def build_converted(variant: str, family: TimmFamily, layer_type: str, *, img_size: Tuple[int, int],
                    in_chans: int, num_classes: int, sleep_every: Optional[int], max_params: int,
                    **kwargs: Any) -> nn.Module:
    """timm's ``family.base`` network with ``kwargs``, converted to LC at ``img_size`` when ``layer_type == 'lc'``:
    the ``model_cls`` that ``build_model_with_cfg`` calls for the converted families (arguments checked by the
    caller). The size is checked on a meta-device dry run before anything is allocated."""
    base_kwargs = {**family.base_kwargs, **kwargs, 'num_classes': num_classes, 'in_chans': in_chans}
    feature_size = _dry_run(variant, family, layer_type, base_kwargs, img_size, max_params)
    model = _build_base(variant, family.base, base_kwargs)
    traits = dict(getattr(model, '_traits', {}), img_size=img_size, fixed_input_size=layer_type == 'lc')
    if layer_type == 'lc':
        to_locally_connected(model, img_size, in_chans, sleep_every=sleep_every, max_params=max_params,
                             verbose=False, init=lc_init(family))
        # timm adapts only conv stems: first_conv=None leaves the 6-D LC stem to pretrained_filter, which checks
        # and adapts its input channels (and says so)
        traits['first_conv'] = None
    else:
        model.img_size, model.sleep_every = img_size, None
    model._traits = traits  # what timm's builder keeps (it reads fixed_input_size and first_conv from here)
    model.in_chans, model.fixed_input_size, model.feature_size = in_chans, layer_type == 'lc', feature_size
    return model


def _check_timm_args(variant: str, cfg: Any, family: TimmFamily, layer_type: str, sleep_every: Optional[int],
                     kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Check the arguments every family takes (one ModelArgError line naming the bad one); pop and return img_size,
    in_chans, num_classes and sleep_every, normalized. Other keyword arguments go to timm's constructor."""
    out = dict(
        img_size=size_pair(kwargs.pop('img_size', cfg.input_size[-2:]), variant),
        in_chans=check_arg(variant, 'in_chans', kwargs.pop('in_chans', cfg.input_size[0]), 'int', lo=1,
                           hi=MAX_CHANNELS),
        num_classes=check_arg(variant, 'num_classes', kwargs.pop('num_classes', cfg.num_classes), 'int', lo=0,
                              hi=MAX_CLASSES, fix='0 gives no classifier (pooled features)'),
        sleep_every=kwargs.pop('sleep_every', sleep_every))
    if out['sleep_every'] is not None:
        out['sleep_every'] = check_arg(variant, 'sleep_every', out['sleep_every'], 'int', lo=1, hi=10 ** 9,
                                       fix='optimizer steps between sleep phases, or None')
        if layer_type != 'lc':
            raise ModelArgError(f'{variant}: sleep_every={out["sleep_every"]} is invalid for a convolutional model: '
                                'only LC models sleep')
    for name in ('drop_rate', 'drop_path_rate'):
        if name in kwargs:
            check_arg(variant, name, kwargs[name], 'real', lo=0.0, hi=1.0)
    if 'global_pool' in kwargs:
        check_pool(variant, kwargs['global_pool'], out['num_classes'], family.global_pools)
    check_device(variant, kwargs.get('device'))
    check_dtype(variant, kwargs.get('dtype'))
    return out


def _feature_cfg(variant: str, family: TimmFamily, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """timm's feature wrapper options: the family's, then the user's ``feature_cfg`` (checked; popped from
    ``kwargs``); ``out_indices=`` and ``feature_cls=`` keywords win, as in timm's builder."""
    user = check_feature_args(variant, kwargs, family.feature_levels)
    return {'out_indices': tuple(range(family.feature_levels)), **family.feature_cfg, **user}


def _describe_input(model: nn.Module, variant: str, args: Dict[str, Any], layer_type: str, features: bool) -> None:
    """The cfg of the built model (also of a feature wrapper) describes its input; a feature wrapper carries the
    network's sleep period and input size, as the network does."""
    fixed = layer_type == 'lc'
    cfg = dict(model.pretrained_cfg, architecture=variant, input_size=(args['in_chans'], *args['img_size']),
               fixed_input_size=fixed)
    if features:
        model.sleep_every, model.img_size, model.fixed_input_size = args['sleep_every'], args['img_size'], fixed
    else:
        cfg['pool_size'] = model.feature_size
    model.pretrained_cfg = model.default_cfg = cfg


def _create_timm_model(variant: str, pretrained: bool, model_args: Dict[str, Any], **kwargs: Any) -> nn.Module:
    """``variant`` built by timm's builder from the entrypoint's ``model_args`` (``family``, ``layer_type``,
    ``sleep_every``) and the caller's ``kwargs``. Every argument is checked, and the parameter count estimated on a
    meta-device build, before anything is allocated."""
    family, layer_type = TIMM_FAMILIES[model_args['family']], model_args['layer_type']
    kwargs = dict(kwargs)
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    max_params = resolve_max_params(variant, kwargs)  # an explicit limit; never one from a Hub config.json
    args = _check_timm_args(variant, cfg, family, layer_type, model_args.get('sleep_every'), kwargs)
    feature_cfg = _feature_cfg(variant, family, kwargs)
    source = pretrained_source(variant, cfg) if pretrained else None
    model_cls = functools.partial(build_converted, variant, family, layer_type, max_params=max_params)
    try:
        # timm loads the weights into the converted network, then wraps it when features_only=True
        model = build_model_with_cfg(model_cls, variant, pretrained, feature_cfg=feature_cfg,
                                     pretrained_filter_fn=pretrained_filter, **kwargs, **args)
    except Exception as exc:
        if pretrained and is_unreadable_weights_error(exc):
            raise unreadable_weights_error(variant, source, exc) from exc
        raise
    _describe_input(model, variant, args, layer_type, bool(kwargs.get('features_only')))
    return model


def _cfg(name: str) -> Dict[str, Any]:
    spec = MODEL_SPECS[name]
    base_cfg = get_pretrained_cfg(TIMM_FAMILIES[spec.arch].base)
    pool = -(-TIMM_IMG_SIZE // 32)  # all three families reduce the input 32-fold
    return dict(
        hf_hub_id=f'{HUB_ORG}/{name}.in1k', num_classes=1000, input_size=(3, TIMM_IMG_SIZE, TIMM_IMG_SIZE),
        pool_size=(pool, pool), fixed_input_size=spec.layer_type == 'lc', mean=IMAGENET_MEAN, std=IMAGENET_STD,
        crop_pct=1.0, interpolation='bicubic', first_conv=base_cfg.first_conv, classifier=base_cfg.classifier,
        **PAPER)


# '*': .in1k (ImageNet at 64x64) stays the default tag once tags are published
default_cfgs = generate_default_cfgs({
    f'{name}.in1k*': TagCfg(**_cfg(name)) for name, spec in MODEL_SPECS.items() if not spec.is_bioresnet})


# --- entrypoints ----------------------------------------------------------------------------
# Every family's cfg: img_size=64 (any size; LC models are built for exactly that size), num_classes=1000,
# in_chans=3. lc_*: every Conv2d locally connected, per-location independent init; _wsN: sleep_every=N.

@register_model
def conv_resnet18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm resnet18, convolutional, 64x64 cfg."""
    model_args = dict(family='resnet18', layer_type='conv')
    return _create_timm_model('conv_resnet18', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm resnet18 with every conv locally connected (148.6M parameters at 64x64), no weight sharing."""
    model_args = dict(family='resnet18', layer_type='lc')
    return _create_timm_model('lc_resnet18', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_ws1(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm resnet18, sleep (weight sharing) after every optimizer step."""
    model_args = dict(family='resnet18', layer_type='lc', sleep_every=1)
    return _create_timm_model('lc_resnet18_ws1', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_ws10(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm resnet18, sleep every 10 optimizer steps."""
    model_args = dict(family='resnet18', layer_type='lc', sleep_every=10)
    return _create_timm_model('lc_resnet18_ws10', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_ws100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm resnet18, sleep every 100 optimizer steps."""
    model_args = dict(family='resnet18', layer_type='lc', sleep_every=100)
    return _create_timm_model('lc_resnet18_ws100', pretrained, model_args, **kwargs)


@register_model
def conv_convnext_atto(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm convnext_atto (conv_mlp=True), convolutional, 64x64 cfg."""
    model_args = dict(family='convnext_atto', layer_type='conv')
    return _create_timm_model('conv_convnext_atto', pretrained, model_args, **kwargs)


@register_model
def lc_convnext_atto(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm convnext_atto (conv_mlp=True), every conv (depthwise 7x7 and 1x1 MLP) locally connected."""
    model_args = dict(family='convnext_atto', layer_type='lc')
    return _create_timm_model('lc_convnext_atto', pretrained, model_args, **kwargs)


@register_model
def lc_convnext_atto_ws1(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm convnext_atto, sleep after every optimizer step."""
    model_args = dict(family='convnext_atto', layer_type='lc', sleep_every=1)
    return _create_timm_model('lc_convnext_atto_ws1', pretrained, model_args, **kwargs)


@register_model
def lc_convnext_atto_ws10(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm convnext_atto, sleep every 10 optimizer steps."""
    model_args = dict(family='convnext_atto', layer_type='lc', sleep_every=10)
    return _create_timm_model('lc_convnext_atto_ws10', pretrained, model_args, **kwargs)


@register_model
def lc_convnext_atto_ws100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm convnext_atto, sleep every 100 optimizer steps."""
    model_args = dict(family='convnext_atto', layer_type='lc', sleep_every=100)
    return _create_timm_model('lc_convnext_atto_ws100', pretrained, model_args, **kwargs)


@register_model
def conv_mobilenetv3_small_050(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm mobilenetv3_small_050, convolutional, 64x64 cfg."""
    model_args = dict(family='mobilenetv3_small_050', layer_type='conv')
    return _create_timm_model('conv_mobilenetv3_small_050', pretrained, model_args, **kwargs)


@register_model
def lc_mobilenetv3_small_050(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm mobilenetv3_small_050, every conv (depthwise and squeeze-excite included) locally connected."""
    model_args = dict(family='mobilenetv3_small_050', layer_type='lc')
    return _create_timm_model('lc_mobilenetv3_small_050', pretrained, model_args, **kwargs)


@register_model
def lc_mobilenetv3_small_050_ws1(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm mobilenetv3_small_050, sleep after every optimizer step."""
    model_args = dict(family='mobilenetv3_small_050', layer_type='lc', sleep_every=1)
    return _create_timm_model('lc_mobilenetv3_small_050_ws1', pretrained, model_args, **kwargs)


@register_model
def lc_mobilenetv3_small_050_ws10(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm mobilenetv3_small_050, sleep every 10 optimizer steps."""
    model_args = dict(family='mobilenetv3_small_050', layer_type='lc', sleep_every=10)
    return _create_timm_model('lc_mobilenetv3_small_050_ws10', pretrained, model_args, **kwargs)


@register_model
def lc_mobilenetv3_small_050_ws100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm mobilenetv3_small_050, sleep every 100 optimizer steps."""
    model_args = dict(family='mobilenetv3_small_050', layer_type='lc', sleep_every=100)
    return _create_timm_model('lc_mobilenetv3_small_050_ws100', pretrained, model_args, **kwargs)
