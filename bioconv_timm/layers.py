"""Locally connected 2d layer: a convolution whose kernel differs at every output location.

Layout (why it is fast): the weight is stored spatial-major, ``(out_h, out_w, out_channels, kernel_h,
kernel_w, in_channels)`` (a channels-last conv kernel per location), so the layer is a batched matrix
product over output locations ``L = out_h * out_w``::

    patches (L, B, kh*kw*Cin)  @  weight(L, Cout, kh*kw*Cin)^T  ->  out (L, B, Cout)

Two backends compute it (:mod:`bioconv_timm.native` chooses; ``BIOCONV_LC_BACKEND=auto|native|torch``):

- **native** (CPU, fp32; the default where a C compiler exists): ``csrc/lc_cpu.c``, register-tiled SIMD
  kernels that read the patches in place from the channels-last activations (a kernel row of a patch is
  one contiguous run), so nothing is ever unfolded or repacked; outputs and gradients are written
  channels-last directly. Only the input is saved for backward.
- **torch** (CUDA, bf16/fp16, or no compiler): the patches are gathered from a batch-innermost padded
  copy of the input a few output rows at a time into one reused buffer (cache-sized on CPU, up to 1 GiB
  on CUDA: :func:`chunk_bytes`), and multiplied with ``torch.bmm``; at most that one buffer of unfolded
  patches exists. Backward re-gathers the patches from the padded input and reuses the same buffer for
  the patch gradients (col2im).

Both give the same results up to fp32 rounding (the summation order differs).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from . import native

IntPair = Union[int, Tuple[int, int], Sequence[int]]

__all__ = ['DOUBLE_BACKWARD_ERROR', 'LocallyConnected2d', 'chunk_bytes', 'conv_output_size', 'locally_connected2d']


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ValueError(f'{name} must be an int or a pair of ints, got {value!r}')
    return pair  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis (same formula as ``nn.Conv2d``)."""
    return (size + 2 * padding - kernel) // stride + 1


