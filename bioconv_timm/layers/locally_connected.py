"""Locally connected 2d layer: a convolution whose kernel differs at every output location.

Layout (why it is fast): the weight is stored spatial-major, ``(out_h, out_w, out_channels, kernel_h,
kernel_w, in_channels)`` (a channels-last conv kernel per location), so the layer is a batched matrix
product over output locations ``L = out_h * out_w``::

    patches (L, B, kh*kw*Cin)  @  weight(L, Cout, kh*kw*Cin)^T  ->  out (L, B, Cout)

With ``groups`` g (``nn.Conv2d`` semantics, depthwise when g == Cin) the weight is
``(out_h, out_w, Cout, kh, kw, Cin/g)`` and each location is g such products, one per channel group; with
``dilation`` d, tap (u, v) of output (i, j) reads input (i*s + u*d - p, j*s + v*d - p) as in ``nn.Conv2d``.

Two backends compute it (:mod:`bioconv_timm.layers.native` chooses; ``BIOCONV_LC_BACKEND=auto|native|torch``):

- **native** (CPU, fp32; the default where a C compiler exists; dilation and groups included):
  ``layers/csrc/lc_cpu.c``, register-tiled SIMD kernels that read the patches in place from the
  channels-last activations (a kernel row of a patch is one contiguous run), so nothing is ever unfolded or
  repacked; outputs and gradients are written channels-last directly. Depthwise layers (Cin == Cout ==
  groups) have kernels of their own, vectorized over channels; other grouped layers run the dense kernels
  once per channel group.
- **torch** (CUDA, bf16/fp16, or no compiler): the patches are gathered from a batch-innermost padded copy
  of the input a few output rows at a time into one reused buffer (cache-sized on CPU, up to 1 GiB on CUDA:
  :func:`chunk_bytes`), and multiplied with ``torch.bmm`` (one product per location and channel group); at
  most that one buffer of unfolded patches exists. Backward pads the input again, re-gathers the patches
  from it and reuses the same buffer for the patch gradients (col2im). Depthwise layers take a per-tap path
  instead (one broadcast multiply-add per kernel tap).

Both give the same results up to fp32 rounding (the summation order differs). Only the input and the
weight are saved for backward.

The layer is three ``torch.library`` operators, ``torch.ops.bioconv.lc_forward``, ``lc_backward_input``
and ``lc_backward_weight`` (:func:`lc_forward` and its autograd formula), each with a shape function
(FakeTensor, meta), so ``torch.compile(model, fullgraph=True)`` and ``torch.export.export`` trace an LC model
as one node per layer; the backend is chosen inside the operator when it runs.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from . import native
from ..checks import MAX_CHANNELS, MAX_SIDE, ModelArgError, check_arg, check_device, check_dtype, check_size
from ..checks import param_limit, short_repr

IntPair = Union[int, Tuple[int, int], Sequence[int]]

__all__ = ['DOUBLE_BACKWARD_ERROR', 'LocallyConnected2d', 'chunk_bytes', 'conv_output_size', 'lc_backward_input',
           'lc_backward_weight', 'lc_forward', 'locally_connected2d', 'resolve_backend']


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    else:
        try:
            pair = tuple(int(v) for v in value)
        except (TypeError, ValueError):  # 'same', None, a float string: name the argument, not int()'s complaint
            pair = ()
        if len(pair) != 2:
            raise ModelArgError(f'{name} must be an int or a pair of ints, got {short_repr(value)}')
    return pair  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a convolution along one axis (same formula as ``nn.Conv2d``):
    ``(size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _hwcb(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> contiguous (H, W, C, B) ("batch innermost")."""
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):
        # Channels-last (B, H*W*C) -> (H*W*C, B) is one 2-d transpose, which torch copies in cache blocks:
        # about 3x faster on CPU than the same permutation as a 4-d strided copy.
        return x.permute(0, 2, 3, 1).reshape(b, h * w * c).t().contiguous().view(h, w, c, b)
    return x.permute(2, 3, 1, 0).contiguous()


def _from_hwcb(t: torch.Tensor) -> torch.Tensor:
    """(H, W, C, B), any strides -> a new (B, C, H, W) tensor in channels-last memory format."""
    h, w, c, b = t.shape
    # contiguous() first (a plain copy, or nothing) so that the layout change is one 2-d transpose (see _hwcb)
    out = t.contiguous().view(h * w * c, b).t().contiguous()
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


