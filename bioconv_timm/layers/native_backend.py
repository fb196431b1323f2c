"""The LC layer's native backend: ctypes wrappers of the C kernels (``csrc/lc_cpu.c``, built by
:mod:`bioconv_timm.layers.native`) for CPU fp32 tensors.

The kernels read the patches in place from the channels-last activations (a kernel row of a patch is one
contiguous run), so nothing is unfolded or repacked, and write outputs and gradients channels-last directly.
Plain tensor functions without autograd; which one runs for which layer is
:data:`~bioconv_timm.layers.ops.KERNELS`. Every kernel function takes ``(..., stride, padding, dilation,
groups)``, pairs of ints and the group count.
"""
from __future__ import annotations

from typing import Tuple

import torch

from . import native

__all__ = ['backward_input', 'backward_weight', 'depthwise_backward_input', 'depthwise_backward_weight',
           'depthwise_forward', 'forward', 'grouped_backward_input', 'grouped_backward_weight', 'grouped_forward']


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def forward(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
            dilation: Tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """register-tiled SIMD kernels (the input gradient gathered per input pixel, or scattered per location
    when Cin is not a multiple of the vector width).

    The forward on the C kernels (CPU, fp32): written channels-last directly, (B, Cout, out_h, out_w)."""
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


def backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                   stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                   groups: int = 1) -> torch.Tensor:
    """The input gradient on the C kernels, (B, Cin, H, W) channels-last."""
    lib, vw, threads = native.load(), native.vector_width(), torch.get_num_threads()
    out_h, out_w, cout, kh, kw, c = weight.shape
    weight = weight.contiguous()
    grad = grad_out.contiguous(memory_format=torch.channels_last)
    b, (h, w) = grad.shape[0], input_size
    grad_x = grad.new_empty(b, h, w, c)
    args = (grad.data_ptr(), weight.data_ptr(), grad_x.data_ptr(), b, h, w, c, *padding, out_h, out_w, cout, kh,
            kw, *stride, *dilation, threads)
    if c % vw == 0:  # gathered per input pixel, a tile of channel vectors
        lib.lc_backward_input(*args)
    elif lib.lc_backward_input_any(*args) != 0:  # any C (the RGB stem): scattered per location
        raise MemoryError('LocallyConnected2d: the native input gradient could not allocate its per-thread '
                          'patch buffer')
    return grad_x.permute(0, 3, 1, 2)


def backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Tuple[int, int],
                    stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                    groups: int = 1) -> torch.Tensor:
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


def _has_multiplier(out_channels: int, groups: int) -> bool:
    """A depthwise layer (groups == Cin) with more than one output channel per group: no kernel of its own."""
    return out_channels != groups


def _depthwise_taps(weight: torch.Tensor) -> torch.Tensor:
    """(out_h, out_w, C, kh, kw, 1) depthwise weight -> (out_h, out_w, kh, kw, C), the native kernels' layout."""
    return weight[..., 0].permute(0, 1, 3, 4, 2).contiguous()


def depthwise_forward(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
                      dilation: Tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """kernels of their own, vectorized over channels (with a channel multiplier: the dense kernels once per
    channel group).

    Depthwise forward (Cout == Cin == groups) on the C kernels, (B, C, out_h, out_w) channels-last."""
    if _has_multiplier(weight.shape[2], groups):
        return grouped_forward(x, weight, stride, padding, dilation, groups)
    lib, threads = native.load(), torch.get_num_threads()
    x = x.contiguous(memory_format=torch.channels_last)
    b, c, h, w = x.shape
    out_h, out_w, _, kh, kw, _ = weight.shape
    taps = _depthwise_taps(weight)
    out = x.new_empty(b, out_h, out_w, c)
    lib.lc_dw_forward(x.data_ptr(), taps.data_ptr(), out.data_ptr(), b, h, w, c, *padding, out_h, out_w, kh, kw,
                      *stride, *dilation, threads)
    return out.permute(0, 3, 1, 2)


def depthwise_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                             stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                             groups: int = 1) -> torch.Tensor:
    """Depthwise input gradient on the C kernels, (B, C, H, W) channels-last."""
    if _has_multiplier(weight.shape[2], groups):
        return grouped_backward_input(grad_out, weight, input_size, stride, padding, dilation, groups)
    lib, threads = native.load(), torch.get_num_threads()
    grad = grad_out.contiguous(memory_format=torch.channels_last)
    out_h, out_w, c, kh, kw, _ = weight.shape
    b, (h, w) = grad.shape[0], input_size
    taps = _depthwise_taps(weight)
    grad_x = grad.new_empty(b, h, w, c)
    lib.lc_dw_backward_input(grad.data_ptr(), taps.data_ptr(), grad_x.data_ptr(), b, h, w, c, *padding, out_h,
                             out_w, kh, kw, *stride, *dilation, threads)
    return grad_x.permute(0, 3, 1, 2)


def depthwise_backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Tuple[int, int],
                              stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                              groups: int = 1) -> torch.Tensor:
    """Depthwise weight gradient on the C kernels, (out_h, out_w, C, kh, kw, 1)."""
    if _has_multiplier(grad_out.shape[1], groups):
        return grouped_backward_weight(grad_out, x, kernel_size, stride, padding, dilation, groups)
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


def grouped_forward(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
                    dilation: Tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """the dense kernels once per channel group, on copies of that group's channels."""
    outs = [forward(x[:, cin], weight[:, :, cout], stride, padding, dilation)
            for cin, cout in zip(_group_slices(x.shape[1], groups), _group_slices(weight.shape[2], groups))]
    return torch.cat(outs, 1).contiguous(memory_format=torch.channels_last)


def grouped_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                           stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                           groups: int = 1) -> torch.Tensor:
    """The input gradient, one channel group at a time (:func:`backward_input`)."""
    grads = [backward_input(grad_out[:, cout], weight[:, :, cout], input_size, stride, padding, dilation)
             for cout in _group_slices(weight.shape[2], groups)]
    return torch.cat(grads, 1).contiguous(memory_format=torch.channels_last)


def grouped_backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Tuple[int, int],
                            stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                            groups: int = 1) -> torch.Tensor:
    """The weight gradient, one channel group at a time (:func:`backward_weight`)."""
    grads = [backward_weight(grad_out[:, cout], x[:, cin], kernel_size, stride, padding, dilation)
             for cin, cout in zip(_group_slices(x.shape[1], groups), _group_slices(grad_out.shape[1], groups))]
    return torch.cat(grads, 2)
