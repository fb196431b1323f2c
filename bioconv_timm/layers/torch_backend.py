"""The LC layer's torch backend: what CUDA, bf16/fp16 autocast and machines without a C compiler run.

The patches are gathered from a batch-innermost padded copy of the input, ``(H, W, C, B)``, a few output rows
at a time into one reused buffer (cache-sized on CPU, up to 1 GiB on CUDA: :func:`chunk_bytes`), and multiplied
with ``torch.bmm`` (one product per location and channel group); at most that one buffer of unfolded patches
exists. Backward pads the input again, re-gathers the patches from it and reuses the same buffer for the patch
gradients (col2im). Depthwise layers take a per-tap path instead (one broadcast multiply-add per kernel tap).

Plain tensor functions without autograd; which one runs for which layer is :data:`~bioconv_timm.layers.ops.KERNELS`.
Every kernel function takes ``(..., stride, padding, dilation, groups)`` pairs of ints.
"""
from __future__ import annotations

import os
from typing import Tuple, Union

import torch

__all__ = ['CHUNK_ENV', 'backward_input', 'backward_weight', 'chunk_bytes', 'depthwise_backward_input',
           'depthwise_backward_weight', 'depthwise_forward', 'forward', 'row_chunks']


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


def row_chunks(out_h: int, out_w: int, bytes_per_location: int, budget: int = _CPU_CHUNK_BYTES) -> list:
    """Split output rows so that one chunk of patches fits ``budget`` bytes (at least one row a chunk)."""
    rows = max(1, min(out_h, budget // max(1, out_w * bytes_per_location)))
    return [(r, min(r + rows, out_h)) for r in range(0, out_h, rows)]


def _chunk_buffers(like: torch.Tensor, weight_shape: torch.Size, batch: int, groups: int = 1):
    """Yield (r0, r1, n, buffer) per chunk of output rows; ``buffer`` is a
    (rows, out_w, groups, kh, kw, Cin // groups, B) view of one reused allocation, and n = rows * out_w
    locations. ``weight_shape`` is (out_h, out_w, Cout, kh, kw, Cin // groups)."""
    out_h, out_w, _, kh, kw, cg = weight_shape
    k = kh * kw * cg
    chunks = row_chunks(out_h, out_w, groups * batch * k * like.element_size(), chunk_bytes(like.device))
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


# --- the kernel functions of KERNELS ------------------------------------------------------------------------

def forward(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
            dilation: Tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """bmm over gathered patches, one product per location and channel group.

    (B, Cin, H, W) any layout, (out_h, out_w, Cout, kh, kw, Cin/groups) -> (B, Cout, out_h, out_w) channels-last."""
    weight = weight.contiguous()  # the row chunks are views of it
    out = _lc_rows(_to_hwcb(x, padding), weight, stride, dilation, groups)  # (out_h, out_w, Cout, B)
    return _from_hwcb(out)


def backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                   stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                   groups: int = 1) -> torch.Tensor:
    """(B, Cout, out_h, out_w) output gradient -> (B, Cin, H, W) channels-last input gradient: the patch
    gradients of a few output rows at a time, scatter-added (col2im) into the padded input's gradient."""
    grad_rows, padded_shape = _grad_rows_and_padded_shape(grad_out, weight, input_size, padding, groups)
    grad_padded = _col2im_rows(grad_rows, weight.contiguous(), padded_shape, stride, dilation, groups)
    return _unpad(grad_padded, input_size, padding)


def backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Tuple[int, int],
                    stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                    groups: int = 1) -> torch.Tensor:
    """(B, Cout, out_h, out_w) output gradient, (B, Cin, H, W) input -> (out_h, out_w, Cout, kh, kw, Cin/groups)
    weight gradient, re-gathering the patches chunk by chunk from the padded input."""
    b, cout, out_h, out_w = grad_out.shape
    (kh, kw), cg = kernel_size, x.shape[1] // groups
    k, og = kh * kw * cg, cout // groups
    padded = _to_hwcb(x, padding)
    grad_rows = _hwcb(grad_out)  # (out_h, out_w, Cout, B)
    grad_w = grad_out.new_empty(out_h, out_w, cout, kh, kw, cg)
    for r0, r1, n, patches in _chunk_buffers(padded, grad_w.shape, b, groups):
        patches.copy_(_patch_rows(padded, (r0, r1), out_w, (kh, kw), stride, dilation, groups))
        torch.bmm(grad_rows[r0:r1].view(n * groups, og, b), patches.view(n * groups, k, b).transpose(1, 2),
                  out=grad_w[r0:r1].view(n * groups, og, k))
    return grad_w


def depthwise_forward(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
                      dilation: Tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """one broadcast multiply-add per kernel tap (channel multipliers included).

    Depthwise (groups == Cin): (B, C, H, W), (out_h, out_w, C*m, kh, kw, 1) -> (B, C*m, out_h, out_w)
    channels-last."""
    return _from_hwcb(_depthwise_rows(_to_hwcb(x, padding), weight.contiguous(), stride, dilation))


def depthwise_backward_input(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                             stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                             groups: int = 1) -> torch.Tensor:
    """Depthwise input gradient, one tap at a time: (B, C*m, out_h, out_w) -> (B, C, H, W) channels-last."""
    grad_rows, padded_shape = _grad_rows_and_padded_shape(grad_out, weight, input_size, padding, groups)
    grad_padded = _depthwise_grad_input(grad_rows, weight.contiguous(), padded_shape, stride, dilation)
    return _unpad(grad_padded, input_size, padding)


def depthwise_backward_weight(grad_out: torch.Tensor, x: torch.Tensor, kernel_size: Tuple[int, int],
                              stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int] = (1, 1),
                              groups: int = 1) -> torch.Tensor:
    """Depthwise weight gradient, one tap at a time: -> (out_h, out_w, C*m, kh, kw, 1)."""
    return _depthwise_grad_weight(_hwcb(grad_out), _to_hwcb(x, padding), kernel_size, stride, dilation)


def _grad_rows_and_padded_shape(grad_out: torch.Tensor, weight: torch.Tensor, input_size: Tuple[int, int],
                                padding: Tuple[int, int], groups: int) -> tuple:
    """The output gradient batch-innermost, (out_h, out_w, Cout, B), and the padded input's shape (Hp, Wp, Cin, B)."""
    (h, w), (ph, pw) = input_size, padding
    b, cin = grad_out.shape[0], weight.shape[5] * groups
    return _hwcb(grad_out), torch.Size((h + 2 * ph, w + 2 * pw, cin, b))


def _unpad(grad_padded: torch.Tensor, input_size: Tuple[int, int], padding: Tuple[int, int]) -> torch.Tensor:
    """(Hp, Wp, C, B) padded input gradient -> (B, C, H, W) channels-last, the padding cut off."""
    (h, w), (ph, pw) = input_size, padding
    return _from_hwcb(grad_padded[ph:ph + h, pw:pw + w])
