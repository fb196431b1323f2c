"""timm CNNs beyond the paper's ResNets as conv, LC and LC + sleep models, registered with timm on ``import bioconv_timm``.

For each family F of :data:`TIMM_FAMILIES` (timm's ``resnet18``; ``convnext_atto`` with its MLPs as 1x1 convs, so
that they too become LC; ``mobilenetv3_small_050``, depthwise convs and squeeze-excite):

* ``conv_F``: timm's own network, built as timm builds it (the weight-sharing baseline);
* ``lc_F``: the same network with every ``nn.Conv2d`` made locally connected by :func:`bioconv_timm.to_locally_connected`
  (stem, depthwise, 1x1 and squeeze-excite convs included; ``nn.Linear`` heads stay as they are), each location's
  kernel drawn independently with the family's own conv init (as the paper's LC layers are);
* ``lc_F_ws1``, ``lc_F_ws10``, ``lc_F_ws100``: ``lc_F`` trained with a sleep phase every 1, 10 or 100 optimizer
  steps (``model.sleep_every``).

Resolution: 64x64 (ImageNet downsampled to 64x64, the size of Tiny ImageNet's images) by default. LC weights grow
with the number of output locations: ``lc_resnet18`` has 148.6M parameters at 64x64 but 1.81B at 224x224, which no
single GPU trains; at 64x64 every family fits a 2-core CPU's memory with AdamW. ``img_size=`` builds another size
(32 for CIFAR, 28 for Fashion-MNIST). Every argument is checked first, and the parameter count is estimated on a
meta-device build before anything is allocated: above the limit (``max_params=``, default 1e9;
:mod:`bioconv_timm.checks`) the build refuses with its estimate.

Shapes: input (B, in_chans, *img_size) -> logits (B, num_classes); LC models take exactly ``img_size``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Tuple, Union

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, load_pretrained, register_model, resolve_pretrained_cfg

from .checks import MAX_CHANNELS, MAX_CLASSES, ModelArgError, check_arg, check_device, check_dtype, check_size
from .checks import resolve_max_params, short_repr
from .convert import converted_num_params, meta_copy, size_pair, to_locally_connected
from .models import (GLOBAL_POOLS, HUB_ORG, IMAGENET_MEAN, IMAGENET_STD, MODEL_SPECS, PAPER, TIMM_ARCHS, _TagCfg,
                     check_feature_args, check_pool, is_unreadable_weights_error, pretrained_filter,
                     pretrained_source, unreadable_weights_error)

__all__ = ['TIMM_FAMILIES', 'TimmFamily', 'DEFAULT_IMG_SIZE']

DEFAULT_IMG_SIZE = 64


def _trunc_normal_002(weight: torch.Tensor, conv: nn.Conv2d) -> None:
    # ConvNeXt draws every conv (and linear) weight from a normal truncated to +-2, std 0.02 (timm's _init_weights)
    nn.init.trunc_normal_(weight, std=0.02)


@dataclass(frozen=True)
class TimmFamily:
    """How a registered timm family is built: timm's model name, its extra arguments, and the LC init
    (``to_locally_connected``'s ``init``: ``'independent'`` draws Kaiming fan_out per location, which is what timm's
    ResNets and MobileNets draw for their convs; a callable draws the family's own init instead)."""
    base: str
    feature_levels: int  # len(feature_info): the levels features_only=True / out_indices choose from
    base_kwargs: Dict[str, Any] = field(default_factory=dict)
    lc_init: Union[str, Callable[[torch.Tensor, nn.Conv2d], None]] = 'independent'
    description: str = ''
    global_pools: Tuple[str, ...] = GLOBAL_POOLS  # the pool types timm's head of this family takes
    # feature_cfg that timm's builder needs with an explicit feature_cls (mobilenetv3's stages are inside `blocks`)
    feature_cls_cfg: Dict[str, Any] = field(default_factory=dict)


TIMM_FAMILIES: Dict[str, TimmFamily] = {
    'resnet18': TimmFamily(
        'resnet18', 5, description="timm's ResNet18: 7x7/2 stem + max-pool, 2-2-2-2 BasicBlocks, 64/128/256/512 channels"),
    'convnext_atto': TimmFamily(
        'convnext_atto', 4, dict(conv_mlp=True), _trunc_normal_002,
        description="timm's ConvNeXt-Atto: 4x4/4 patchify stem, 2-2-6-2 blocks of depthwise 7x7 + 1x1 MLP (as convs: "
                    'conv_mlp=True), 40/80/160/320 channels',
        global_pools=tuple(p for p in GLOBAL_POOLS if p != 'catavgmax')),  # its norm head keeps the pooled width
    'mobilenetv3_small_050': TimmFamily(
        'mobilenetv3_small_050', 5,
        description="timm's MobileNetV3-Small 0.5x: inverted residuals with depthwise 3x3/5x5 convs and "
                    'squeeze-excite, 1x1 conv head',
        feature_cls_cfg=dict(flatten_sequential=True)),
}
assert tuple(TIMM_FAMILIES) == TIMM_ARCHS  # models.MODEL_SPECS names these archs; every one is built here


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
        if named == ['feature_cfg'] and 'multiple values' in str(exc):
            raise ModelArgError(f"{variant}: feature_cfg={short_repr(kwargs['feature_cfg'])} is invalid: timm's "
                                f'{base} sets its own feature_cfg; it takes out_indices= and feature_cls= (also '
                                'inside feature_cfg) and no other feature options') from exc
        raise


def _check_timm_args(variant: str, cfg: Any, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Check the arguments every family takes (one ModelArgError line naming the bad one); pop and return
    img_size, in_chans, num_classes and sleep_every, normalized. Other keyword arguments go to timm's constructor."""
    spec = MODEL_SPECS[variant]
    out = dict(
        img_size=size_pair(kwargs.pop('img_size', cfg.input_size[-2:]), variant),
        in_chans=check_arg(variant, 'in_chans', kwargs.pop('in_chans', cfg.input_size[0]), 'int', lo=1,
                           hi=MAX_CHANNELS),
        num_classes=check_arg(variant, 'num_classes', kwargs.pop('num_classes', cfg.num_classes), 'int', lo=0,
                              hi=MAX_CLASSES, fix='0 gives no classifier (pooled features)'),
        sleep_every=kwargs.pop('sleep_every', spec.sleep_every))
    if out['sleep_every'] is not None:
        out['sleep_every'] = check_arg(variant, 'sleep_every', out['sleep_every'], 'int', lo=1, hi=10 ** 9,
                                       fix='optimizer steps between sleep phases, or None')
        if spec.layer_type != 'lc':
            raise ModelArgError(f'{variant}: sleep_every={out["sleep_every"]} is invalid for a convolutional model: '
                                'only LC models sleep')
    for name in ('drop_rate', 'drop_path_rate'):
        if name in kwargs:
            check_arg(variant, name, kwargs[name], 'real', lo=0.0, hi=1.0)
    if 'global_pool' in kwargs:
        check_pool(variant, kwargs['global_pool'], out['num_classes'], TIMM_FAMILIES[spec.arch].global_pools)
    check_device(variant, kwargs.get('device'))
    check_dtype(variant, kwargs.get('dtype'))
    return out


def _create_timm_model(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's ``base`` model, converted to LC at ``img_size`` for the ``lc_*`` names, with this name's cfg.

    Every argument is checked and the parameter count estimated on a meta-device build before anything is allocated.
    """
    spec = MODEL_SPECS[variant]
    family = TIMM_FAMILIES[spec.arch]
    kwargs = dict(kwargs)
    cfg = resolve_pretrained_cfg(variant, kwargs.pop('pretrained_cfg', None), kwargs.pop('pretrained_cfg_overlay', None))
    max_params = resolve_max_params(variant, kwargs)  # an explicit limit; never one from a Hub config.json
    args = _check_timm_args(variant, cfg, kwargs)
    img_size, in_chans, num_classes = args['img_size'], args['in_chans'], args['num_classes']
    feature_cfg = check_feature_args(variant, kwargs, family.feature_levels)
    features_only = bool(kwargs.get('features_only'))
    if features_only:  # (without it, timm ignores a feature_cfg: it is checked above and dropped)
        # timm's two feature options go in as keyword arguments, which every family's builder takes (some, e.g.
        # convnext, pass a feature_cfg of their own, so a user's would collide); explicit keyword arguments win.
        for name in ('out_indices', 'feature_cls'):
            if name in feature_cfg:
                kwargs.setdefault(name, feature_cfg.pop(name))
        if 'feature_cls' in kwargs:
            feature_cfg = {**family.feature_cls_cfg, **feature_cfg}
        if feature_cfg:
            kwargs['feature_cfg'] = feature_cfg
    if features_only and pretrained:
        raise ModelArgError(f'{variant}: pretrained=True with features_only=True is not supported yet; create the '
                            'model with pretrained=True and take its stage outputs with model.forward_intermediates(x)')
    source = pretrained_source(variant, cfg) if pretrained else None
    kwargs.pop('cache_dir', None)  # timm passes it for pretrained loading only
    base_kwargs = {**family.base_kwargs, **kwargs, 'num_classes': num_classes, 'in_chans': in_chans}

    # The dry run: the same model on the meta device gives the feature size and the exact parameter count.
    dry = _build_base(variant, family.base, {**base_kwargs, 'device': 'meta'})
    feature_size = None
    try:
        if not features_only:  # timm's feature wrappers (features_only=True) have no forward_features
            feature_size = _feature_size(dry, in_chans, img_size)
        estimate = (converted_num_params(dry, img_size, in_chans) if spec.layer_type == 'lc'
                    else sum(p.numel() for p in dry.parameters()))
    except RuntimeError as exc:  # e.g. ConvNeXt's 2x2 downsampling of a 1x1 map at 24x24
        raise _cannot_take(variant, img_size, in_chans, exc) from exc
    check_size(variant, estimate, max_params, f'img_size={img_size}, in_chans={in_chans}, num_classes={num_classes}',
               fix='a smaller img_size (LC weights grow with the number of locations)' if spec.layer_type == 'lc'
               else 'fewer classes')
    del dry

    model = _build_base(variant, family.base, base_kwargs)
    if spec.layer_type == 'lc':
        to_locally_connected(model, img_size, in_chans, sleep_every=args['sleep_every'], max_params=max_params,
                             verbose=False, init=family.lc_init)
        # timm adapts only conv stems: the first_conv=None trait leaves the 6-D LC stem to
        # pretrained_filter, which checks and adapts its input channels (and says so)
        model._traits = dict(getattr(model, '_traits', {}), first_conv=None)
    else:
        model.img_size, model.sleep_every = img_size, None
    model.in_chans = in_chans
    model.fixed_input_size = spec.layer_type == 'lc'
    cfg_dict = dict(cfg.to_dict(), architecture=variant, input_size=(in_chans, *img_size),
                    fixed_input_size=model.fixed_input_size)
    if feature_size is not None:
        model.feature_size = cfg_dict['pool_size'] = feature_size
    if pretrained:
        # while loading, the cfg describes the weights (their input channels), as timm's builder has it
        source_cfg = dict(cfg_dict, input_size=(cfg.input_size[0], *img_size))
        model.pretrained_cfg = model.default_cfg = source_cfg
        try:
            load_pretrained(model, pretrained_cfg=source_cfg, num_classes=num_classes, in_chans=in_chans,
                            filter_fn=pretrained_filter, strict=True)
        except Exception as exc:
            if is_unreadable_weights_error(exc):
                raise unreadable_weights_error(variant, source, exc) from exc
            raise
    model.pretrained_cfg = model.default_cfg = cfg_dict
    return model


def _cfg(name: str, **kwargs: Any) -> Dict[str, Any]:
    import timm

    spec = MODEL_SPECS[name]
    base_cfg = timm.models.get_pretrained_cfg(TIMM_FAMILIES[spec.arch].base)
    pool = -(-DEFAULT_IMG_SIZE // 32)  # all three families reduce the input 32-fold
    return dict(
        hf_hub_id=f'{HUB_ORG}/{name}.in1k', num_classes=1000, input_size=(3, DEFAULT_IMG_SIZE, DEFAULT_IMG_SIZE),
        pool_size=(pool, pool), fixed_input_size=spec.layer_type == 'lc', mean=IMAGENET_MEAN, std=IMAGENET_STD,
        crop_pct=1.0, interpolation='bicubic', first_conv=base_cfg.first_conv, classifier=base_cfg.classifier,
        **{**PAPER, **kwargs})


# '*': .in1k (ImageNet at 64x64) stays the default tag once tags are published
default_cfgs = generate_default_cfgs({
    f'{name}.in1k*': _TagCfg(**_cfg(name)) for name, spec in MODEL_SPECS.items() if not spec.is_bioresnet})


# --- entrypoints ----------------------------------------------------------------------------
# model_args: img_size=64 (any size; LC models are built for exactly that size), num_classes=1000, in_chans=3;
# lc_*: every Conv2d locally connected, per-location independent init; _wsN: sleep_every=N.

@register_model
def conv_resnet18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm resnet18, convolutional, 64x64 cfg."""
    return _create_timm_model('conv_resnet18', pretrained, **kwargs)


@register_model
def lc_resnet18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm resnet18 with every conv locally connected (148.6M parameters at 64x64), no weight sharing."""
    return _create_timm_model('lc_resnet18', pretrained, **kwargs)


@register_model
def lc_resnet18_ws1(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm resnet18, sleep (weight sharing) after every optimizer step."""
    return _create_timm_model('lc_resnet18_ws1', pretrained, **kwargs)


@register_model
def lc_resnet18_ws10(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm resnet18, sleep every 10 optimizer steps."""
    return _create_timm_model('lc_resnet18_ws10', pretrained, **kwargs)


@register_model
def lc_resnet18_ws100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm resnet18, sleep every 100 optimizer steps."""
    return _create_timm_model('lc_resnet18_ws100', pretrained, **kwargs)


@register_model
def conv_convnext_atto(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm convnext_atto (conv_mlp=True), convolutional, 64x64 cfg."""
    return _create_timm_model('conv_convnext_atto', pretrained, **kwargs)


@register_model
def lc_convnext_atto(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm convnext_atto (conv_mlp=True), every conv (depthwise 7x7 and 1x1 MLP) locally connected."""
    return _create_timm_model('lc_convnext_atto', pretrained, **kwargs)


@register_model
def lc_convnext_atto_ws1(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm convnext_atto, sleep after every optimizer step."""
    return _create_timm_model('lc_convnext_atto_ws1', pretrained, **kwargs)


@register_model
def lc_convnext_atto_ws10(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm convnext_atto, sleep every 10 optimizer steps."""
    return _create_timm_model('lc_convnext_atto_ws10', pretrained, **kwargs)


@register_model
def lc_convnext_atto_ws100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm convnext_atto, sleep every 100 optimizer steps."""
    return _create_timm_model('lc_convnext_atto_ws100', pretrained, **kwargs)


@register_model
def conv_mobilenetv3_small_050(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm mobilenetv3_small_050, convolutional, 64x64 cfg."""
    return _create_timm_model('conv_mobilenetv3_small_050', pretrained, **kwargs)


@register_model
def lc_mobilenetv3_small_050(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm mobilenetv3_small_050, every conv (depthwise and squeeze-excite included) locally connected."""
    return _create_timm_model('lc_mobilenetv3_small_050', pretrained, **kwargs)


@register_model
def lc_mobilenetv3_small_050_ws1(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm mobilenetv3_small_050, sleep after every optimizer step."""
    return _create_timm_model('lc_mobilenetv3_small_050_ws1', pretrained, **kwargs)


@register_model
def lc_mobilenetv3_small_050_ws10(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm mobilenetv3_small_050, sleep every 10 optimizer steps."""
    return _create_timm_model('lc_mobilenetv3_small_050_ws10', pretrained, **kwargs)


@register_model
def lc_mobilenetv3_small_050_ws100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """LC timm mobilenetv3_small_050, sleep every 100 optimizer steps."""
    return _create_timm_model('lc_mobilenetv3_small_050_ws100', pretrained, **kwargs)
