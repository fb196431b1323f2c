"""Convolutional, locally connected (LC) and LC + sleep ResNets of Pogodin et al. (NeurIPS 2021).

Registered with timm on ``import bioconv_timm``:

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
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
from timm.layers import create_classifier, get_device_dtype
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs, register_model
from timm.models import checkpoint_seq, register_notrace_module, resolve_pretrained_cfg
# timm exports no public name for it (timm's own models import it from here too)
from timm.models._features import feature_take_indices

from .checks import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE, ModelArgError, PretrainedWeightsError, arg_error, check_arg
from .checks import check_device, check_dtype, check_size, is_int, param_limit, resolve_max_params, short_repr
from .layers import LocallyConnected2d, conv_output_size
from .layers.locally_connected import TORCHSCRIPT_ERROR
from .pixel_stats import CIFAR10_MEAN, CIFAR10_STD, DIGITS_MEAN, DIGITS_STD, IMAGENET_MEAN, IMAGENET_STD

__all__ = ['BioResNet', 'BasicBlock', 'PUBLISHED_TAGS', 'MODEL_NAMES', 'BIORESNET_NAMES', 'TIMM_ARCHS',
           'TORCHSCRIPT_ERROR', 'adapt_pretrained_state_dict', 'checked_input', 'pretrained_filter',
           'pretrained_source', 'bioresnet_num_params']

LayerType = str  # 'conv' or 'lc'

# LocallyConnected2d.forward checks its input's shape with Python branches, which FX cannot trace: timm's tracers
# (features_only=True with feature_cls='fx', timm.models.create_feature_extractor, or any tracer given
# timm.models.get_notrace_modules() as leaf modules) keep each LC layer as one call_module node.
register_notrace_module(LocallyConnected2d)

_logger = logging.getLogger(__name__)



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


def _out_size(size: Tuple[int, int], kernel: int, stride: int, padding: int) -> Tuple[int, int]:
    return tuple(conv_output_size(n, kernel, stride, padding) for n in size)  # type: ignore[return-value]


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 -> BN -> ReLU -> 3x3 -> BN, plus (projected) identity, then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int, input_size: Tuple[int, int],
                 layer_type: LayerType, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.input_size = input_size
        self.output_size = _out_size(input_size, 3, stride, 1)
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


GLOBAL_POOLS = ('avg', 'max', 'avgmax', 'catavgmax', '')
MAX_BLOCKS = 256  # blocks per stage: 4x ResNet-1202's 200; more would build for minutes


class _Args(NamedTuple):
    """BioResNet's architecture arguments, checked and normalized (pairs as tuples, ``stem_type`` resolved)."""
    layers: Tuple[int, ...]
    channels: Tuple[int, ...]
    stem: str
    stem_stride: int
    layer_type: str
    stem_type: str
    img_size: Tuple[int, int]
    in_chans: int
    num_classes: int
    global_pool: str
    drop_rate: float
    sleep_every: Optional[int]

    def num_params(self, where: str) -> int:
        return bioresnet_num_params(self.layers, self.channels, self.stem, self.stem_stride, self.layer_type,
                                    self.stem_type, self.img_size, self.in_chans, self.num_classes,
                                    self.global_pool, where)

    def check_size(self, where: str, limit: int) -> None:
        """ModelSizeError (one line: the estimate, the limit, how to raise it) above ``limit`` parameters."""
        lc = 'lc' in (self.layer_type, self.stem_type)
        check_size(where, self.num_params(where), limit,
                   f'img_size={self.img_size}, in_chans={self.in_chans}, num_classes={self.num_classes}',
                   fix='a smaller img_size (LC weights grow with the number of locations)' if lc
                   else 'fewer channels or classes')


