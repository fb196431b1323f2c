"""Locally connected 2d layer: a convolution whose kernel differs at every output location.

Layout (why it is fast): the weight is stored spatial-major, ``(out_h, out_w, out_channels, kernel_h,
kernel_w, in_channels)`` (a channels-last conv kernel per location), so the layer is a batched matrix
product over output locations ``L = out_h * out_w``::

    patches (L, B, kh*kw*Cin)  @  weight(L, Cout, kh*kw*Cin)^T  ->  out (L, B, Cout)

With ``groups`` g (``nn.Conv2d`` semantics, depthwise when g == Cin) the weight is
``(out_h, out_w, Cout, kh, kw, Cin/g)`` and each location is g such products, one per channel group; with
``dilation`` d, tap (u, v) of output (i, j) reads input (i*s + u*d - p, j*s + v*d - p) as in ``nn.Conv2d``.

Here: the functional op :func:`locally_connected2d` and the module :class:`LocallyConnected2d`. Beside it:

- ``ops``: the three ``torch.library`` operators ``torch.ops.bioconv.lc_forward``, ``lc_backward_input`` and
  ``lc_backward_weight`` (shape functions, autograd; the backend is chosen inside the operator when it runs,
  so ``torch.compile(model, fullgraph=True)`` and ``torch.export.export`` see one node per layer), and
  ``KERNELS``, the one table of which backend runs which kind of layer (dense, depthwise, grouped);
- ``native_backend``: the native CPU fp32 kernels (``csrc/lc_cpu.c``, built by ``native``; the default where a
  C compiler exists; ``BIOCONV_LC_BACKEND=auto|native|torch``);
- ``torch_backend``: ``torch.bmm`` over patches gathered a few output rows at a time (CUDA, bf16/fp16, no
  compiler);
- ``lc_decomposition``: the same product in standard operators, for ONNX export.

Both backends give the same results up to fp32 rounding (the summation order differs). Only the input and the
weight are saved for backward.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn

from . import native
from ..checks import MAX_CHANNELS, MAX_SIDE, ModelArgError, check_arg, check_device, check_dtype, check_size
from ..checks import param_limit, short_repr
from .geometry import IntPair, conv_output_size, pair
from .ops import DOUBLE_BACKWARD_ERROR, lc_backward_input, lc_backward_weight, lc_forward, resolve_backend
from .torch_backend import CHUNK_ENV, chunk_bytes  # noqa: F401  (CHUNK_ENV: still importable from here)

__all__ = ['DOUBLE_BACKWARD_ERROR', 'LocallyConnected2d', 'chunk_bytes', 'conv_output_size', 'lc_backward_input',
           'lc_backward_weight', 'lc_forward', 'locally_connected2d', 'resolve_backend']


def locally_connected2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                        stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                        groups: int = 1) -> torch.Tensor:
    """Functional locally connected layer, on the operator ``torch.ops.bioconv.lc_forward`` (so it runs under
    ``torch.compile(fullgraph=True)``, ``torch.export`` and on meta tensors).

    Runs on the native CPU kernels for fp32 CPU tensors (unless ``BIOCONV_LC_BACKEND=torch`` or
    :func:`bioconv_timm.layers.native.set_backend`), else on the torch backend (CUDA, bf16/fp16 autocast);
    which kernels compute which kind of layer (dense, depthwise, grouped): ``KERNELS`` in
    :mod:`bioconv_timm.layers.ops`.

    Args:
        x: input, (B, Cin, H, W), NCHW or channels-last.
        weight: (out_h, out_w, Cout, kh, kw, Cin/groups): a channels-last conv kernel per location.
        bias: optional (Cout, out_h, out_w), one bias per output neuron.
        stride, padding, dilation: ints or pairs, as in ``nn.Conv2d``.
        groups: as in ``nn.Conv2d``: output channels [j Cout/g, (j+1) Cout/g) of every location see input
            channels [j Cin/g, (j+1) Cin/g) only; ``groups == Cin`` is depthwise.
    Returns:
        (B, Cout, out_h, out_w), channels-last memory format.
    """
    stride, padding, dilation = pair(stride, 'stride'), pair(padding, 'padding'), pair(dilation, 'dilation')
    device_type = x.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        # Run in the autocast dtype like nn.Conv2d does; the cast is differentiable, so the fp32
        # master weight still receives fp32 gradients.
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    elif x.dtype != weight.dtype:
        raise TypeError(f'input dtype {x.dtype} does not match weight dtype {weight.dtype}; '
                        'cast one of them or use torch.autocast')
    # set_backend/use_backend's choice is an argument of the op (its backward follows it; torch.compile
    # guards on it); without one, the op reads BIOCONV_LC_BACKEND when it runs.
    if torch.onnx.is_in_onnx_export():  # ONNX has no bioconv::lc_forward: the same product in standard ops (export.py)
        from .lc_decomposition import lc_forward_decomposition
        out = lc_forward_decomposition(x, weight, stride, padding, dilation, int(groups))
    else:
        out = lc_forward(x, weight, list(stride), list(padding), list(dilation), int(groups), native.chosen_backend())
    if bias is not None:
        out = out + bias.unsqueeze(0)
    return out


def checked_lc_input(x: torch.Tensor, in_channels: int, input_size: Tuple[int, int]) -> torch.Tensor:
    """``x`` itself when it is (B, in_channels, *input_size); else a ValueError that says what to do."""
    if x.dim() != 4 or x.shape[1] != in_channels or tuple(x.shape[-2:]) != tuple(input_size):
        raise ValueError(
            f'LocallyConnected2d expects input (B, {in_channels}, {input_size[0]}, {input_size[1]}), got '
            f'{tuple(x.shape)}. An LC layer has a fixed input size: resize the images or rebuild the '
            'layer/model with the matching input_size/img_size.')
    return x


# FX: both are leaf calls of a symbolic trace (their Python shape logic runs when the graph runs), so
# torch.fx.symbolic_trace and torchvision's feature extraction need no leaf-module list for LC models.
torch.fx.wrap('checked_lc_input')
torch.fx.wrap('locally_connected2d')


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    """ModelArgError unless ``groups`` is a positive int dividing both channel counts (as nn.Conv2d requires)."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ModelArgError(f'LocallyConnected2d: groups must be a positive int, got {short_repr(groups)} (a '
                            'divisor of in_channels and out_channels; 1 is a dense layer)')
    if in_channels % groups or out_channels % groups:
        raise ModelArgError(f'LocallyConnected2d: in_channels={in_channels} and out_channels={out_channels} must '
                            f'both be divisible by groups={groups}')


