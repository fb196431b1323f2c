"""The paper's ResNets (Pogodin et al., NeurIPS 2021): convolutional, locally connected (LC) and LC + sleep.

Read top to bottom: the layers, the block, the model class ``BioResNet``, its builder (``_create_bioresnet``: one
``build_model_with_cfg`` call), the pretrained cfgs and the ``@register_model`` entrypoints, each stating its
``model_args``. Registered with timm on ``import bioconv_timm``; what each name stands for is in :mod:`.registry`.

* CIFAR ResNet20 (paper section 5): 3x3 stem (16 ch, stride 1, no max-pool), 3 stages x 3 BasicBlocks
  with 16/32/64 channels, 1x1 + BN projection shortcuts, global average pool, fc. Input 32x32 (48x48
  for TinyImageNet via ``img_size=48``).
* Half-width ResNet18 (ImageNet, 224): torchvision ResNet18 topology with 32/64/128/256 channels,
  7x7/2 stem + 3x3/2 max-pool.
* ``lc_*``: every convolution (stem and 1x1 shortcuts included) is a LocallyConnected2d.
  ``lc_*_convstem``: LC everywhere except a convolutional stem (paper Table 13, "LC + 1st layer conv").
  ``*_wsN``: LC trained with a sleep phase (weight sharing) every N optimizer steps; the model carries
  the period as ``model.sleep_every`` (None for models without sleep).

Convolutions and LC layers have no bias; weights are Kaiming-normal (fan_out, ReLU gain), drawn
independently at every location for LC (paper appendix B).

Every model takes ``device=`` and ``dtype=`` (as timm's own models): ``timm.create_model('lc_resnet18_half',
device='meta')`` allocates nothing; ``model.to_empty(device='cpu')`` then ``model.init_weights()`` gives the
initialized model. Models are FX-traceable with timm's tracers (``features_only=True, feature_cls='fx'``; LC
layers are timm "no-trace" leaf modules; the input check stays in the graph). TorchScript is not supported
(PyTorch deprecated it): ``torch.jit.script`` raises.
"""
# No `from __future__ import annotations`: TorchScript compiles checked_input (in an FX graph of a conv model) and
# needs real annotations.
import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
from timm.layers import create_classifier, get_device_dtype
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs, register_model
from timm.models import checkpoint_seq, register_notrace_module, resolve_pretrained_cfg
# timm exports no public name for it (timm's own models import it from here too)
from timm.models._features import feature_take_indices

from ..checks import MAX_CLASSES, check_arg, param_limit, resolve_max_params
from ..layers import LocallyConnected2d
from ..layers.locally_connected import TORCHSCRIPT_ERROR
from ..pixel_stats import CIFAR10_MEAN, CIFAR10_STD, DIGITS_MEAN, DIGITS_STD, IMAGENET_MEAN, IMAGENET_STD
from .bioresnet_args import check_resnet_args
from .bioresnet_params import out_size
from .builder_args import BUILDER_KWARGS, FEATURE_KWARGS, check_feature_args, check_known_kwargs, check_pool
from .pretrained import TagCfg, is_unreadable_weights_error, pretrained_filter, pretrained_source
from .pretrained import unreadable_weights_error
from .registry import HUB_ORG, PAPER, PAPER_ARCHS, MODEL_SPECS, BIORESNET_NAMES, LayerType

__all__ = ['BioResNet', 'BasicBlock', 'TORCHSCRIPT_ERROR', 'BIORESNET_ARGS', 'checked_input', 'make_conv']

# LocallyConnected2d.forward checks its input's shape with Python branches, which FX cannot trace: timm's tracers
# (features_only=True with feature_cls='fx', timm.models.create_feature_extractor, or any tracer given
# timm.models.get_notrace_modules() as leaf modules) keep each LC layer as one call_module node.
register_notrace_module(LocallyConnected2d)


def _init_conv_(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')


def make_conv(layer_type: LayerType, in_channels: int, out_channels: int, kernel_size: int, stride: int,
              padding: int, input_size: Tuple[int, int], device: Optional[torch.device] = None,
              dtype: Optional[torch.dtype] = None) -> nn.Module:
    """A bias-free conv or LC layer with the paper's Kaiming-normal (fan_out) initialization."""
    dd = dict(device=device, dtype=dtype)
    if layer_type == 'lc':
        return LocallyConnected2d(in_channels, out_channels, kernel_size, input_size, stride, padding, **dd)
    if layer_type == 'conv':
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False, **dd)
        _init_conv_(conv)
        return conv
    raise ValueError(f"layer_type must be 'conv' or 'lc', got {layer_type!r}")