def _check_args(where: str, layers: Sequence[int] = (3, 3, 3), channels: Sequence[int] = (16, 32, 64),
                stem: str = 'cifar', stem_stride: int = 1, layer_type: str = 'conv', stem_type: Optional[str] = None,
                img_size: Union[int, Tuple[int, int]] = 32, in_chans: int = 3, num_classes: int = 10,
                global_pool: str = 'avg', drop_rate: float = 0.0, sleep_every: Optional[int] = None,
                device: Any = None, dtype: Any = None, max_params: Any = None) -> _Args:
    """Check every BioResNet argument (one ModelArgError line naming the bad one); return them normalized.
    ``max_params`` is checked by the caller (it is not an architecture argument)."""
    layers = check_arg(where, 'layers', layers, 'ints', lo=1, hi=MAX_BLOCKS, length=(1, 8),
                       fix='blocks per stage, e.g. (3, 3, 3) for ResNet20')
    channels = check_arg(where, 'channels', channels, 'ints', lo=1, hi=MAX_CHANNELS, length=(1, 8),
                         fix='channels per stage, e.g. (16, 32, 64)')
    if len(layers) != len(channels):
        raise ModelArgError(f'{where}: layers={layers} and channels={channels} must be the same length (one entry '
                            'per stage)')
    stem = check_arg(where, 'stem', stem, 'choice', choices=('cifar', 'imagenet'))
    layer_type = check_arg(where, 'layer_type', layer_type, 'choice', choices=('conv', 'lc'))
    stem_type = check_arg(where, 'stem_type', stem_type, 'choice', choices=(None, 'conv', 'lc'))
    if not (is_int(stem_stride) and stem_stride in (1, 2)) or (stem == 'imagenet' and stem_stride != 1):
        raise ModelArgError(f"{where}: stem_stride={short_repr(stem_stride)} is invalid: the 'cifar' stem takes 1 or 2 "
                            "(2 quarters the cost of small LC models), the 'imagenet' stem is always 7x7 stride 2")
    if sleep_every is not None:
        sleep_every = check_arg(where, 'sleep_every', sleep_every, 'int', lo=1, hi=10 ** 9,
                                fix='optimizer steps between sleep phases, or None')
        if layer_type != 'lc':
            raise ModelArgError(f'{where}: sleep_every={sleep_every} is invalid for a convolutional model: only LC '
                                "models sleep (layer_type='lc')")
    check_device(where, device)
    check_dtype(where, dtype)
    return _Args(
        layers=layers, channels=channels, stem=stem, stem_stride=int(stem_stride), layer_type=layer_type,
        stem_type=stem_type or layer_type,
        img_size=check_arg(where, 'img_size', img_size, 'pair', lo=1, hi=MAX_SIDE,
                           fix='the (H, W) of the input images, e.g. img_size=32'),
        in_chans=check_arg(where, 'in_chans', in_chans, 'int', lo=1, hi=MAX_CHANNELS),
        num_classes=check_arg(where, 'num_classes', num_classes, 'int', lo=0, hi=MAX_CLASSES,
                              fix='0 gives no classifier (pooled features)'),
        global_pool=check_pool(where, global_pool, num_classes),
        drop_rate=check_arg(where, 'drop_rate', drop_rate, 'real', lo=0.0, hi=1.0),
        sleep_every=sleep_every)


def check_pool(where: str, global_pool: Any, num_classes: Any, choices: Sequence[str] = GLOBAL_POOLS) -> str:
    """``global_pool``: one of ``choices``; '' (no pooling: the classifier would see a feature map) only with
    ``num_classes=0``. ``num_classes`` is assumed checked."""
    global_pool = check_arg(where, 'global_pool', global_pool, 'choice', choices=choices)
    if global_pool == '' and num_classes:
        raise ModelArgError(f"{where}: global_pool='' (no pooling) is invalid with num_classes={num_classes}: the "
                            "classifier needs pooled features; pass num_classes=0 for feature maps, or global_pool='avg'")
    return global_pool


def _too_small(where: str, img_size: Tuple[int, int], what: str) -> ModelArgError:
    return ModelArgError(f'{where}: img_size={img_size} is too small: {what}; pass a larger img_size=')


def _conv_numel(layer_type: str, cin: int, cout: int, kernel: int, stride: int, padding: int,
                size: Tuple[int, int]) -> Tuple[int, Tuple[int, int]]:
    """(parameters, output (H, W)) of one bias-free conv or LC layer of a BioResNet."""
    out = _out_size(size, kernel, stride, padding)
    if layer_type == 'lc':
        return LocallyConnected2d.num_params(out, cout, (kernel, kernel), cin), out
    return cout * cin * kernel * kernel, out


