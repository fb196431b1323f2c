"""The LC layer's operators, ``torch.ops.bioconv.lc_forward``, ``lc_backward_input`` and ``lc_backward_weight``,
their shape functions and autograd, and the one table that says which kernels compute which layer.

Registered with torch.library so that torch.compile, torch.export and FakeTensor/meta tracing see one operator
with known output shapes instead of a ctypes call on data pointers. Each one picks its backend when it runs, for
its ``backend`` argument: ``'auto'``, ``'native'``, ``'torch'``, or ``''`` for the process's choice at run time
(:func:`bioconv_timm.layers.native.get_backend`); the backward ops get the forward's, so a backward outside a
``use_backend`` block runs on the backend its forward ran on. Then the layer's kind (:func:`lc_kind`) and the
backend pick its three functions from :data:`KERNELS`.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch

from . import native, native_backend, torch_backend
from .geometry import conv_output_size, pair

__all__ = ['DOUBLE_BACKWARD_ERROR', 'KERNELS', 'KINDS', 'Kernels', 'kernel_table', 'lc_backward_input',
           'lc_backward_weight', 'lc_forward', 'lc_kind', 'resolve_backend']

DOUBLE_BACKWARD_ERROR = (
    'LocallyConnected2d has no double backward: a gradient through an LC layer cannot be differentiated again '
    '(create_graph=True, e.g. a gradient penalty or a Hessian-vector product). First-order gradients taken '
    'with create_graph=True are correct; only differentiating them raises this')

KINDS = ('dense', 'depthwise', 'grouped')


def lc_kind(in_channels: int, out_channels: int, groups: int) -> str:
    """The kind of an LC layer, a key of :data:`KERNELS`: ``'dense'`` (groups=1), ``'depthwise'`` (one input
    channel per group, ``groups == in_channels``, with or without a channel multiplier) or ``'grouped'``."""
    if groups == 1:
        return 'dense'
    return 'depthwise' if in_channels == groups else 'grouped'


class Kernels(NamedTuple):
    """The three functions that compute one kind of layer on one backend (plain tensor functions, no autograd):
    ``forward(x, weight, stride, padding, dilation, groups)``,
    ``backward_input(grad_out, weight, input_size, stride, padding, dilation, groups)``,
    ``backward_weight(grad_out, x, kernel_size, stride, padding, dilation, groups)``."""
    forward: Callable[..., torch.Tensor]
    backward_input: Callable[..., torch.Tensor]
    backward_weight: Callable[..., torch.Tensor]


# Which backend runs which kind of layer: stated here and only here (docs/performance.md shows kernel_table()).
KERNELS: Dict[Tuple[str, str], Kernels] = {
    ('native', 'dense'): Kernels(native_backend.forward, native_backend.backward_input,
                                 native_backend.backward_weight),
    ('native', 'depthwise'): Kernels(native_backend.depthwise_forward, native_backend.depthwise_backward_input,
                                     native_backend.depthwise_backward_weight),
    ('native', 'grouped'): Kernels(native_backend.grouped_forward, native_backend.grouped_backward_input,
                                   native_backend.grouped_backward_weight),
    ('torch', 'dense'): Kernels(torch_backend.forward, torch_backend.backward_input, torch_backend.backward_weight),
    ('torch', 'depthwise'): Kernels(torch_backend.depthwise_forward, torch_backend.depthwise_backward_input,
                                    torch_backend.depthwise_backward_weight),
    ('torch', 'grouped'): Kernels(torch_backend.forward, torch_backend.backward_input, torch_backend.backward_weight),
}

_BACKEND_TITLES = {'native': 'native (CPU fp32, where a C compiler exists)',
                   'torch': 'torch (CUDA, bf16/fp16, no C compiler)'}


def _summary(fn: Callable) -> str:
    """A kernel function's name and the first paragraph of its docstring, on one line."""
    first = (fn.__doc__ or '').strip().split('\n\n')[0]
    return f'`{fn.__module__.rsplit(".", 1)[-1]}.{fn.__name__}`: ' + ' '.join(first.split())


def kernel_table() -> str:
    """:data:`KERNELS` as a markdown table: one row per kind, one column per backend, each cell the forward
    function and what it does (docs/performance.md holds this text; ``tests/test_lc_groups.py`` checks it)."""
    backends = sorted({backend for backend, _ in KERNELS})
    lines = ['| kind | ' + ' | '.join(_BACKEND_TITLES[b] for b in backends) + ' |',
             '|---|' + '---|' * len(backends)]
    for kind in KINDS:
        lines.append(f'| {kind} | ' + ' | '.join(_summary(KERNELS[(b, kind)].forward) for b in backends) + ' |')
    return '\n'.join(lines) + '\n'