def _to_hwcb(x: torch.Tensor, padding: Tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> zero-padded (H + 2ph, W + 2pw, C, B), contiguous ("batch innermost")."""
    b, c, h, w = x.shape
    ph, pw = padding
    x_hwcb = _hwcb(x)
    if ph == 0 and pw == 0:
        return x_hwcb
    padded = x.new_zeros(h + 2 * ph, w + 2 * pw, c, b)
    padded[ph:ph + h, pw:pw + w] = x_hwcb
    return padded


def _patch_rows(padded: torch.Tensor, rows: Tuple[int, int], out_w: int, kernel: Tuple[int, int],
                stride: Tuple[int, int], dilation: Tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """Strided view (rows, out_w, groups, kh, kw, C // groups, B) of the patches of output rows [r0, r1):
    tap (u, v) of output (i, j) reads padded input row ``i * stride_h + u * dilation_h`` and column
    ``j * stride_w + v * dilation_w``; the channels are split into ``groups`` consecutive blocks.

    With the batch innermost and groups=1, dilation=1, each (row, column, kernel row) reads one
    contiguous run of kw * C * B values, so the gather is close to a memcpy (the size-1 group dim
    costs nothing); with groups or dilation the runs are (C // groups) * B values.
    """
    hp, wp, c, b = padded.shape
    sh, sw, sc, sb = padded.stride()
    r0, r1 = rows
    cg = c // groups
    return padded[r0 * stride[0]:].as_strided(
        (r1 - r0, out_w, groups, kernel[0], kernel[1], cg, b),
        (sh * stride[0], sw * stride[1], sc * cg, sh * dilation[0], sw * dilation[1], sc, sb),
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


def _chunk_buffers(like: torch.Tensor, weight_shape: torch.Size, batch: int, groups: int = 1):
    """Yield (r0, r1, n, buffer) per chunk of output rows; ``buffer`` is a
    (rows, out_w, groups, kh, kw, Cin // groups, B) view of one reused allocation, and n = rows * out_w
    locations. ``weight_shape`` is (out_h, out_w, Cout, kh, kw, Cin // groups)."""
    out_h, out_w, _, kh, kw, cg = weight_shape
    k = kh * kw * cg
    chunks = _row_chunks(out_h, out_w, groups * batch * k * like.element_size(), chunk_bytes(like.device))
    storage = like.new_empty((chunks[0][1] - chunks[0][0]) * out_w * groups * batch * k)
    for r0, r1 in chunks:
        n = (r1 - r0) * out_w
        yield r0, r1, n, storage[:n * groups * batch * k].view(r1 - r0, out_w, groups, kh, kw, cg, batch)


def _lc_rows(padded: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int],
             dilation: Tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """Core product: (Hp, Wp, C, B) padded input, (out_h, out_w, Cout, kh, kw, C/g) weight ->
    (out_h, out_w, Cout, B), one cache-sized chunk of output rows at a time, each group g of a location
    one matrix product (with groups=1, one per location):
    out_chunk (n*g, Cout/g, B) = weight_chunk (n*g, Cout/g, kh*kw*C/g) @ patches (n*g, kh*kw*C/g, B)."""
    b = padded.shape[-1]
    out_h, out_w, cout, kh, kw, cg = weight.shape
    k, og = kh * kw * cg, cout // groups
    out = padded.new_empty(out_h, out_w, cout, b)
    for r0, r1, n, patches in _chunk_buffers(padded, weight.shape, b, groups):
        patches.copy_(_patch_rows(padded, (r0, r1), out_w, (kh, kw), stride, dilation, groups))
        torch.bmm(weight[r0:r1].reshape(n * groups, og, k), patches.view(n * groups, k, b),
                  out=out[r0:r1].view(n * groups, og, b))
    return out


def _col2im_rows(grad_rows: torch.Tensor, weight: torch.Tensor, padded_shape: torch.Size,
                 stride: Tuple[int, int], dilation: Tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """Input gradient for any stride: (out_h, out_w, Cout, B) output gradient -> (Hp, Wp, C, B),
    patch gradients per row chunk, scatter-added (col2im)."""
    out_h, out_w, cout, b = grad_rows.shape
    _, _, _, kh, kw, cg = weight.shape
    k, og = kh * kw * cg, cout // groups
    grad_padded = grad_rows.new_zeros(padded_shape)
    for r0, r1, n, chunk in _chunk_buffers(grad_rows, weight.shape, b, groups):
        torch.bmm(weight[r0:r1].reshape(n * groups, og, k).transpose(1, 2),
                  grad_rows[r0:r1].view(n * groups, og, b), out=chunk.view(n * groups, k, b))
        for u in range(kh):
            row0 = r0 * stride[0] + u * dilation[0]
            rows = slice(row0, row0 + (r1 - r0 - 1) * stride[0] + 1, stride[0])
            for v in range(kw):
                col0 = v * dilation[1]
                cols = slice(col0, col0 + stride[1] * (out_w - 1) + 1, stride[1])
                # (rows, out_w, C, B) viewed as (rows, out_w, groups, C/g, B), like the chunk's tap (u, v)
                grad_padded[rows, cols].unflatten(2, (groups, cg)).add_(chunk[:, :, :, u, v])
    return grad_padded


def _tap_view(padded: torch.Tensor, tap: Tuple[int, int], out_size: Tuple[int, int], stride: Tuple[int, int],
              dilation: Tuple[int, int]) -> torch.Tensor:
    """(out_h, out_w, C, B) strided view of what kernel tap (u, v) reads for every output location."""
    (u, v), (out_h, out_w) = tap, out_size
    r0, c0 = u * dilation[0], v * dilation[1]
    return padded[r0:r0 + stride[0] * (out_h - 1) + 1:stride[0], c0:c0 + stride[1] * (out_w - 1) + 1:stride[1]]


# Depthwise layers (one input channel per group): each location's product is k*k scalar multiply-adds per
# channel, which as batched matrix products is thousands of tiny bmm calls (7-17x a conv's time). Instead the
# torch backend runs one broadcast multiply-add per kernel tap over all locations, channels and the batch.

def _depthwise_rows(padded: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int],
                    dilation: Tuple[int, int]) -> torch.Tensor:
    """Depthwise forward: (Hp, Wp, C, B), (out_h, out_w, C*m, kh, kw, 1) -> (out_h, out_w, C*m, B)."""
    c, b = padded.shape[2:]
    out_h, out_w, cout, kh, kw, _ = weight.shape
    m = cout // c
    out = padded.new_zeros(out_h, out_w, c, m, b)
    for u in range(kh):
        for v in range(kw):
            x = _tap_view(padded, (u, v), (out_h, out_w), stride, dilation).unsqueeze(3)  # (oh, ow, C, 1, B)
            out.addcmul_(weight[:, :, :, u, v, 0].reshape(out_h, out_w, c, m, 1), x)
    return out.view(out_h, out_w, cout, b)


def _depthwise_grad_input(grad_rows: torch.Tensor, weight: torch.Tensor, padded_shape: torch.Size,
                          stride: Tuple[int, int], dilation: Tuple[int, int]) -> torch.Tensor:
    """Depthwise input gradient: (out_h, out_w, C*m, B) -> (Hp, Wp, C, B)."""
    out_h, out_w, cout, b = grad_rows.shape
    _, _, _, kh, kw, _ = weight.shape
    c = padded_shape[2]
    m = cout // c
    grad = grad_rows.view(out_h, out_w, c, m, b)
    grad_padded = grad_rows.new_zeros(padded_shape)
    for u in range(kh):
        for v in range(kw):
            w = weight[:, :, :, u, v, 0].reshape(out_h, out_w, c, m, 1)
            tap_grad = (grad * w).sum(3) if m > 1 else grad[:, :, :, 0] * w[:, :, :, 0]
            _tap_view(grad_padded, (u, v), (out_h, out_w), stride, dilation).add_(tap_grad)
    return grad_padded


def _depthwise_grad_weight(grad_rows: torch.Tensor, padded: torch.Tensor, kernel_size: Tuple[int, int],
                           stride: Tuple[int, int], dilation: Tuple[int, int]) -> torch.Tensor:
    """Depthwise weight gradient: (out_h, out_w, C*m, B), (Hp, Wp, C, B) -> (out_h, out_w, C*m, kh, kw, 1)."""
    out_h, out_w, cout, b = grad_rows.shape
    c = padded.shape[2]
    m = cout // c
    grad = grad_rows.view(out_h, out_w, c, m, b)
    grad_w = grad_rows.new_empty(out_h, out_w, cout, kernel_size[0], kernel_size[1], 1)
    for u in range(kernel_size[0]):
        for v in range(kernel_size[1]):
            x = _tap_view(padded, (u, v), (out_h, out_w), stride, dilation).unsqueeze(3)  # (oh, ow, C, 1, B)
            grad_w[:, :, :, u, v, 0] = torch.linalg.vecdot(grad, x).view(out_h, out_w, cout)
    return grad_w


def _is_depthwise(weight: torch.Tensor, groups: int) -> bool:
    return groups > 1 and weight.shape[5] == 1


DOUBLE_BACKWARD_ERROR = (
    'LocallyConnected2d has no double backward: a gradient through an LC layer cannot be differentiated again '
    '(create_graph=True, e.g. a gradient penalty or a Hessian-vector product). First-order gradients taken '
    'with create_graph=True are correct; only differentiating them raises this')


# --- the two backends: plain tensor functions without autograd (the operators below carry it) ---------------

def _torch_forward(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
                   dilation: Tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """(B, Cin, H, W) any layout, (out_h, out_w, Cout, kh, kw, Cin/groups) -> (B, Cout, out_h, out_w)
    channels-last."""
    weight = weight.contiguous()  # the row chunks are views of it
    if _is_depthwise(weight, groups):
        return _from_hwcb(_depthwise_rows(_to_hwcb(x, padding), weight, stride, dilation))
    out = _lc_rows(_to_hwcb(x, padding), weight, stride, dilation, groups)  # (out_h, out_w, Cout, B)
    return _from_hwcb(out)


def _torch_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                          stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                          groups: int = 1) -> torch.Tensor:
    """(B, Cout, out_h, out_w) output gradient -> (B, Cin, H, W) channels-last input gradient: the patch
    gradients of a few output rows at a time, scatter-added (col2im) into the padded input's gradient."""
    (h, w), (ph, pw) = input_size, padding
    b, cin = grad_out.shape[0], weight.shape[5] * groups
    grad_rows = _hwcb(grad_out)  # (out_h, out_w, Cout, B)
    padded_shape = torch.Size((h + 2 * ph, w + 2 * pw, cin, b))
    if _is_depthwise(weight, groups):
        grad_padded = _depthwise_grad_input(grad_rows, weight, padded_shape, stride, dilation)
    else:
        grad_padded = _col2im_rows(grad_rows, weight.contiguous(), padded_shape, stride, dilation, groups)
    return _from_hwcb(grad_padded[ph:ph + h, pw:pw + w])


def _torch_backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Tuple[int, int],
                           stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                           groups: int = 1) -> torch.Tensor:
    """(B, Cout, out_h, out_w) output gradient, (B, Cin, H, W) input -> (out_h, out_w, Cout, kh, kw, Cin/groups)
    weight gradient, re-gathering the patches chunk by chunk from the padded input."""
    b, cout, out_h, out_w = grad_out.shape
    (kh, kw), cg = kernel_size, x.shape[1] // groups
    k, og = kh * kw * cg, cout // groups
    padded = _to_hwcb(x, padding)
    grad_rows = _hwcb(grad_out)  # (out_h, out_w, Cout, B)
    if cg == 1 and groups > 1:
        return _depthwise_grad_weight(grad_rows, padded, kernel_size, stride, dilation)
    grad_w = grad_out.new_empty(out_h, out_w, cout, kh, kw, cg)
    for r0, r1, n, patches in _chunk_buffers(padded, grad_w.shape, b, groups):
        patches.copy_(_patch_rows(padded, (r0, r1), out_w, (kh, kw), stride, dilation, groups))
        torch.bmm(grad_rows[r0:r1].view(n * groups, og, b), patches.view(n * groups, k, b).transpose(1, 2),
                  out=grad_w[r0:r1].view(n * groups, og, k))
    return grad_w


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _native_forward(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
                    dilation: Tuple[int, int] = (1, 1)) -> torch.Tensor:
    """The forward on the C kernels (CPU, fp32): written channels-last directly, (B, Cout, out_h, out_w)."""
    lib, threads = native.load(), torch.get_num_threads()
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.contiguous()
    b, c, h, w = x.shape
    out_h, out_w, cout, kh, kw, _ = weight.shape
    out = x.new_empty(b, out_h, out_w, cout)
    if lib.lc_forward(x.data_ptr(), weight.data_ptr(), out.data_ptr(), b, h, w, c, *padding,
                      out_h, out_w, cout, kh, kw, *stride, *dilation, threads) != 0:
        raise MemoryError('LocallyConnected2d: the native forward could not allocate its per-thread '
                          'kernel buffer')
    return out.permute(0, 3, 1, 2)


def _native_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                           stride: Tuple[int, int], padding: Tuple[int, int],
                           dilation: Tuple[int, int] = (1, 1)) -> torch.Tensor:
    """The input gradient on the C kernels, (B, Cin, H, W) channels-last."""
    lib, vw, threads = native.load(), native.vector_width(), torch.get_num_threads()
    out_h, out_w, cout, kh, kw, c = weight.shape
    if c % vw != 0:  # channel counts that are not a multiple of the vector width: the torch backend's col2im
        return _torch_backward_input(grad_out, weight, input_size, stride, padding, dilation)
    weight = weight.contiguous()
    grad = grad_out.contiguous(memory_format=torch.channels_last)
    b, (h, w) = grad.shape[0], input_size
    grad_x = grad.new_empty(b, h, w, c)
    lib.lc_backward_input(grad.data_ptr(), weight.data_ptr(), grad_x.data_ptr(), b, h, w, c, *padding,
                          out_h, out_w, cout, kh, kw, *stride, *dilation, threads)
    return grad_x.permute(0, 3, 1, 2)


def _native_backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Tuple[int, int],
                            stride: Tuple[int, int], padding: Tuple[int, int],
                            dilation: Tuple[int, int] = (1, 1)) -> torch.Tensor:
    """The weight gradient on the C kernels, (out_h, out_w, Cout, kh, kw, Cin)."""
    lib, vw, threads = native.load(), native.vector_width(), torch.get_num_threads()
    x = x.contiguous(memory_format=torch.channels_last)  # a no-op for the activations of an LC model
    grad = grad_out.contiguous(memory_format=torch.channels_last)
    b, c, h, w = x.shape
    _, cout, out_h, out_w = grad.shape
    kh, kw = kernel_size
    grad_w = x.new_empty(out_h, out_w, cout, kh, kw, c)
    if c % vw == 0:
        lib.lc_backward_weight(x.data_ptr(), grad.data_ptr(), grad_w.data_ptr(), b, h, w, c, *padding,
                               out_h, out_w, cout, kh, kw, *stride, *dilation, threads)
    else:  # e.g. the RGB stem: vectorize over output channels instead
        cout_padded = _round_up(cout, vw)
        grad_cl = grad.permute(0, 2, 3, 1)  # (B, out_h, out_w, Cout), contiguous
        if cout_padded != cout:
            grad_cl = torch.nn.functional.pad(grad_cl, (0, cout_padded - cout))
        lib.lc_backward_weight_any(x.data_ptr(), grad_cl.data_ptr(), grad_w.data_ptr(), b, h, w, c, *padding,
                                   out_h, out_w, cout, cout_padded, kh, kw, *stride, *dilation, threads)
    return grad_w


def _depthwise_taps(weight: torch.Tensor) -> torch.Tensor:
    """(out_h, out_w, C, kh, kw, 1) depthwise weight -> (out_h, out_w, kh, kw, C), the native kernels' layout."""
    return weight[..., 0].permute(0, 1, 3, 4, 2).contiguous()


def _native_depthwise_forward(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int],
                              padding: Tuple[int, int], dilation: Tuple[int, int]) -> torch.Tensor:
    """Depthwise forward (Cout == Cin == groups) on the C kernels, (B, C, out_h, out_w) channels-last."""
    lib, threads = native.load(), torch.get_num_threads()
    x = x.contiguous(memory_format=torch.channels_last)
    b, c, h, w = x.shape
    out_h, out_w, _, kh, kw, _ = weight.shape
    taps = _depthwise_taps(weight)
    out = x.new_empty(b, out_h, out_w, c)
    lib.lc_dw_forward(x.data_ptr(), taps.data_ptr(), out.data_ptr(), b, h, w, c, *padding, out_h, out_w, kh, kw,
                      *stride, *dilation, threads)
    return out.permute(0, 3, 1, 2)


def _native_depthwise_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                                     stride: Tuple[int, int], padding: Tuple[int, int],
                                     dilation: Tuple[int, int]) -> torch.Tensor:
    """Depthwise input gradient on the C kernels, (B, C, H, W) channels-last."""
    lib, threads = native.load(), torch.get_num_threads()
    grad = grad_out.contiguous(memory_format=torch.channels_last)
    out_h, out_w, c, kh, kw, _ = weight.shape
    b, (h, w) = grad.shape[0], input_size
    taps = _depthwise_taps(weight)
    grad_x = grad.new_empty(b, h, w, c)
    lib.lc_dw_backward_input(grad.data_ptr(), taps.data_ptr(), grad_x.data_ptr(), b, h, w, c, *padding, out_h,
                             out_w, kh, kw, *stride, *dilation, threads)
    return grad_x.permute(0, 3, 1, 2)