# TorchScript cannot compile the layer (its Python shape checks and custom ops); torch.jit.script calls
# __prepare_scriptable__ on every submodule first, so any model holding an LC layer ends here with this message.
TORCHSCRIPT_ERROR = (
    'bioconv_timm models do not support TorchScript (torch.jit.script), which PyTorch has deprecated. Run them in '
    "eager mode, or trace them with torch.fx (timm.create_model(..., features_only=True, feature_cls='fx'), "
    'timm.models.create_feature_extractor).')

_WHERE = 'LocallyConnected2d'
_PADDING_FIX = ("LocallyConnected2d pads with zeros by a fixed amount; for 'same' at stride 1 pass "
                'padding=kernel_size // 2 (odd kernels)')


def _check_layer_args(in_channels: int, out_channels: int, kernel_size: IntPair, input_size: IntPair,
                      stride: IntPair, padding: IntPair, dilation: IntPair, groups: int, bias: bool, device,
                      dtype) -> Tuple[Tuple[int, int], ...]:
    """Every constructor argument's type and range (one ModelArgError line naming the bad one); returns the
    (kernel_size, input_size, stride, padding, dilation) pairs."""
    for name, value in (('in_channels', in_channels), ('out_channels', out_channels)):
        check_arg(_WHERE, name, value, 'int', lo=1, hi=MAX_CHANNELS)
    _check_groups(in_channels, out_channels, groups)
    pairs = (check_arg(_WHERE, 'kernel_size', kernel_size, 'pair', lo=1, hi=MAX_SIDE),
             check_arg(_WHERE, 'input_size', input_size, 'pair', lo=1, hi=MAX_SIDE,
                       fix='the (H, W) of the inputs this layer will see'),
             check_arg(_WHERE, 'stride', stride, 'pair', lo=1, hi=MAX_SIDE),
             check_arg(_WHERE, 'padding', padding, 'pair', lo=0, hi=MAX_SIDE, fix=_PADDING_FIX),
             check_arg(_WHERE, 'dilation', dilation, 'pair', lo=1, hi=MAX_SIDE))
    check_arg(_WHERE, 'bias', bias, 'bool')
    check_device(_WHERE, device)
    check_dtype(_WHERE, dtype)
    return pairs