def _resolve(t: torch.Tensor, taps: int, backend: str) -> str:
    backend = native.check_backend(backend) if backend else native.get_backend()
    if backend == 'torch' or t.device.type != 'cpu' or t.dtype != torch.float32:
        return 'torch'
    if taps > native.MAX_TAPS:
        return 'torch'
    try:
        native.load()
    except native.NativeBuildError:
        if backend == 'native':
            raise
        native.warn_unavailable_once()
        return 'torch'
    return 'native'


def resolve_backend(x: torch.Tensor, weight: torch.Tensor, backend: str = '') -> str:
    """The backend, ``'native'`` or ``'torch'``, that an LC call on ``x`` and ``weight`` runs on when
    ``backend`` is requested (``'auto'``, ``'native'``, ``'torch'``; ``''``:
    :func:`bioconv_timm.layers.native.get_backend`): native for CPU fp32 where the kernels build (``'native'``
    raises :class:`~bioconv_timm.layers.native.NativeBuildError` if they do not) and the kernel has at most
    ``native.MAX_TAPS`` taps, else torch. Every kind of layer included (:data:`KERNELS`), dilated ones too."""
    if weight.dtype != x.dtype:
        return 'torch'
    return _resolve(x, weight.shape[3] * weight.shape[4], backend)


def _kernels(t: torch.Tensor, taps: int, backend: str, in_channels: int, out_channels: int,
             groups: int) -> Kernels:
    """The :data:`KERNELS` entry of an operator call: its backend (for ``t``'s device and dtype, a kernel of
    ``taps`` taps and the requested ``backend``) and the layer's kind."""
    return KERNELS[(_resolve(t, taps, backend), lc_kind(in_channels, out_channels, groups))]


# --- the operators: bioconv::lc_forward and the two halves of its backward (see the module docstring) --------

def _require(cond, message) -> None:
    """torch._check for the symbolic sizes of FakeTensor tracing; a plain test for real sizes (cheaper: the
    operators run it on every call)."""
    if cond is True:
        return
    if cond is False:
        raise RuntimeError(message())
    torch._check(cond, message)


def _without_autocast(device_type: str):
    # The arithmetic is in the inputs' dtype: the layer casts for autocast before it calls the op.
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _dilation(dilation: Optional[Sequence[int]]) -> Sequence[int]:
    """The operators' ``dilation`` argument: None (the default) means (1, 1)."""
    return (1, 1) if dilation is None else dilation


def _check_geometry(name: str, x_shape: Sequence, weight_shape: Sequence, stride: Sequence[int],
                    padding: Sequence[int], dilation: Sequence[int] = (1, 1), groups: int = 1) -> None:
    """Input (B, Cin, H, W) and weight (out_h, out_w, Cout, kh, kw, Cin/groups) agree with stride, padding,
    dilation and groups (also for the symbolic sizes of torch.compile and torch.export)."""
    _require(len(stride) == 2 and len(padding) == 2 and len(dilation) == 2, lambda: (
        f'{name}: stride, padding and dilation must be pairs, got {list(stride)}, {list(padding)}, '
        f'{list(dilation)}'))
    _require(len(x_shape) == 4 and len(weight_shape) == 6, lambda: (
        f'{name}: expects input (B, Cin, H, W) and weight (out_h, out_w, Cout, kh, kw, Cin/groups), got '
        f'{tuple(x_shape)} and {tuple(weight_shape)}'))
    out_h, out_w, cout, kh, kw, cg = weight_shape
    _require(min(stride) >= 1 and min(padding) >= 0 and min(dilation) >= 1 and groups >= 1, lambda: (
        f'{name}: invalid stride {list(stride)}, padding {list(padding)}, dilation {list(dilation)} '
        f'or groups {groups}'))
    if groups == 1:
        _require(x_shape[1] == cg, lambda: f'{name}: input has {x_shape[1]} channels, the weight {cg}')
    else:
        _require(x_shape[1] == cg * groups, lambda: (
            f'{name}: input has {x_shape[1]} channels, the weight {cg} per group x {groups} groups'))
        _require(cout % groups == 0, lambda: (
            f'{name}: the weight has {cout} output channels, not divisible by groups={groups}'))
    expected = tuple(conv_output_size(n, k, s, p, d)
                     for n, k, s, p, d in zip(x_shape[2:], (kh, kw), stride, padding, dilation))
    for n, m in zip(expected, (out_h, out_w)):
        _require(n == m, lambda: (
            f'{name}: a {tuple(x_shape[2:])} input with kernel {(kh, kw)}, stride {tuple(stride)}, padding '
            f'{tuple(padding)}' + (f' and dilation {tuple(dilation)}' if tuple(dilation) != (1, 1) else '')
            + f' gives a {expected} output, but the weight has {(out_h, out_w)} locations'))