def _native_depthwise_backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Tuple[int, int],
                                      stride: Tuple[int, int], padding: Tuple[int, int],
                                      dilation: Tuple[int, int]) -> torch.Tensor:
    """Depthwise weight gradient on the C kernels, (out_h, out_w, C, kh, kw, 1)."""
    lib, threads = native.load(), torch.get_num_threads()
    x = x.contiguous(memory_format=torch.channels_last)
    grad = grad_out.contiguous(memory_format=torch.channels_last)
    b, c, h, w = x.shape
    out_h, out_w = grad.shape[2:]
    kh, kw = kernel_size
    grad_taps = x.new_empty(out_h, out_w, kh, kw, c)
    lib.lc_dw_backward_weight(x.data_ptr(), grad.data_ptr(), grad_taps.data_ptr(), b, h, w, c, *padding, out_h,
                              out_w, kh, kw, *stride, *dilation, threads)
    return grad_taps.permute(0, 1, 4, 2, 3).unsqueeze(-1).contiguous()


# Grouped layers that are not plain depthwise ones (1 < groups < Cin, or a channel multiplier) run the dense
# kernels once per channel group, on copies of that group's channels: no kernel of their own to maintain.

def _group_slices(channels: int, groups: int) -> list:
    size = channels // groups
    return [slice(g * size, (g + 1) * size) for g in range(groups)]