def bioresnet_num_params(layers: Sequence[int], channels: Sequence[int], stem: str, stem_stride: int,
                         layer_type: str, stem_type: str, img_size: Tuple[int, int], in_chans: int, num_classes: int,
                         global_pool: str = 'avg', where: str = 'BioResNet') -> int:
    """The parameter count of ``BioResNet(...)`` with these (checked) arguments, from the geometry alone.

    Walks the layers the constructor builds (stem, blocks with their projection shortcuts, BatchNorms, classifier)
    without allocating, so the size limit is checked before any memory is taken. Raises ModelArgError when
    ``img_size`` leaves a stage empty.
    """
    if stem == 'cifar':
        total, size = _conv_numel(stem_type, in_chans, channels[0], 3, stem_stride, 1, img_size)
    else:
        total, size = _conv_numel(stem_type, in_chans, channels[0], 7, 2, 3, img_size)
    if min(size) < 1:
        raise _too_small(where, img_size, 'the stem output would be empty')
    total += 2 * channels[0]  # stem BatchNorm (weight, bias)
    if stem == 'imagenet':
        size = _out_size(size, 3, 2, 1)  # max-pool
    cin = channels[0]
    for i, (depth, width) in enumerate(zip(layers, channels)):
        stride = 1 if i == 0 else 2
        if min(size) < 2 and stride == 2:
            raise _too_small(where, img_size, f'stage {i + 1} would be empty')
        for j in range(depth):
            s = stride if j == 0 else 1
            n1, out = _conv_numel(layer_type, cin, width, 3, s, 1, size)
            n2, _ = _conv_numel(layer_type, width, width, 3, 1, 1, out)
            total += n1 + n2 + 4 * width
            if s != 1 or cin != width:
                total += _conv_numel(layer_type, cin, width, 1, s, 0, size)[0] + 2 * width
            size, cin = out, width
    pooled = cin * (2 if global_pool == 'catavgmax' else 1)
    if num_classes > 0:
        total += pooled * num_classes + num_classes
    return total


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
         drop_rate, sleep_every) = args = _check_args(
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
            size = _out_size(size, 3, stem_stride, 1)
        else:
            self.conv1 = make_conv(stem_type, in_chans, stem_width, 7, 2, 3, size, **dd)
            size = _out_size(size, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(stem_width, **dd)
        self.act1 = nn.ReLU(inplace=True)
        stem_reduction = stem_stride if stem == 'cifar' else 2
        self.feature_info: List[Dict[str, Any]] = [
            dict(num_chs=stem_width, reduction=stem_reduction, module='act1')]
        if stem == 'imagenet':
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            size = _out_size(size, 3, 2, 1)
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

# 'name.tag' of the pretrained tags whose weights have been published on the Hub. Only these are listed by
# timm.list_pretrained() / list_models(pretrained=True); the others stay registered (creatable by name, listed
# by timm.list_models(include_tags=True)), and pretrained=True with them refuses to fall back to random weights.
# Read when the models register (on import): add a tag here when its repo is uploaded.
PUBLISHED_TAGS: set = set()

HUB_ORG = 'bioconv-timm'
_ARCHS = dict(
    resnet20=dict(layers=(3, 3, 3), channels=(16, 32, 64), stem='cifar', img_size=32, num_classes=10),
    resnet18_half=dict(layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem='imagenet', img_size=224,
                       num_classes=1000),
)


# timm CNNs registered as conv / LC / LC-ws models by bioconv_timm.timm_models (built with to_locally_connected);
# the names are listed here so that every registered name has its spec in one table.
TIMM_ARCHS: Tuple[str, ...] = ('resnet18', 'convnext_atto', 'mobilenetv3_small_050')


@dataclass(frozen=True)
class ModelSpec:
    """What a registered name stands for: the architecture, the layer type of the body and of the stem, and the
    sleep period (optimizer steps between sleeps; None: no sleep)."""
    arch: str                           # 'resnet20', 'resnet18_half' (_ARCHS: BioResNet) or one of TIMM_ARCHS
    layer_type: LayerType               # 'conv' or 'lc'
    stem_type: LayerType                # the first layer's type: Table 13's conv-stem variants differ here
    sleep_every: Optional[int] = None

    @property
    def is_bioresnet(self) -> bool:
        """True for the paper's ResNets (BioResNet); False for the converted timm CNNs (TIMM_ARCHS)."""
        return self.arch in _ARCHS

    def model_args(self) -> Dict[str, Any]:
        """The BioResNet arguments of this spec (its architecture's defaults)."""
        if not self.is_bioresnet:
            raise ValueError(f'{self.arch} is a converted timm CNN (bioconv_timm.timm_models), not a BioResNet')
        args = {k: v for k, v in _ARCHS[self.arch].items() if k != 'num_classes'}
        return dict(args, layer_type=self.layer_type, stem_type=self.stem_type, sleep_every=self.sleep_every)


def _specs() -> Dict[str, ModelSpec]:
    specs = {}
    def family(arch: str) -> None:
        specs[f'conv_{arch}'] = ModelSpec(arch, 'conv', 'conv')
        for n in (None, 1, 10, 100):
            specs[f'lc_{arch}' + (f'_ws{n}' if n else '')] = ModelSpec(arch, 'lc', 'lc', n)

    family('resnet20')
    family('resnet18_half')
    for n in (None, 1, 10, 100):  # paper Table 13: LC with a convolutional first layer
        specs['lc_resnet18_half_convstem' + (f'_ws{n}' if n else '')] = ModelSpec('resnet18_half', 'lc', 'conv', n)
    for arch in TIMM_ARCHS:
        family(arch)
    return specs


# Every registered name and what it stands for; the entrypoints below build exactly these.
MODEL_SPECS: Dict[str, ModelSpec] = _specs()


def model_spec(model_name: str) -> ModelSpec:
    """The spec of a registered name ('lc_resnet20_ws10', also with a pretrained tag: 'lc_resnet20_ws10.digits')."""
    name = model_name.split('.', 1)[0]
    if name not in MODEL_SPECS:
        raise ValueError(f'unknown bioconv model {model_name!r}; the registered ones are {", ".join(MODEL_SPECS)} '
                         '(`bioconv list`)')
    return MODEL_SPECS[name]


# Keyword arguments timm.create_model passes to every entrypoint, and build_model_with_cfg's own (not the model's).
BUILDER_KWARGS = frozenset({'pretrained_cfg', 'pretrained_cfg_overlay', 'pretrained_model_args', 'cache_dir',
                            'pretrained_strict'})
FEATURE_KWARGS = frozenset({'features_only', 'out_indices', 'feature_cls', 'feature_cfg'})
FEATURE_CLASSES = ('list', 'dict', 'hook', 'fx', 'getter')


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
        levels = f'{n_levels} feature levels (indices 0..{n_levels - 1} or -{n_levels}..-1)'
        if is_int(out_indices):
            check_arg(where, name, out_indices, 'int', lo=1, hi=n_levels,
                      fix=f'an int k takes the last k of the {levels}')
        else:
            indices = check_arg(where, name, out_indices, 'ints', lo=-n_levels, hi=n_levels - 1,
                                length=(1, n_levels), fix=f'this model has {levels}')
            if len({i % n_levels for i in indices}) != len(indices):
                raise arg_error(where, name, out_indices, 'distinct feature levels', f'this model has {levels}')
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


_BIORESNET_ARGS = tuple(n for n in inspect.signature(BioResNet).parameters)


def _create_bioresnet(variant: str, pretrained: bool = False, **kwargs: Any) -> BioResNet:
    model_args = MODEL_SPECS[variant].model_args()
    source = None
    check_known_kwargs(variant, kwargs, (*_BIORESNET_ARGS, *BUILDER_KWARGS, *FEATURE_KWARGS))
    max_params = resolve_max_params(variant, kwargs)  # an explicit limit; never one from a Hub config.json
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    # a tag with another input size (e.g. '.digits', 1x24x24) builds its LC layers at that size; timm itself
    # fills in only num_classes and in_chans from the tag
    cfg_size = tuple((cfg.input_size or ())[-2:])
    if cfg_size and cfg_size != (model_args['img_size'],) * 2 and 'img_size' not in kwargs:
        kwargs['img_size'] = cfg_size
    # The model's arguments as build_model_with_cfg will pass them (the cfg's num_classes and in_chans unless
    # given), checked and sized here so that the errors name this model.
    arch_kwargs = {k: v for k, v in kwargs.items() if k in _BIORESNET_ARGS}
    cfg_defaults = dict(num_classes=cfg.num_classes, in_chans=(cfg.input_size or (3,))[0])
    args = _check_args(variant, **{**model_args, **cfg_defaults, **arch_kwargs})
    feature_cfg = dict(flatten_sequential=False, out_indices=tuple(range(len(args.layers) + 1)))
    feature_cfg.update(check_feature_args(variant, kwargs, len(args.layers) + 1))  # the user's feature_cfg wins
    args.check_size(variant, max_params)  # after every argument is checked: a bad one is named first
    if pretrained:
        source = pretrained_source(variant, cfg)
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
    # Keep the data config in step with a non-default input size (e.g. img_size=48 for TinyImageNet).
    if 'img_size' not in kwargs or not hasattr(model, 'pretrained_cfg'):
        return model
    input_size = (args.in_chans, *args.img_size)
    if tuple(model.pretrained_cfg.get('input_size', ())) != input_size:
        model.pretrained_cfg = dict(model.pretrained_cfg, input_size=input_size)
        model.default_cfg = model.pretrained_cfg
    return model


def pretrained_source(variant: str, cfg: PretrainedCfg) -> str:
    """Where ``pretrained=True`` loads ``variant``'s weights from (a file, URL or 'hf-hub:ORG/NAME'); raises a
    RuntimeError saying how to train and load them when the cfg names our Hub repo but the tag is unpublished."""
    has_source = cfg.file or cfg.url or cfg.state_dict
    explicit_hub = cfg.source == 'hf-hub'  # timm.create_model('hf-hub:ORG/NAME'): the user named the repo
    if not has_source and not explicit_hub and cfg.hf_hub_id and cfg.hf_hub_id.startswith(HUB_ORG + '/') \
            and f'{variant}.{cfg.tag}' not in PUBLISHED_TAGS:
        raise RuntimeError(
            f'No pretrained weights are published for {variant}.{cfg.tag} yet ({cfg.hf_hub_id}). '
            f'Train it with `bioconv train --model {variant}`, then load the weights with '
            f"timm.create_model('{variant}', pretrained=True, pretrained_cfg_overlay=dict(file='model.safetensors')).")
    return cfg.file or cfg.url or (f'hf-hub:{cfg.hf_hub_id}' if cfg.hf_hub_id else None) or 'state_dict'


def unreadable_weights_error(variant: str, source: str, exc: BaseException) -> RuntimeError:
    """The error for a truncated or corrupt weights file: what happened and what to do."""
    return RuntimeError(
        f'Could not read the pretrained weights of {variant} from {source}: {exc}. The safetensors file is '
        'truncated or corrupt (an interrupted download or copy). Delete it (for a Hub download: the '
        "'models--ORG--NAME' folder in the Hugging Face cache) and download or copy it again; no random "
        'weights were used.')


def is_unreadable_weights_error(exc: BaseException) -> bool:
    """True for the errors safetensors (or torch.load) raises on a truncated or corrupt weights file."""
    try:
        from safetensors import SafetensorError
        if isinstance(exc, SafetensorError):
            return True
    except ImportError:  # pragma: no cover
        pass
    text = str(exc).lower()
    return any(s in text for s in ('deserializ', 'header', 'invalid load key', 'pytorchstreamreader',
                                   'unexpected eof', 'incomplete'))


def _adapt_lc_in_chans(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a 6-D LC stem weight (out_h, out_w, Cout, kh, kw, Cin) to ``in_chans`` input channels.

    Ours, not timm's ``adapt_input_conv`` on the weight reshaped to 4-D: that one converts only from 3 channels,
    and the ``.digits`` tags have 1. Same rules otherwise, on the last dim. To 1 channel the channels are summed: a grayscale
    image gives exactly the output of the source model on that image repeated Cin times. To more channels
    the source channels are repeated cyclically (cut to ``in_chans``) and scaled by Cin / in_chans. When
    ``in_chans`` is a multiple of Cin, a grayscale image repeated ``in_chans`` times gives exactly the source
    model's output on the grayscale image; otherwise some source channels are repeated once more than others
    and that holds only approximately (the total weight is preserved only when the channels' sums agree).
    """
    src = weight.shape[-1]
    if src == in_chans:
        return weight
    dtype = weight.dtype
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=-1, keepdim=True)
    else:
        repeat = -(-in_chans // src)
        w = w.repeat(*([1] * (w.dim() - 1)), repeat)[..., :in_chans] * (src / in_chans)
    return w.to(dtype)


def _lc_stem_name(model: nn.Module, modules: Dict[str, nn.Module]) -> Optional[str]:
    """The name of ``model``'s LC stem: the cfg's ``first_conv`` when it is LC, else (a config that lost it) the
    first LC layer; None when the stem is a conv (timm adapts those itself)."""
    first_conv = (getattr(model, 'pretrained_cfg', None) or {}).get('first_conv')
    if first_conv:
        return first_conv if isinstance(modules.get(first_conv), LocallyConnected2d) else None
    return next((name for name, m in modules.items() if isinstance(m, LocallyConnected2d)), None)


def _adapt_lc_stem(name: str, weight: torch.Tensor, stem: LocallyConnected2d, source_chans: int,
                   in_chans: int) -> torch.Tensor:
    """The pretrained weight of an LC stem, adapted from the ``source_chans`` input channels its cfg declares to
    the model's ``in_chans``; refuses a weight that contradicts the declaration, as timm does for conv stems."""
    if weight.dim() != 6 or tuple(weight.shape[:5]) != tuple(stem.weight.shape[:5]):
        return weight  # other locations or channels: the location check below or load_state_dict names it
    # The conv stems' consistency rule (timm's load_pretrained), on the LC weight's last (Cin / groups) dim.
    if weight.shape[-1] * in_chans * stem.groups != source_chans * stem.in_channels:
        raise PretrainedWeightsError(
            f'Pretrained {name} weight shape {tuple(weight.shape)} is inconsistent with input_size[0]={source_chans}: '
            f'an LC stem weight ends in its input channels, so it was trained with '
            f'{weight.shape[-1] * stem.groups} channel(s), not {source_chans}. Correct the source pretrained_cfg '
            f"(e.g. pretrained_cfg_overlay=dict(input_size=({weight.shape[-1] * stem.groups}, H, W))) before "
            f'adapting to {in_chans} channel(s).')
    if source_chans == in_chans:
        return weight
    adapted = _adapt_lc_in_chans(weight, stem.in_channels // stem.groups)
    how = 'summed over channels' if in_chans == 1 else f'channels repeated, scaled by {source_chans}/{in_chans}'
    _logger.info(f'Adapted the pretrained LC stem {name} from {source_chans} to {in_chans} input channel(s) ({how}); '
                 f'weight {tuple(weight.shape)} -> {tuple(adapted.shape)}')
    return adapted


def adapt_pretrained_state_dict(state_dict: Dict[str, torch.Tensor], model: nn.Module,
                                source_chans: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Make a pretrained state dict fit ``model``'s LC stem (and refuse LC weights of another input size).

    timm adapts only 4-D conv stems to another ``in_chans``; an LC stem weight is 6-D, so it is adapted here on its
    last (Cin) dim, and the adaptation is logged. ``source_chans``: the input channels the weights are declared to
    have (the pretrained cfg's ``input_size[0]``; what timm's loader passes, through :func:`pretrained_filter`): a
    stem weight that contradicts them is refused, as timm refuses such a conv stem. None (a direct call with a state
    dict you hold): the weight's own channels. LC weights are tied to the input size: a pretrained LC model cannot be
    loaded at another ``img_size``, which raises a clear error instead of a list of shape mismatches. The classifier
    (``fc``) for another ``num_classes`` is dropped by timm (pretrained_cfg['classifier']).
    """
    state_dict = dict(state_dict)
    modules = dict(model.named_modules())
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    stem_name = _lc_stem_name(model, modules)
    key = f'{stem_name}.weight'
    if stem_name is not None and key in state_dict and state_dict[key].dim() == 6:
        stem = modules[stem_name]
        weight = state_dict[key]
        if source_chans is None:
            source_chans = weight.shape[-1] * stem.groups
        in_chans = int(getattr(model, 'in_chans', stem.in_channels))
        state_dict[key] = _adapt_lc_stem(stem_name, weight, stem, int(source_chans), in_chans)
    for key, value in state_dict.items():
        module = modules.get(key.rsplit('.', 1)[0])
        if isinstance(module, LocallyConnected2d) and key.endswith('.weight') and value.dim() == 6 \
                and tuple(value.shape[:2]) != tuple(module.weight.shape[:2]):
            raise PretrainedWeightsError(
                f'pretrained LC weight {key} has {value.shape[0]}x{value.shape[1]} output locations but the model has '
                f'{module.weight.shape[0]}x{module.weight.shape[1]}: locally connected weights are tied to the input '
                f'size they were trained at ({cfg.get("input_size")}); create the model without img_size= (or with '
                'the pretrained size).')
    return state_dict


def pretrained_filter(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn`` of every bioconv model: :func:`adapt_pretrained_state_dict` with the input
    channels the pretrained cfg declares (timm calls it with the cfg of the weights on ``model``)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return adapt_pretrained_state_dict(state_dict, model, int((cfg.get('input_size') or (3,))[0]))


PAPER = dict(
    paper_name='Towards Biologically Plausible Convolutional Networks (Pogodin et al., NeurIPS 2021)',
    paper_ids='arXiv:2106.13031',
    origin_url='https://github.com/romanpogodin/towards-bio-plausible-conv',
    license="MIT (this project's code and weights)",
)


class _TagCfg(PretrainedCfg):
    """A pretrained cfg whose Hub repo counts as a weight source only once its tag is in ``PUBLISHED_TAGS``.

    The cfg names the repo its weights will have (``hf_hub_id``), but timm lists a tag as pretrained
    whenever it has one; ``has_weights`` is what timm's registry reads (on registration) for that.
    """

    @property
    def has_weights(self) -> bool:
        published = self.hf_hub_id is not None and f'{self.architecture}.{self.tag}' in PUBLISHED_TAGS
        return bool(self.url or self.file or published)


def _cfg(name: str, tag: str, **kwargs: Any) -> Dict[str, Any]:
    spec = MODEL_SPECS[name]
    arch, layer_type, stem_type = spec.arch, spec.layer_type, spec.stem_type
    cfg = dict(
        hf_hub_id=f'{HUB_ORG}/{name}.{tag}',  # one Hub repo per pretrained tag
        num_classes=_ARCHS[arch]['num_classes'],
        input_size=(3, _ARCHS[arch]['img_size'], _ARCHS[arch]['img_size']),
        fixed_input_size='lc' in (layer_type, stem_type),
        first_conv='conv1', classifier='fc',
        **PAPER,
    )
    if arch == 'resnet20':
        cfg.update(mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0, interpolation='bilinear', pool_size=(8, 8))
    else:
        cfg.update(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875, interpolation='bilinear', pool_size=(7, 7))
    cfg.update(kwargs)
    return cfg


MODEL_NAMES: Tuple[str, ...] = tuple(MODEL_SPECS)
BIORESNET_NAMES: Tuple[str, ...] = tuple(n for n in MODEL_NAMES if MODEL_SPECS[n].is_bioresnet)
_DEFAULT_TAG = dict(resnet20='cifar10', resnet18_half='in1k')


# Extra (non-default) pretrained tags: small runs on the embedded digits data (bioconv_timm.train.data), 1x24x24.
_EXTRA_TAGS = dict(
    digits=dict(archs=('resnet20',), cfg=dict(input_size=(1, 24, 24), num_classes=10, mean=DIGITS_MEAN,
                                              std=DIGITS_STD, pool_size=(6, 6))),
)


def _default_cfgs() -> Dict[str, PretrainedCfg]:
    cfgs = {}
    for name in BIORESNET_NAMES:  # the timm CNNs' cfgs are in bioconv_timm.timm_models
        arch = MODEL_SPECS[name].arch
        tag = _DEFAULT_TAG[arch]
        # '*' keeps .cifar10 / .in1k the default tag whichever tags are published (timm would otherwise make
        # the first tag with weights the default)
        cfgs[f'{name}.{tag}*'] = _TagCfg(**_cfg(name, tag))
        for extra, spec in _EXTRA_TAGS.items():
            if arch in spec['archs']:
                cfgs[f'{name}.{extra}'] = _TagCfg(**_cfg(name, extra, **spec['cfg']))
    return cfgs


default_cfgs = generate_default_cfgs(_default_cfgs())


def model_table(pattern: str = '*') -> List[dict]:
    """One row per registered bioconv model: name, input size, parameter count, sleep period."""
    import fnmatch

    import timm

    rows = []
    for name in MODEL_NAMES:
        if not fnmatch.fnmatch(name, pattern):
            continue
        spec = MODEL_SPECS[name]
        model = timm.create_model(name, device='meta')  # count parameters without allocating ~500M floats
        rows.append(dict(
            name=name,
            input_size='x'.join(str(s) for s in model.pretrained_cfg['input_size']),
            params=sum(p.numel() for p in model.parameters()),
            sleep_every=spec.sleep_every,
            layer_type=spec.layer_type if spec.stem_type == spec.layer_type else f'{spec.layer_type} (conv stem)',
            family='paper ResNet' if spec.is_bioresnet else f'timm {spec.arch}',
        ))
    return rows


# --- entrypoints ----------------------------------------------------------------------------

@register_model
def conv_resnet20(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, convolutional."""
    return _create_bioresnet('conv_resnet20', pretrained, **kwargs)


@register_model
def lc_resnet20(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, locally connected, no weight sharing."""
    return _create_bioresnet('lc_resnet20', pretrained, **kwargs)


@register_model
def lc_resnet20_ws1(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, locally connected, sleep (weight sharing) after every optimizer step."""
    return _create_bioresnet('lc_resnet20_ws1', pretrained, **kwargs)


@register_model
def lc_resnet20_ws10(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, locally connected, sleep every 10 optimizer steps."""
    return _create_bioresnet('lc_resnet20_ws10', pretrained, **kwargs)


@register_model
def lc_resnet20_ws100(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """CIFAR ResNet20, locally connected, sleep every 100 optimizer steps."""
    return _create_bioresnet('lc_resnet20_ws100', pretrained, **kwargs)


@register_model
def conv_resnet18_half(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18 (32/64/128/256 channels), convolutional."""
    return _create_bioresnet('conv_resnet18_half', pretrained, **kwargs)


@register_model
def lc_resnet18_half(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, locally connected, no weight sharing."""
    return _create_bioresnet('lc_resnet18_half', pretrained, **kwargs)


@register_model
def lc_resnet18_half_ws1(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, locally connected, sleep after every optimizer step."""
    return _create_bioresnet('lc_resnet18_half_ws1', pretrained, **kwargs)


@register_model
def lc_resnet18_half_ws10(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, locally connected, sleep every 10 optimizer steps."""
    return _create_bioresnet('lc_resnet18_half_ws10', pretrained, **kwargs)


@register_model
def lc_resnet18_half_ws100(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, locally connected, sleep every 100 optimizer steps."""
    return _create_bioresnet('lc_resnet18_half_ws100', pretrained, **kwargs)


@register_model
def lc_resnet18_half_convstem(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, LC except a convolutional stem (paper Table 13), no weight sharing."""
    return _create_bioresnet('lc_resnet18_half_convstem', pretrained, **kwargs)


@register_model
def lc_resnet18_half_convstem_ws1(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, LC with a conv stem (Table 13), sleep after every optimizer step."""
    return _create_bioresnet('lc_resnet18_half_convstem_ws1', pretrained, **kwargs)


@register_model
def lc_resnet18_half_convstem_ws10(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, LC with a conv stem (Table 13), sleep every 10 optimizer steps."""
    return _create_bioresnet('lc_resnet18_half_convstem_ws10', pretrained, **kwargs)


@register_model
def lc_resnet18_half_convstem_ws100(pretrained: bool = False, **kwargs: Any) -> BioResNet:
    """Half-width ResNet18, LC with a conv stem (Table 13), sleep every 100 optimizer steps."""
    return _create_bioresnet('lc_resnet18_half_convstem_ws100', pretrained, **kwargs)