class LocallyConnected2d(nn.Module):
    """Conv2d semantics with an independent kernel at every output location.

    The input spatial size is fixed at construction (``input_size``); output size follows
    ``nn.Conv2d``: ``(H + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1``.

    Args:
        in_channels: input channels Cin.
        out_channels: output channels Cout.
        kernel_size: int or (kh, kw).
        input_size: (H, W) of the input (an int means square).
        stride: int or pair.
        padding: int or pair (zero padding).
        dilation: int or pair: tap (u, v) of output (i, j) reads input (i * stride + u * dilation - padding,
            ...), as in ``nn.Conv2d``.
        groups: as in ``nn.Conv2d``; both channel counts must be divisible by it, ``groups == in_channels``
            is depthwise. Which kernels run it: ``KERNELS`` in :mod:`bioconv_timm.layers.ops`.
        bias: one learnable bias per output neuron, shape (Cout, out_h, out_w).
        device, dtype: where and in which (floating-point) dtype the parameters are created.
        max_params: refuse (``ModelSizeError``, before allocating) a layer with more parameters; default the
            limit of :mod:`bioconv_timm.checks` (1e9, or the enclosing ``allow_params``).

    Every argument is checked first: a bad one raises ``bioconv_timm.checks.ModelArgError`` (a ValueError) naming
    it, its value and what it takes.

    Attributes:
        weight: (out_h, out_w, Cout, kh, kw, Cin/groups); location (y, x) holds its own kernel, stored
            like a channels-last conv weight (``nn.Conv2d``'s is (Cout, Cin/groups, kh, kw)).

    Shapes:
        input (B, Cin, H, W) -> output (B, Cout, out_h, out_w), channels-last memory format.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, input_size: IntPair,
                 stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                 bias: bool = False, device=None, dtype=None, max_params: Optional[int] = None) -> None:
        super().__init__()
        # every argument is checked, and the size estimated, before anything is allocated
        pairs = _check_layer_args(in_channels, out_channels, kernel_size, input_size, stride, padding, dilation,
                                  groups, bias, device, dtype)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.groups = int(groups)
        self.kernel_size, self.input_size, self.stride, self.padding, self.dilation = pairs
        self.output_size = tuple(
            conv_output_size(n, k, s, p, d)
            for n, k, s, p, d in zip(self.input_size, self.kernel_size, self.stride, self.padding, self.dilation))
        if min(self.output_size) < 1:
            raise ModelArgError(f'{_WHERE}: input_size={self.input_size} is too small for '
                                f'kernel_size={self.kernel_size} with padding={self.padding}'
                                + (f' and dilation={self.dilation}' if self.dilation != (1, 1) else '')
                                + ': the output would be empty; pass a larger input_size or more padding')
        limit = param_limit() if max_params is None else check_arg(_WHERE, 'max_params', max_params, 'count')
        check_size(_WHERE, self.num_params(self.output_size, self.out_channels, self.kernel_size,
                                           self.in_channels // self.groups, bias),
                   limit, f'input_size={self.input_size}, {self.in_channels}->{self.out_channels} channels',
                   fix='a smaller input_size or stride > 1 has fewer locations')
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(
            *self.output_size, self.out_channels, *self.kernel_size, self.in_channels // self.groups, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_channels, *self.output_size, **factory)) if bias else None
        self.reset_parameters()

    @property
    def num_locations(self) -> int:
        return self.output_size[0] * self.output_size[1]

    @staticmethod
    def num_params(output_size: Tuple[int, int], out_channels: int, kernel_size: Tuple[int, int],
                   in_channels_per_group: int, bias: bool = False) -> int:
        """Parameters of a layer with this geometry: a kernel (and a bias) per output location."""
        locations = output_size[0] * output_size[1]
        return locations * out_channels * (kernel_size[0] * kernel_size[1] * in_channels_per_group + int(bias))

    def __prepare_scriptable__(self) -> 'LocallyConnected2d':
        raise RuntimeError(TORCHSCRIPT_ERROR)

    def reset_parameters(self) -> None:
        # Kaiming normal, ReLU gain, fan_out (paper appendix B), drawn independently per location. With
        # groups the fan-out of an input unit is (Cout / groups) * kh * kw (as timm inits depthwise convs).
        fan_out = (self.out_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / fan_out))
        if self.bias is not None:
            fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_size: IntPair, max_params: Optional[int] = None) -> 'LocallyConnected2d':
        """An LC layer that holds ``conv``'s kernel (and bias) at every output location; grouped
        (depthwise included) and dilated convs keep their groups and dilation. ``max_params``: as the
        constructor's."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f'from_conv expects an nn.Conv2d, got {type(conv).__name__}')
        if conv.padding_mode != 'zeros' or isinstance(conv.padding, str):
            raise ModelArgError('LocallyConnected2d.from_conv supports numeric zero padding only; got '
                                f'padding={conv.padding!r}, padding_mode={conv.padding_mode!r}')
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, input_size,
                    stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                    bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
                    max_params=max_params)
        with torch.no_grad():
            layer.weight.copy_(conv.weight.permute(0, 2, 3, 1).expand_as(layer.weight))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias.view(-1, 1, 1).expand_as(layer.bias))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = checked_lc_input(x, self.in_channels, self.input_size)
        return locally_connected2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
             f'input_size={self.input_size}, output_size={self.output_size}, stride={self.stride}')
        if self.padding != (0, 0):
            s += f', padding={self.padding}'
        if self.dilation != (1, 1):
            s += f', dilation={self.dilation}'
        if self.groups != 1:
            s += f', groups={self.groups}'
        if self.bias is None:
            s += ', bias=False'
        return s