def _native_grouped_forward(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
                            dilation: Tuple[int, int], groups: int) -> torch.Tensor:
    outs = [_native_forward(x[:, cin], weight[:, :, cout], stride, padding, dilation)
            for cin, cout in zip(_group_slices(x.shape[1], groups), _group_slices(weight.shape[2], groups))]
    return torch.cat(outs, 1).contiguous(memory_format=torch.channels_last)


def _native_grouped_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                                   stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
                                   groups: int) -> torch.Tensor:
    grads = [_native_backward_input(grad_out[:, cout], weight[:, :, cout], input_size, stride, padding, dilation)
             for cout in _group_slices(weight.shape[2], groups)]
    return torch.cat(grads, 1).contiguous(memory_format=torch.channels_last)


def _native_grouped_backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Tuple[int, int],
                                    stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
                                    groups: int) -> torch.Tensor:
    grads = [_native_backward_weight(grad_out[:, cout], x[:, cin], kernel_size, stride, padding, dilation)
             for cin, cout in zip(_group_slices(x.shape[1], groups), _group_slices(grad_out.shape[1], groups))]
    return torch.cat(grads, 2)


def _native_kind(cin: int, cout: int, groups: int) -> str:
    """Which native kernels compute a layer: ``'dense'`` (groups=1), ``'depthwise'`` (Cin == Cout == groups),
    else ``'grouped'`` (the dense kernels once per channel group)."""
    if groups == 1:
        return 'dense'
    return 'depthwise' if cin == cout == groups else 'grouped'


