"""The LC operator ``bioconv::lc_forward`` written in standard operators, for exporters that do not know the
custom op: while ``torch.onnx.export`` runs, :func:`~bioconv_timm.layers.locally_connected2d` computes the layer
with :func:`lc_forward_decomposition` (``Pad``, one ``Gather``, ``Transpose``/``Reshape``, one batched ``MatMul``;
depthwise layers ``Mul`` and ``ReduceSum``), and :func:`lc_decompositions` rewrites an ``ExportedProgram`` the
same way. Here, beside the operator it mirrors (``bioconv_timm.export`` builds the ONNX files)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['lc_forward_decomposition', 'lc_decompositions']


def _patch_index(out_size: Tuple[int, int], kernel: Tuple[int, int], stride: Tuple[int, int],
                 dilation: Tuple[int, int], padded_w: int, device: torch.device) -> torch.Tensor:
    """(out_h * out_w * kh * kw,) int64: the flat position ``row * padded_w + column`` in the padded input that
    tap (u, v) of output (i, j) reads, row ``i * stride_h + u * dilation_h`` and column
    ``j * stride_w + v * dilation_w``, in (i, j, u, v) order. Computed in numpy, so an export holds it as one
    constant (not a dozen index operations per layer)."""
    (out_h, out_w), (kh, kw) = out_size, kernel
    rows = np.arange(out_h).reshape(out_h, 1, 1, 1) * stride[0] + np.arange(kh).reshape(1, 1, kh, 1) * dilation[0]
    cols = np.arange(out_w).reshape(1, out_w, 1, 1) * stride[1] + np.arange(kw).reshape(1, 1, 1, kw) * dilation[1]
    return torch.from_numpy((rows * padded_w + cols).reshape(-1).astype(np.int64)).to(device)


# The two layout changes as 2-d transposes and batched 2-d ones (onnxruntime's Transpose copies these in blocks;
# a general 4-d permutation that moves the innermost axis is element by element, 3-5x slower here).

def _batch_innermost(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (H * W, C, B)."""
    c, hw = x.shape[1], x.shape[2] * x.shape[3]
    return x.reshape(-1, c * hw).t().reshape(c, hw, -1).transpose(0, 1)


def _batch_outermost(out: torch.Tensor, out_size: Tuple[int, int]) -> torch.Tensor:
    """(L, Cout, B) -> (B, Cout, out_h, out_w)."""
    locations, cout = out.shape[0], out.shape[1]
    return out.reshape(locations * cout, -1).t().reshape(-1, locations, cout).transpose(1, 2).reshape(
        -1, cout, *out_size)


def lc_forward_decomposition(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                             dilation: Optional[Sequence[int]] = None, groups: int = 1,
                             backend: str = '') -> torch.Tensor:
    """``bioconv::lc_forward`` in standard operators (the same arguments; ``backend`` is ignored).

    Shapes: ``x`` (B, Cin, H, W), ``weight`` (out_h, out_w, Cout, kh, kw, Cin/g) -> (B, Cout, out_h, out_w),
    contiguous. With L = out_h * out_w locations, T = kh * kw taps, K = T * Cin/g and og = Cout/g, in the
    batch-innermost layout of the torch backend (every gathered element is a contiguous (Cin, B) block):

    - zero-pad ``x`` and lay it out as (Hp * Wp, Cin, B) (``Pad``, ``Transpose``, ``Reshape``);
    - gather every location's taps with one constant index: patches (L, T, Cin, B) (``Gather``);
    - dense layers: patches as (L, K, B) in the weight's (kh, kw, Cin) order (a reshape), one batched product
      with the weight as stored, (L, Cout, K) @ (L, K, B) -> (L, Cout, B) (``MatMul``); grouped layers the same
      per group, (L, g, og, K) @ (L, g, K, B);
    - depthwise layers (Cin/g == 1, m = Cout/Cin outputs per channel): (L, T, Cin, 1, B) patches times the
      weight as (L, T, Cin, m, 1), summed over the taps (``Mul``, ``ReduceSum``);
    - (L, Cout, B) back to (B, Cout, out_h, out_w) (``Transpose``).

    Pointwise layers (1 x 1 kernels) skip the gather: their patches are the strided input. Every element is the
    sum of the same products as the operator's (in another order: fp32 rounding only).
    """
    sh, sw = (int(s) for s in stride)
    ph, pw = (int(p) for p in padding)
    dh, dw = (1, 1) if dilation is None else (int(d) for d in dilation)
    out_h, out_w, cout, kh, kw, cg = weight.shape
    cin, locations, taps = x.shape[1], out_h * out_w, kh * kw
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    if (kh, kw) == (1, 1):  # pointwise: the patches are the (strided) input itself
        if (sh, sw) != (1, 1):
            x = x[:, :, :sh * (out_h - 1) + 1:sh, :sw * (out_w - 1) + 1:sw]
        patches = _batch_innermost(x).unsqueeze(1)  # (L, 1, Cin, B)
    else:
        index = _patch_index((out_h, out_w), (kh, kw), (sh, sw), (dh, dw), x.shape[3], x.device)
        patches = _batch_innermost(x).index_select(0, index).reshape(locations, taps, cin, -1)  # (L, T, Cin, B)
    if groups > 1 and cg == 1:  # depthwise: a multiply-add over the taps
        m = cout // groups
        kernels = weight.reshape(locations, groups, m, taps).permute(0, 3, 1, 2).unsqueeze(-1)  # (L, T, C, m, 1)
        out = (patches.unsqueeze(3) * kernels).sum(1)  # (L, C, m, B)
    elif groups == 1:
        out = torch.matmul(weight.reshape(locations, cout, taps * cg), patches.reshape(locations, taps * cg, -1))
    else:
        columns = patches.reshape(locations, taps, groups, cg, -1).transpose(1, 2)  # (L, g, T, Cin/g, B)
        out = torch.matmul(weight.reshape(locations, groups, cout // groups, taps * cg),
                           columns.reshape(locations, groups, taps * cg, -1))  # (L, g, og, B)
    return _batch_outermost(out.reshape(locations, cout, -1), (out_h, out_w))


def lc_decompositions() -> Dict[Any, Callable[..., torch.Tensor]]:
    """``{torch.ops.bioconv.lc_forward.default: lc_forward_decomposition}``: the table that makes an
    ``ExportedProgram`` holding LC layers exportable,
    ``torch.onnx.export(ep.run_decompositions(lc_decompositions()), dynamo=True)``."""
    return {torch.ops.bioconv.lc_forward.default: lc_forward_decomposition}