def _check_tensors(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    _require(a.dtype == b.dtype and a.device == b.device,
                 lambda: f'{name}: tensors on {a.device}/{a.dtype} and {b.device}/{b.dtype}; they must match')


def _check_grad(name: str, grad_out: torch.Tensor, x_shape: Sequence, weight_shape: Sequence) -> None:
    expected = (x_shape[0], weight_shape[2], weight_shape[0], weight_shape[1])  # (B, Cout, out_h, out_w)
    _require(grad_out.dim() == 4, lambda: f'{name}: output gradient of shape {tuple(grad_out.shape)}')
    for n, m in zip(grad_out.shape, expected):
        _require(n == m, lambda: f'{name}: output gradient of shape {tuple(grad_out.shape)}, expected {expected}')


def _forward_checks(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                    dilation: Sequence[int] = (1, 1), groups: int = 1) -> None:
    _check_tensors('lc_forward', x, weight)
    _check_geometry('lc_forward', x.shape, weight.shape, stride, padding, dilation, groups)


def _backward_input_checks(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Sequence[int],
                           stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int] = (1, 1),
                           groups: int = 1) -> tuple:
    """Checks the arguments of lc_backward_input; returns the input's shape (B, Cin, H, W)."""
    _check_tensors('lc_backward_input', grad_out, weight)
    _require(len(input_size) == 2, lambda: f'lc_backward_input: input_size must be a pair, got {input_size}')
    x_shape = (grad_out.shape[0], weight.shape[-1] * groups, *input_size)
    _check_geometry('lc_backward_input', x_shape, weight.shape, stride, padding, dilation, groups)
    _check_grad('lc_backward_input', grad_out, x_shape, weight.shape)
    return x_shape


def _backward_weight_checks(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Sequence[int],
                            stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int] = (1, 1),
                            groups: int = 1) -> tuple:
    """Checks the arguments of lc_backward_weight; returns the weight's shape
    (out_h, out_w, Cout, kh, kw, Cin/groups)."""
    _check_tensors('lc_backward_weight', grad_out, x)
    _require(len(kernel_size) == 2 and grad_out.dim() == 4, lambda: (
        f'lc_backward_weight: kernel_size must be a pair and the gradient 4-d, got {kernel_size}, '
        f'{tuple(grad_out.shape)}'))
    _require(groups >= 1, lambda: f'lc_backward_weight: invalid groups {groups}')
    _require(x.shape[1] % groups == 0, lambda: (
        f'lc_backward_weight: input has {x.shape[1]} channels, not divisible by groups={groups}'))
    weight_shape = (*grad_out.shape[2:], grad_out.shape[1], *kernel_size, x.shape[1] // groups)
    _check_geometry('lc_backward_weight', x.shape, weight_shape, stride, padding, dilation, groups)
    _check_grad('lc_backward_weight', grad_out, x.shape, weight_shape)
    return weight_shape


@torch.library.custom_op('bioconv::lc_forward', mutates_args=())
def lc_forward(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
               dilation: Optional[Sequence[int]] = None, groups: int = 1, backend: str = '') -> torch.Tensor:
    """The LC product without bias, ``torch.ops.bioconv.lc_forward``: (B, Cin, H, W) input and
    (out_h, out_w, Cout, kh, kw, Cin/groups) weight -> (B, Cout, out_h, out_w) in channels-last memory format.
    ``dilation``: a pair, None for (1, 1); ``groups``: as in ``nn.Conv2d`` (output channel block j of a
    location sees input channel block j only). ``backend``: ``'auto'``, ``'native'``, ``'torch'``, or ``''``
    for :func:`bioconv_timm.layers.native.get_backend` when it runs. Differentiable (first order) in ``x``
    and ``weight``."""
    dilation = _dilation(dilation)
    _forward_checks(x, weight, stride, padding, dilation, groups)
    stride, padding, dilation = pair(stride, 'stride'), pair(padding, 'padding'), pair(dilation, 'dilation')
    kernels = _kernels(x, weight.shape[3] * weight.shape[4], backend, x.shape[1], weight.shape[2], groups)
    with _without_autocast(x.device.type):
        return kernels.forward(x, weight, stride, padding, dilation, groups)


@lc_forward.register_fake
def _lc_forward_fake(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                     dilation: Optional[Sequence[int]] = None, groups: int = 1, backend: str = '') -> torch.Tensor:
    _forward_checks(x, weight, stride, padding, _dilation(dilation), groups)
    out_h, out_w, cout = weight.shape[:3]
    return x.new_empty(x.shape[0], out_h, out_w, cout).permute(0, 3, 1, 2)  # channels-last, like the kernels


@torch.library.custom_op('bioconv::lc_backward_input', mutates_args=())
def lc_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Sequence[int],
                      stride: Sequence[int], padding: Sequence[int], dilation: Optional[Sequence[int]] = None,
                      groups: int = 1, backend: str = '') -> torch.Tensor:
    """Input gradient of :func:`lc_forward`: (B, Cout, out_h, out_w) output gradient and the weight ->
    (B, Cin, H, W) channels-last, for an input of spatial size ``input_size`` (H, W)."""
    dilation = _dilation(dilation)
    _backward_input_checks(grad_out, weight, input_size, stride, padding, dilation, groups)
    input_size, stride, padding = pair(input_size, 'input_size'), pair(stride, 'stride'), pair(padding, 'padding')
    dilation = pair(dilation, 'dilation')
    kernels = _kernels(grad_out, weight.shape[3] * weight.shape[4], backend, weight.shape[5] * groups,
                       weight.shape[2], groups)
    with _without_autocast(grad_out.device.type):
        return kernels.backward_input(grad_out, weight, input_size, stride, padding, dilation, groups)