def _resolve(t: torch.Tensor, taps: int, backend: str) -> str:
    backend = native._check_backend(backend) if backend else native.get_backend()
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
    ``backend`` is requested (``'auto'``, ``'native'``, ``'torch'``; ``''``: :func:`bioconv_timm.layers.native.get_backend`):
    native for CPU fp32 where the kernels build (``'native'`` raises
    :class:`~bioconv_timm.layers.native.NativeBuildError` if they do not) and the kernel has at most
    ``native.MAX_TAPS`` taps, else torch. Grouped and dilated layers included."""
    if weight.dtype != x.dtype:
        return 'torch'
    return _resolve(x, weight.shape[3] * weight.shape[4], backend)


# --- the operators: bioconv::lc_forward and the two halves of its backward ----------------------------------
# Registered with torch.library so that torch.compile, torch.export and FakeTensor/meta tracing see one
# operator with known output shapes instead of a ctypes call on data pointers. Each one dispatches to the
# native kernels or the torch backend when it runs, for its ``backend`` argument: 'auto', 'native', 'torch',
# or '' for the process's choice at run time (native.get_backend()). The backward ops get the forward's, so
# a backward outside a use_backend block runs on the backend its forward ran on.

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
    stride, padding, dilation = _pair(stride, 'stride'), _pair(padding, 'padding'), _pair(dilation, 'dilation')
    with _without_autocast(x.device.type):
        if resolve_backend(x, weight, backend) == 'native':
            kind = _native_kind(x.shape[1], weight.shape[2], groups)
            if kind == 'dense':
                return _native_forward(x, weight, stride, padding, dilation)
            if kind == 'depthwise':
                return _native_depthwise_forward(x, weight, stride, padding, dilation)
            return _native_grouped_forward(x, weight, stride, padding, dilation, groups)
        return _torch_forward(x, weight, stride, padding, dilation, groups)


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
    input_size, stride, padding = _pair(input_size, 'input_size'), _pair(stride, 'stride'), _pair(padding, 'padding')
    dilation = _pair(dilation, 'dilation')
    with _without_autocast(grad_out.device.type):
        if resolve_backend(grad_out, weight, backend) == 'native':
            kind = _native_kind(weight.shape[5] * groups, weight.shape[2], groups)
            if kind == 'dense':
                return _native_backward_input(grad_out, weight, input_size, stride, padding, dilation)
            if kind == 'depthwise':
                return _native_depthwise_backward_input(grad_out, weight, input_size, stride, padding, dilation)
            return _native_grouped_backward_input(grad_out, weight, input_size, stride, padding, dilation, groups)
        return _torch_backward_input(grad_out, weight, input_size, stride, padding, dilation, groups)


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
    kernel_size, stride = _pair(kernel_size, 'kernel_size'), _pair(stride, 'stride')
    padding, dilation = _pair(padding, 'padding'), _pair(dilation, 'dilation')
    with _without_autocast(x.device.type):
        if _resolve(x, kernel_size[0] * kernel_size[1], backend) == 'native':
            kind = _native_kind(x.shape[1], grad_out.shape[1], groups)
            if kind == 'dense':
                return _native_backward_weight(grad_out, x, kernel_size, stride, padding, dilation)
            if kind == 'depthwise':
                return _native_depthwise_backward_weight(grad_out, x, kernel_size, stride, padding, dilation)
            return _native_grouped_backward_weight(grad_out, x, kernel_size, stride, padding, dilation, groups)
        return _torch_backward_weight(grad_out, x, kernel_size, stride, padding, dilation, groups)


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


def locally_connected2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                        stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                        groups: int = 1) -> torch.Tensor:
    """Functional locally connected layer, on the operator ``torch.ops.bioconv.lc_forward`` (so it runs under
    ``torch.compile(fullgraph=True)``, ``torch.export`` and on meta tensors).

    Runs on the native CPU kernels for fp32 CPU tensors (unless ``BIOCONV_LC_BACKEND=torch`` or
    :func:`bioconv_timm.layers.native.set_backend`), else on the torch backend (CUDA, bf16/fp16 autocast,
    grouped layers).

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
    stride, padding, dilation = _pair(stride, 'stride'), _pair(padding, 'padding'), _pair(dilation, 'dilation')
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
        out = lc_forward(x, weight, list(stride), list(padding), list(dilation), int(groups), native._chosen_backend())
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
            is depthwise. Grouped layers run on the torch backend (the native kernels have no groups;
            :func:`resolve_backend`).
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