def _to_hwcb(x: torch.Tensor, padding: Tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> zero-padded (H + 2ph, W + 2pw, C, B), contiguous ("batch innermost")."""
    b, c, h, w = x.shape
    ph, pw = padding
    x_hwcb = x.permute(2, 3, 1, 0)
    if ph == 0 and pw == 0:
        return x_hwcb.contiguous()
    padded = x.new_zeros(h + 2 * ph, w + 2 * pw, c, b)
    padded[ph:ph + h, pw:pw + w] = x_hwcb
    return padded


def _patch_rows(padded: torch.Tensor, rows: Tuple[int, int], out_w: int, kernel: Tuple[int, int],
                stride: Tuple[int, int]) -> torch.Tensor:
    """Strided view (rows, out_w, kh, kw, C, B) of the patches of output rows [r0, r1).

    With the batch innermost, each (row, column, kernel row) reads one contiguous run of
    kw * C * B values, so the gather is close to a memcpy.
    """
    hp, wp, c, b = padded.shape
    sh, sw, sc, sb = padded.stride()
    r0, r1 = rows
    return padded[r0 * stride[0]:].as_strided(
        (r1 - r0, out_w, kernel[0], kernel[1], c, b),
        (sh * stride[0], sw * stride[1], sh, sw, sc, sb),
    )


# Budget of the torch backend's patch buffer. On CPU, cache sized: the gathered patches are still in cache
# when bmm reads them. On CUDA, large: there a chunk costs its kernel launches and the Python loop around
# them (a 4 MiB budget made 539 forward chunks and ~4,000 col2im launches per lc_resnet18_half step at B=256).
_CPU_CHUNK_BYTES = 4 * 1024 * 1024
_CUDA_CHUNK_BYTES = 1024 * 1024 * 1024
CHUNK_ENV = 'BIOCONV_LC_CHUNK_MIB'


def chunk_bytes(device: Union[torch.device, str]) -> int:
    """Bytes of gathered patches the torch backend forms at a time on ``device``: 4 MiB on CPU; on CUDA
    1 GiB or 1/32 of the GPU's memory, whichever is smaller. ``$BIOCONV_LC_CHUNK_MIB`` overrides both."""
    env = os.environ.get(CHUNK_ENV)
    if env:
        try:
            mib = float(env)
        except ValueError:
            mib = -1.0
        if not mib > 0:
            raise ValueError(f'{CHUNK_ENV} must be a positive number of MiB, got {env!r}; unset it for the default')
        return max(1, int(mib * 2 ** 20))
    device = torch.device(device)
    if device.type == 'cuda':
        return int(min(_CUDA_CHUNK_BYTES, torch.cuda.get_device_properties(device).total_memory // 32))
    return _CPU_CHUNK_BYTES


def _row_chunks(out_h: int, out_w: int, bytes_per_location: int, budget: int = _CPU_CHUNK_BYTES) -> list:
    """Split output rows so that one chunk of patches fits ``budget`` bytes (at least one row a chunk)."""
    rows = max(1, min(out_h, budget // max(1, out_w * bytes_per_location)))
    return [(r, min(r + rows, out_h)) for r in range(0, out_h, rows)]


def _chunk_buffers(like: torch.Tensor, weight_shape: torch.Size, batch: int):
    """Yield (r0, r1, n, buffer) per chunk of output rows; ``buffer`` is a (rows, out_w, kh, kw, C, B)
    view of one reused allocation, and n = rows * out_w locations."""
    out_h, out_w, _, kh, kw, cin = weight_shape
    k = kh * kw * cin
    chunks = _row_chunks(out_h, out_w, batch * k * like.element_size(), chunk_bytes(like.device))
    storage = like.new_empty((chunks[0][1] - chunks[0][0]) * out_w * batch * k)
    for r0, r1 in chunks:
        n = (r1 - r0) * out_w
        yield r0, r1, n, storage[:n * batch * k].view(r1 - r0, out_w, kh, kw, cin, batch)


def _lc_rows(padded: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int]) -> torch.Tensor:
    """Core product: (Hp, Wp, C, B) padded input, (out_h, out_w, Cout, kh, kw, C) weight ->
    (out_h, out_w, Cout, B), one cache-sized chunk of output rows at a time:
    out_chunk (n, Cout, B) = weight_chunk (n, Cout, kh*kw*C) @ patches (n, kh*kw*C, B)."""
    b = padded.shape[-1]
    out_h, out_w, cout, kh, kw, cin = weight.shape
    k = kh * kw * cin
    out = padded.new_empty(out_h, out_w, cout, b)
    for r0, r1, n, patches in _chunk_buffers(padded, weight.shape, b):
        patches.copy_(_patch_rows(padded, (r0, r1), out_w, (kh, kw), stride))
        torch.bmm(weight[r0:r1].reshape(n, cout, k), patches.view(n, k, b), out=out[r0:r1].view(n, cout, b))
    return out


def _col2im_rows(grad_rows: torch.Tensor, weight: torch.Tensor, padded_shape: torch.Size,
                 stride: Tuple[int, int]) -> torch.Tensor:
    """Input gradient for any stride: (out_h, out_w, Cout, B) output gradient -> (Hp, Wp, C, B),
    patch gradients per row chunk, scatter-added (col2im)."""
    out_h, out_w, cout, b = grad_rows.shape
    _, _, _, kh, kw, cin = weight.shape
    k = kh * kw * cin
    grad_padded = grad_rows.new_zeros(padded_shape)
    for r0, r1, n, chunk in _chunk_buffers(grad_rows, weight.shape, b):
        torch.bmm(weight[r0:r1].reshape(n, cout, k).transpose(1, 2), grad_rows[r0:r1].view(n, cout, b),
                  out=chunk.view(n, k, b))
        for u in range(kh):
            rows = slice(r0 * stride[0] + u, (r1 - 1) * stride[0] + u + 1, stride[0])
            for v in range(kw):
                cols = slice(v, v + stride[1] * (out_w - 1) + 1, stride[1])
                grad_padded[rows, cols] += chunk[:, :, u, v]
    return grad_padded


DOUBLE_BACKWARD_ERROR = (
    'LocallyConnected2d has no double backward: a gradient through an LC layer cannot be differentiated again '
    '(create_graph=True, e.g. a gradient penalty or a Hessian-vector product). First-order gradients taken '
    'with create_graph=True are correct; only differentiating them raises this')


class _NoDoubleBackward(torch.autograd.Function):
    """Carries an LC gradient computed under create_graph=True; differentiating it raises (both backends'
    backward run without a graph, so a second-order term would otherwise be silently missing)."""

    @staticmethod
    def forward(ctx, grad, anchor):
        return grad.clone()  # a fresh tensor: a view or input returned here would restrict later in-place ops

    @staticmethod
    def backward(ctx, *unused):
        raise RuntimeError(DOUBLE_BACKWARD_ERROR)


def _mark_first_order(grad: torch.Tensor) -> torch.Tensor:
    # The anchor is a throwaway leaf that makes the marked gradient require grad whatever the inputs do.
    return _NoDoubleBackward.apply(grad, grad.new_zeros(()).requires_grad_())


def _first_order_only(backward):
    """Wrap an LC backward ``(ctx, grad_out) -> (grad_x, grad_w, None, None)``: it runs without a graph, and
    under create_graph=True a gradient that has a second-order dependence is marked so that differentiating
    it raises :data:`DOUBLE_BACKWARD_ERROR` instead of silently missing that term."""

    @functools.wraps(backward)
    def wrapper(ctx, grad_out):
        with torch.no_grad():
            grad_x, grad_w, *rest = backward(ctx, grad_out)
        if torch.is_grad_enabled():  # create_graph=True
            # grad_x = f(grad_out, weight) and grad_w = g(grad_out, x): each is differentiable when one of its
            # factors requires grad.
            x_needs, w_needs = ctx.needs_input_grad[:2]
            if grad_x is not None and (grad_out.requires_grad or w_needs):
                grad_x = _mark_first_order(grad_x)
            if grad_w is not None and (grad_out.requires_grad or x_needs):
                grad_w = _mark_first_order(grad_w)
        return (grad_x, grad_w, *rest)

    return wrapper


class _LocallyConnectedFn(torch.autograd.Function):
    """out[b, o, y, x] = sum_{u, v, i} x_pad[b, i, s*y + u, s*x + v] * w[y, x, o, u, v, i].

    Internally activations are laid out (H, W, C, B). Nothing larger than the input is kept for
    backward (the padded input), which re-gathers the patches chunk by chunk; the input gradient
    is formed chunk by chunk too and scatter-added (col2im) in contiguous (C, B) runs.
    """

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        padded = _to_hwcb(x, padding)
        weight = weight.contiguous()  # backward views its gradient (same layout) per row chunk
        out = _lc_rows(padded, weight, stride)
        ctx.save_for_backward(padded, weight)
        ctx.geometry = (tuple(x.shape), stride, padding)
        # (out_h, out_w, Cout, B) -> (B, Cout, out_h, out_w), channels-last: one output-sized copy.
        return out.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)

    @staticmethod
    @_first_order_only
    def backward(ctx, grad_out):
        padded, weight = ctx.saved_tensors
        (b, c, h, w), stride, (ph, pw) = ctx.geometry
        out_h, out_w, cout, kh, kw, cin = weight.shape
        k = kh * kw * cin
        grad_rows = grad_out.permute(2, 3, 1, 0).contiguous()  # (out_h, out_w, Cout, B)
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(weight)
            for r0, r1, n, patches in _chunk_buffers(padded, weight.shape, b):
                patches.copy_(_patch_rows(padded, (r0, r1), out_w, (kh, kw), stride))
                torch.bmm(grad_rows[r0:r1].view(n, cout, b), patches.view(n, k, b).transpose(1, 2),
                          out=grad_w[r0:r1].view(n, cout, k))
        if ctx.needs_input_grad[0]:
            grad_padded = _col2im_rows(grad_rows, weight, padded.shape, stride)
            grad_x = grad_padded[ph:ph + h, pw:pw + w].permute(3, 2, 0, 1)
            grad_x = grad_x.contiguous(memory_format=torch.channels_last)
        return grad_x, grad_w, None, None


def _native_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this call runs on the native kernels (CPU fp32, backend not 'torch', kernels built)."""
    backend = native.get_backend()
    if backend == 'torch' or x.device.type != 'cpu' or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if weight.shape[3] * weight.shape[4] > native.MAX_TAPS:
        return False
    try:
        native.load()
    except native.NativeBuildError:
        if backend == 'native':
            raise
        native.warn_unavailable_once()
        return False
    return True


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class _NativeLocallyConnectedFn(torch.autograd.Function):
    """The same product on the C kernels of :mod:`bioconv_timm.native` (fp32, CPU).

    Saves the channels-last input (usually the tensor the previous activation keeps anyway) and the weight.
    """

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        lib, threads = native.load(), torch.get_num_threads()
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous()
        b, c, h, w = x.shape
        out_h, out_w, cout, kh, kw, _ = weight.shape
        out = x.new_empty(b, out_h, out_w, cout)
        if lib.lc_forward(x.data_ptr(), weight.data_ptr(), out.data_ptr(), b, h, w, c, *padding,
                          out_h, out_w, cout, kh, kw, stride[0], stride[1], threads) != 0:
            raise MemoryError('LocallyConnected2d: the native forward could not allocate its per-thread '
                              'kernel buffer')
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding)
        return out.permute(0, 3, 1, 2)  # (B, Cout, out_h, out_w), channels-last

    @staticmethod
    @_first_order_only
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.geometry
        lib, vw, threads = native.load(), native.vector_width(), torch.get_num_threads()
        b, c, h, w = x.shape
        out_h, out_w, cout, kh, kw, _ = weight.shape
        geometry = (out_h, out_w, cout, kh, kw, stride[0], stride[1])
        grad = grad_out.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(weight)
            if c % vw == 0:
                lib.lc_backward_weight(x.data_ptr(), grad.data_ptr(), grad_w.data_ptr(), b, h, w, c, *padding,
                                       *geometry, threads)
            else:  # e.g. the RGB stem: vectorize over output channels instead
                cout_padded = _round_up(cout, vw)
                grad_cl = grad.permute(0, 2, 3, 1)  # (B, out_h, out_w, Cout), contiguous
                if cout_padded != cout:
                    grad_cl = torch.nn.functional.pad(grad_cl, (0, cout_padded - cout))
                lib.lc_backward_weight_any(x.data_ptr(), grad_cl.data_ptr(), grad_w.data_ptr(), b, h, w, c,
                                           *padding, out_h, out_w, cout, cout_padded, kh, kw, stride[0],
                                           stride[1], threads)
        if ctx.needs_input_grad[0]:
            if c % vw == 0:
                grad_x = x.new_empty(b, h, w, c)
                lib.lc_backward_input(grad.data_ptr(), weight.data_ptr(), grad_x.data_ptr(), b, h, w, c, *padding,
                                      *geometry, threads)
                grad_x = grad_x.permute(0, 3, 1, 2)
            else:  # channel counts that are not a multiple of the vector width: the torch path's col2im
                ph, pw = padding
                grad_padded = _col2im_rows(grad.permute(2, 3, 1, 0).contiguous(), weight,
                                           torch.Size((h + 2 * ph, w + 2 * pw, c, b)), stride)
                grad_x = grad_padded[ph:ph + h, pw:pw + w].permute(3, 2, 0, 1)
                grad_x = grad_x.contiguous(memory_format=torch.channels_last)
        return grad_x, grad_w, None, None


def locally_connected2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                        stride: IntPair = 1, padding: IntPair = 0) -> torch.Tensor:
    """Functional locally connected layer.

    Runs on the native CPU kernels for fp32 CPU tensors (unless ``BIOCONV_LC_BACKEND=torch`` or
    :func:`bioconv_timm.native.set_backend`), else on the torch backend (CUDA, bf16/fp16 autocast).

    Args:
        x: input, (B, Cin, H, W), NCHW or channels-last.
        weight: (out_h, out_w, Cout, kh, kw, Cin): a channels-last conv kernel per location.
        bias: optional (Cout, out_h, out_w), one bias per output neuron.
    Returns:
        (B, Cout, out_h, out_w), channels-last memory format.
    """
    out_h, out_w, cout, kh, kw, cin = weight.shape
    stride, padding = _pair(stride, 'stride'), _pair(padding, 'padding')
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        # Run in the autocast dtype like nn.Conv2d does; the cast is differentiable, so the fp32
        # master weight still receives fp32 gradients.
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    elif x.dtype != weight.dtype:
        raise TypeError(f'input dtype {x.dtype} does not match weight dtype {weight.dtype}; '
                        'cast one of them or use torch.autocast')
    fn = _NativeLocallyConnectedFn if _native_applies(x, weight) else _LocallyConnectedFn
    with torch.autocast(device_type, enabled=False):
        out = fn.apply(x, weight, stride, padding)
        if bias is not None:
            out = out + bias.unsqueeze(0)
    return out


class LocallyConnected2d(nn.Module):
    """Conv2d semantics with an independent kernel at every output location.

    The input spatial size is fixed at construction (``input_size``); output size follows
    ``nn.Conv2d``: ``(H + 2 * padding - kernel_size) // stride + 1``.

    Args:
        in_channels: input channels Cin.
        out_channels: output channels Cout.
        kernel_size: int or (kh, kw).
        input_size: (H, W) of the input (an int means square).
        stride: int or pair.
        padding: int or pair (zero padding).
        bias: one learnable bias per output neuron, shape (Cout, out_h, out_w).

    Attributes:
        weight: (out_h, out_w, Cout, kh, kw, Cin); location (y, x) holds its own kernel, stored
            like a channels-last conv weight.

    Shapes:
        input (B, Cin, H, W) -> output (B, Cout, out_h, out_w), channels-last memory format.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, input_size: IntPair,
                 stride: IntPair = 1, padding: IntPair = 0, bias: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f'in_channels and out_channels must be positive, got {in_channels}, {out_channels}')
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, 'kernel_size')
        self.input_size = _pair(input_size, 'input_size')
        self.stride = _pair(stride, 'stride')
        self.padding = _pair(padding, 'padding')
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0 or min(self.input_size) < 1:
            raise ValueError(f'invalid LocallyConnected2d geometry: kernel_size={self.kernel_size}, '
                             f'stride={self.stride}, padding={self.padding}, input_size={self.input_size}')
        self.output_size = tuple(
            conv_output_size(n, k, s, p)
            for n, k, s, p in zip(self.input_size, self.kernel_size, self.stride, self.padding))
        if min(self.output_size) < 1:
            raise ValueError(f'input_size={self.input_size} is too small for kernel_size={self.kernel_size} '
                             f'with padding={self.padding}: the output would be empty')
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(
            *self.output_size, self.out_channels, *self.kernel_size, self.in_channels, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_channels, *self.output_size, **factory)) if bias else None
        self.reset_parameters()

    @property
    def num_locations(self) -> int:
        return self.output_size[0] * self.output_size[1]

    def reset_parameters(self) -> None:
        # Kaiming normal, ReLU gain, fan_out (paper appendix B), drawn independently per location.
        fan_out = self.out_channels * self.kernel_size[0] * self.kernel_size[1]
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / fan_out))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_size: IntPair) -> 'LocallyConnected2d':
        """An LC layer that holds ``conv``'s kernel (and bias) at every output location."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f'from_conv expects an nn.Conv2d, got {type(conv).__name__}')
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != 'zeros' or isinstance(conv.padding, str):
            raise ValueError('from_conv supports groups=1, dilation=1, numeric zero padding; got '
                             f'groups={conv.groups}, dilation={conv.dilation}, padding={conv.padding!r}, '
                             f'padding_mode={conv.padding_mode!r}')
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, input_size,
                    stride=conv.stride, padding=conv.padding, bias=conv.bias is not None,
                    device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight.permute(0, 2, 3, 1).expand_as(layer.weight))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias.view(-1, 1, 1).expand_as(layer.bias))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f'LocallyConnected2d expects input (B, {self.in_channels}, {self.input_size[0]}, '
                f'{self.input_size[1]}), got {tuple(x.shape)}. An LC layer has a fixed input size: '
                f'resize the images or rebuild the layer/model with the matching input_size/img_size.')
        return locally_connected2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
             f'input_size={self.input_size}, output_size={self.output_size}, stride={self.stride}')
        if self.padding != (0, 0):
            s += f', padding={self.padding}'
        if self.bias is None:
            s += ', bias=False'
        return s