@torch.jit.ignore  # TorchScript calls it as Python: only its caller is compiled (an FX graph of a conv model)
def _raise_bad_input(shape: List[int], in_chans: int, img_size: Optional[Tuple[int, int]]) -> None:
    if len(shape) != 4 or shape[1] != in_chans:
        raise ValueError(f'expected input (B, {in_chans}, H, W), got {tuple(shape)}')
    h, w = img_size
    raise ValueError(
        f'this locally connected model expects {h}x{w} inputs, got {shape[-2]}x{shape[-1]} (input shape '
        f'{tuple(shape)}). Resize/crop the images to {h}x{w}, or create the model with '
        f'img_size={tuple(shape[-2:])}.')


@torch.fx.wrap  # one graph node for every FX tracer (it branches on the shape); it still checks when the graph runs
def checked_input(x: torch.Tensor, in_chans: int, img_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Return ``x`` if it is a (B, in_chans, H, W) batch (with (H, W) == ``img_size`` when given), else raise a
    ValueError naming the expected shape. (TorchScript-compilable, so that a traced conv model can be scripted.)"""
    if x.dim() != 4 or x.shape[1] != in_chans or (
            img_size is not None and (x.shape[-2] != img_size[0] or x.shape[-1] != img_size[1])):
        _raise_bad_input(list(x.shape), in_chans, img_size)
    return x


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 -> BN -> ReLU -> 3x3 -> BN, plus (projected) identity, then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int, input_size: Tuple[int, int],
                 layer_type: LayerType, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.input_size = input_size
        self.output_size = out_size(input_size, 3, stride, 1)
        self.conv1 = make_conv(layer_type, in_channels, channels, 3, stride, 1, input_size, **dd)
        self.bn1 = nn.BatchNorm2d(channels, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = make_conv(layer_type, channels, channels, 3, 1, 1, self.output_size, **dd)
        self.bn2 = nn.BatchNorm2d(channels, **dd)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                make_conv(layer_type, in_channels, channels, 1, stride, 0, input_size, **dd),
                nn.BatchNorm2d(channels, **dd),
            )
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)



class BioResNet(nn.Module):
    """ResNet whose convolutions are conv or locally connected layers.

    Args:
        layers: blocks per stage, e.g. (3, 3, 3) for ResNet20, (2, 2, 2, 2) for ResNet18.
        channels: channels per stage.
        stem: 'cifar' (3x3/1, no max-pool) or 'imagenet' (7x7/2 + 3x3/2 max-pool).
        stem_stride: stride of the 'cifar' stem (1 as in the paper; 2 for cheap small-scale studies).
        layer_type: 'conv' or 'lc' for the blocks.
        stem_type: layer type of the stem conv; defaults to ``layer_type`` ('conv' gives the
            paper's "LC + 1st layer conv").
        img_size: input (H, W); fixed for LC models, used to size the LC layers.
        in_chans, num_classes, global_pool, drop_rate: as in timm.
        sleep_every: period N (optimizer steps) of the sleep phase for ``_wsN`` models, else None.
        device, dtype: where and in which dtype parameters and buffers are created (as ``nn.Conv2d``);
            ``device='meta'`` allocates nothing (then ``to_empty`` + :meth:`init_weights`).
        max_params: refuse (``bioconv_timm.checks.ModelSizeError``, before allocating) a model with more
            parameters; default the limit of :mod:`bioconv_timm.checks` (1e9, or the enclosing ``allow_params``).
            The meta device is checked too: a meta build is the dry run of the real one.

    Every argument is checked first: a bad one raises ``bioconv_timm.checks.ModelArgError`` (a ValueError) naming
    it, its value and what it takes.

    Shapes: input (B, in_chans, H, W) -> logits (B, num_classes).
    """

    def __init__(
            self,
            layers: Sequence[int] = (3, 3, 3),
            channels: Sequence[int] = (16, 32, 64),
            stem: str = 'cifar',
            stem_stride: int = 1,
            layer_type: LayerType = 'conv',
            stem_type: Optional[LayerType] = None,
            img_size: Union[int, Tuple[int, int]] = 32,
            in_chans: int = 3,
            num_classes: int = 10,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            sleep_every: Optional[int] = None,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            max_params: Optional[int] = None,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        # Every argument is checked and the size estimated before anything is allocated.
        (layers, channels, stem, stem_stride, layer_type, stem_type, img_size, in_chans, num_classes, global_pool,
         drop_rate, sleep_every) = args = check_resnet_args(
            where, layers, channels, stem, stem_stride, layer_type, stem_type, img_size, in_chans, num_classes,
            global_pool, drop_rate, sleep_every, device, dtype)
        args.check_size(where, param_limit() if max_params is None
                        else check_arg(where, 'max_params', max_params, 'count'))
        if stem_type == 'lc':
            # timm adapts only conv stems: an explicit first_conv=None trait leaves this 6-D stem to
            # pretrained_filter, which checks and adapts its input channels (and says so).
            self._traits = dict(first_conv=None)
        dd = dict(device=device, dtype=dtype)
        self.img_size: Tuple[int, int] = img_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.layer_type = layer_type
        self.stem_type = stem_type
        self.sleep_every = int(sleep_every) if sleep_every is not None else None
        # LC layers fix the input size; a pure conv net accepts any size.
        self.fixed_input_size = 'lc' in (layer_type, stem_type)
        self.grad_checkpointing = False

        # stem
        size = self.img_size
        stem_width = channels[0]
        if stem == 'cifar':
            self.conv1 = make_conv(stem_type, in_chans, stem_width, 3, stem_stride, 1, size, **dd)
            size = out_size(size, 3, stem_stride, 1)
        else:
            self.conv1 = make_conv(stem_type, in_chans, stem_width, 7, 2, 3, size, **dd)
            size = out_size(size, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(stem_width, **dd)
        self.act1 = nn.ReLU(inplace=True)
        stem_reduction = stem_stride if stem == 'cifar' else 2
        self.feature_info: List[Dict[str, Any]] = [
            dict(num_chs=stem_width, reduction=stem_reduction, module='act1')]
        if stem == 'imagenet':
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            size = out_size(size, 3, 2, 1)
            reduction = 4
        else:
            self.maxpool = nn.Identity()
            reduction = stem_stride

        # stages
        in_channels = stem_width
        self.stage_names: List[str] = []
        for i, (depth, width) in enumerate(zip(layers, channels)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                block = BasicBlock(in_channels, width, stride if j == 0 else 1, size, layer_type, **dd)
                size = block.output_size
                in_channels = width
                blocks.append(block)
            reduction *= stride
            name = f'layer{i + 1}'
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=name))
        self.num_features = self.head_hidden_size = in_channels
        self.feature_size = size

        # head
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        # No init_weights() here: each layer initialized itself above (LC layers in their constructor), so
        # construction draws every weight once, in the same order as init_weights().

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialize every parameter and buffer, in place, as construction does.

        Conv weights: Kaiming normal (fan_out, ReLU gain); LC weights: the same, drawn independently at every
        location (``LocallyConnected2d.reset_parameters``); BatchNorm: weight 1, bias 0, running statistics
        reset; classifier: ``nn.Linear``'s default. Modules are visited in construction order, so after
        ``torch.manual_seed(s)`` this draws the same weights as building the model after ``torch.manual_seed(s)``.
        Use it after creating the model on the meta device and ``model.to_empty(device=...)``.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()  # the draw nn.Conv2d's constructor makes, so the RNG stream matches
                _init_conv_(module)
            elif isinstance(module, (LocallyConnected2d, nn.BatchNorm2d, nn.Linear)):
                module.reset_parameters()

    def __prepare_scriptable__(self) -> 'BioResNet':
        # torch.jit.script calls this first: fail with a clear message instead of a TorchScript compile error
        raise RuntimeError(TORCHSCRIPT_ERROR)

    # --- timm model interface -------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^conv1|bn1|maxpool', blocks=r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        where = f'{type(self).__name__}.reset_classifier'
        num_classes = check_arg(where, 'num_classes', num_classes, 'int', lo=0, hi=MAX_CLASSES)
        pool_type = check_pool(where, global_pool if global_pool is not None else self.global_pool.pool_type,
                               num_classes)
        dd = get_device_dtype(self)  # the new head lives where the model is
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool_type, **dd)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``x`` cannot go through the model."""
        self._checked_input(x)

    def _checked_input(self, x: torch.Tensor) -> torch.Tensor:
        return checked_input(x, self.in_chans, self.img_size if self.fixed_input_size else None)

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stage, x)
        return stage(x)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self._checked_input(x)  # passed through so that FX keeps the check in the graph
        return self.act1(self.bn1(self.conv1(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_features, h, w)."""
        x = self.maxpool(self.forward_stem(x))
        for name in self.stage_names:
            x = self._run_stage(getattr(self, name), x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, num_features, h, w) -> (B, num_classes), or pooled (B, num_features) if pre_logits."""
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features of the stem and of every stage (indices as in timm: last n if int)."""
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        intermediates = []
        x = self.forward_stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        x = self.maxpool(x)
        names = self.stage_names[:max_index] if stop_early else self.stage_names
        for i, name in enumerate(names, start=1):
            x = self._run_stage(getattr(self, name), x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages (and head) not needed to produce the given intermediates."""
        take_indices, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        for name in self.stage_names[max_index:]:
            setattr(self, name, nn.Identity())
        self.stage_names = self.stage_names[:max_index]
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

# --- creation -------------------------------------------------------------------------------

BIORESNET_ARGS: Tuple[str, ...] = tuple(inspect.signature(BioResNet).parameters)


def _create_bioresnet(variant: str, pretrained: bool, model_args: Dict[str, Any], **kwargs: Any) -> BioResNet:
    """``variant`` built by timm's builder from the entrypoint's ``model_args`` and the caller's ``kwargs`` (which
    win). Every argument is checked, and the size estimated, before anything is allocated; the errors name
    ``variant``."""
    check_known_kwargs(variant, kwargs, (*BIORESNET_ARGS, *BUILDER_KWARGS, *FEATURE_KWARGS))
    max_params = resolve_max_params(variant, kwargs)  # an explicit limit; never one from a Hub config.json
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    # The cfg's input size is the default img_size: a tag of another size (e.g. '.digits', 1x24x24) builds its LC
    # layers at that size (timm fills in img_size only for fixed-size cfgs; conv models need it for feature_size).
    kwargs.setdefault('img_size', tuple(cfg.input_size[-2:]))
    # The model's arguments as build_model_with_cfg will pass them (the cfg's num_classes and in_chans unless
    # given), checked and sized here so that the errors name this model.
    arch_kwargs = {k: v for k, v in kwargs.items() if k in BIORESNET_ARGS}
    cfg_defaults = dict(num_classes=cfg.num_classes, in_chans=cfg.input_size[0])
    args = check_resnet_args(variant, **{**model_args, **cfg_defaults, **arch_kwargs})
    feature_cfg = dict(flatten_sequential=False, out_indices=tuple(range(len(args.layers) + 1)))
    feature_cfg.update(check_feature_args(variant, kwargs, len(args.layers) + 1))  # the user's feature_cfg wins
    args.check_size(variant, max_params)  # after every argument is checked: a bad one is named first
    source = pretrained_source(variant, cfg) if pretrained else None
    try:
        model = build_model_with_cfg(
            BioResNet, variant, pretrained,
            pretrained_filter_fn=pretrained_filter,
            feature_cfg=feature_cfg, max_params=max_params,
            **{**model_args, **kwargs})
    except Exception as exc:
        if pretrained and is_unreadable_weights_error(exc):
            raise unreadable_weights_error(variant, source, exc) from exc
        raise
    # The data config describes the model built (e.g. img_size=48 for TinyImageNet, in_chans=1 for grayscale).
    input_size = (args.in_chans, *args.img_size)
    if tuple(model.pretrained_cfg.get('input_size', ())) != input_size:
        model.pretrained_cfg = model.default_cfg = dict(model.pretrained_cfg, input_size=input_size)
    return model


# Extra (non-default) pretrained tags: small runs on the embedded digits data (bioconv_timm.train.data), 1x24x24.
_TAG_CFGS = dict(
    digits=dict(input_size=(1, 24, 24), num_classes=10, mean=DIGITS_MEAN, std=DIGITS_STD, pool_size=(6, 6)),
)


def _cfg(name: str, tag: str) -> Dict[str, Any]:
    spec = MODEL_SPECS[name]
    arch = PAPER_ARCHS[spec.arch]
    cfg = dict(
        hf_hub_id=f'{HUB_ORG}/{name}.{tag}',  # one Hub repo per pretrained tag
        num_classes=arch.num_classes,
        input_size=(3, arch.img_size, arch.img_size),
        fixed_input_size='lc' in (spec.layer_type, spec.stem_type),
        first_conv='conv1', classifier='fc',
        **PAPER,
    )
    if arch.stem == 'cifar':
        cfg.update(mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0, interpolation='bilinear', pool_size=(8, 8))
    else:
        cfg.update(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875, interpolation='bilinear', pool_size=(7, 7))
    cfg.update(_TAG_CFGS.get(tag, {}))
    return cfg


def _default_cfgs() -> Dict[str, PretrainedCfg]:
    cfgs = {}
    for name in BIORESNET_NAMES:
        default, *extra = MODEL_SPECS[name].tags
        # '*' keeps .cifar10 / .in1k the default tag whichever tags are published (timm would otherwise make
        # the first tag with weights the default)
        cfgs[f'{name}.{default}*'] = TagCfg(**_cfg(name, default))
        for tag in extra:
            cfgs[f'{name}.{tag}'] = TagCfg(**_cfg(name, tag))
    return cfgs


default_cfgs = generate_default_cfgs(_default_cfgs())


# --- entrypoints ----------------------------------------------------------------------------

@register_model
def conv_resnet20(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, convolutional."""
    model_args = dict(layers=(3, 3, 3), channels=(16, 32, 64), stem='cifar', layer_type='conv')
    return _create_bioresnet('conv_resnet20', pretrained, model_args, **kwargs)


@register_model
def lc_resnet20(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, locally connected, no weight sharing."""
    model_args = dict(layers=(3, 3, 3), channels=(16, 32, 64), stem='cifar', layer_type='lc')
    return _create_bioresnet('lc_resnet20', pretrained, model_args, **kwargs)


@register_model
def lc_resnet20_ws1(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, locally connected, sleep (weight sharing) after every optimizer step."""
    model_args = dict(layers=(3, 3, 3), channels=(16, 32, 64), stem='cifar', layer_type='lc', sleep_every=1)
    return _create_bioresnet('lc_resnet20_ws1', pretrained, model_args, **kwargs)


@register_model
def lc_resnet20_ws10(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, locally connected, sleep every 10 optimizer steps."""
    model_args = dict(layers=(3, 3, 3), channels=(16, 32, 64), stem='cifar', layer_type='lc', sleep_every=10)
    return _create_bioresnet('lc_resnet20_ws10', pretrained, model_args, **kwargs)


@register_model
def lc_resnet20_ws100(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, locally connected, sleep every 100 optimizer steps."""
    model_args = dict(layers=(3, 3, 3), channels=(16, 32, 64), stem='cifar', layer_type='lc', sleep_every=100)
    return _create_bioresnet('lc_resnet20_ws100', pretrained, model_args, **kwargs)


@register_model
def conv_resnet18_half(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18 (32/64/128/256 channels), convolutional."""
    model_args = dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', layer_type='conv')
    return _create_bioresnet('conv_resnet18_half', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_half(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, locally connected, no weight sharing."""
    model_args = dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', layer_type='lc')
    return _create_bioresnet('lc_resnet18_half', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_half_ws1(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, locally connected, sleep after every optimizer step."""
    model_args = dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', layer_type='lc',
                      sleep_every=1)
    return _create_bioresnet('lc_resnet18_half_ws1', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_half_ws10(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, locally connected, sleep every 10 optimizer steps."""
    model_args = dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', layer_type='lc',
                      sleep_every=10)
    return _create_bioresnet('lc_resnet18_half_ws10', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_half_ws100(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, locally connected, sleep every 100 optimizer steps."""
    model_args = dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', layer_type='lc',
                      sleep_every=100)
    return _create_bioresnet('lc_resnet18_half_ws100', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_half_convstem(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, LC except a convolutional stem (paper Table 13), no weight sharing."""
    model_args = dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', layer_type='lc',
                      stem_type='conv')
    return _create_bioresnet('lc_resnet18_half_convstem', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_half_convstem_ws1(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, LC with a conv stem (Table 13), sleep after every optimizer step."""
    model_args = dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', layer_type='lc',
                      stem_type='conv', sleep_every=1)
    return _create_bioresnet('lc_resnet18_half_convstem_ws1', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_half_convstem_ws10(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, LC with a conv stem (Table 13), sleep every 10 optimizer steps."""
    model_args = dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', layer_type='lc',
                      stem_type='conv', sleep_every=10)
    return _create_bioresnet('lc_resnet18_half_convstem_ws10', pretrained, model_args, **kwargs)


@register_model
def lc_resnet18_half_convstem_ws100(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, LC with a conv stem (Table 13), sleep every 100 optimizer steps."""
    model_args = dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', layer_type='lc',
                      stem_type='conv', sleep_every=100)
    return _create_bioresnet('lc_resnet18_half_convstem_ws100', pretrained, model_args, **kwargs)