@lc_backward_input.register_fake
def _lc_backward_input_fake(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Sequence[int],
                            stride: Sequence[int], padding: Sequence[int], dilation: Optional[Sequence[int]] = None,
                            groups: int = 1, backend: str = '') -> torch.Tensor:
    b, cin, h, w = _backward_input_checks(grad_out, weight, input_size, stride, padding, _dilation(dilation), groups)
    return grad_out.new_empty(b, h, w, cin).permute(0, 3, 1, 2)


@torch.library.custom_op('bioconv::lc_backward_weight', mutates_args=())
def lc_backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Sequence[int],
                       stride: Sequence[int], padding: Sequence[int], dilation: Optional[Sequence[int]] = None,
                       groups: int = 1, backend: str = '') -> torch.Tensor:
    """Weight gradient of :func:`lc_forward`: (B, Cout, out_h, out_w) output gradient and the (B, Cin, H, W)
    input -> (out_h, out_w, Cout, kh, kw, Cin/groups), contiguous, for a kernel of ``kernel_size`` (kh, kw)."""
    dilation = _dilation(dilation)
    _backward_weight_checks(grad_out, x, kernel_size, stride, padding, dilation, groups)
    kernel_size, stride = pair(kernel_size, 'kernel_size'), pair(stride, 'stride')
    padding, dilation = pair(padding, 'padding'), pair(dilation, 'dilation')
    kernels = _kernels(x, kernel_size[0] * kernel_size[1], backend, x.shape[1], grad_out.shape[1], groups)
    with _without_autocast(x.device.type):
        return kernels.backward_weight(grad_out, x, kernel_size, stride, padding, dilation, groups)


@lc_backward_weight.register_fake
def _lc_backward_weight_fake(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Sequence[int],
                             stride: Sequence[int], padding: Sequence[int], dilation: Optional[Sequence[int]] = None,
                             groups: int = 1, backend: str = '') -> torch.Tensor:
    return x.new_empty(_backward_weight_checks(grad_out, x, kernel_size, stride, padding, _dilation(dilation), groups))


def _lc_forward_setup_context(ctx, inputs, output) -> None:
    x, weight, stride, padding, dilation, groups, backend = inputs
    # Only the input and the weight are kept (no patches); for the native kernels a channels-last input is
    # usually the tensor the previous activation keeps anyway.
    ctx.save_for_backward(x, weight)
    ctx.geometry = (tuple(x.shape[2:]), tuple(weight.shape[3:5]), list(stride), list(padding),
                    None if dilation is None else list(dilation), groups, backend)


def _lc_forward_backward(ctx, grad_out: torch.Tensor):
    x, weight = ctx.saved_tensors
    input_size, kernel_size, stride, padding, dilation, groups, backend = ctx.geometry
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = lc_backward_input(grad_out, weight, list(input_size), stride, padding, dilation, groups, backend)
    if ctx.needs_input_grad[1]:
        grad_w = lc_backward_weight(grad_out, x, list(kernel_size), stride, padding, dilation, groups, backend)
    return grad_x, grad_w, None, None, None, None, None


def _no_double_backward(ctx, *grads):
    raise RuntimeError(DOUBLE_BACKWARD_ERROR)


def _nothing_to_save(ctx, inputs, output) -> None:
    pass


lc_forward.register_autograd(_lc_forward_backward, setup_context=_lc_forward_setup_context)
# The backward ops have no derivative of their own: under create_graph=True their results are correct
# first-order gradients that require grad, and differentiating them raises the clear error instead of
# silently missing the second-order term.
lc_backward_input.register_autograd(_no_double_backward, setup_context=_nothing_to_save)
lc_backward_weight.register_autograd(_no_double_backward, setup_context=_nothing_to_save)
