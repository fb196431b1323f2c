"""The baselines the LC layer is timed against, besides ``nn.Conv2d``: the authors' unfold + einsum layout,
and the library's own layer forced onto its torch backend."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import LocallyConnected2d, native

__all__ = ['UnfoldEinsumLC', 'TorchBackendLC']


class UnfoldEinsumLC(nn.Module):
    """Baseline: the authors' layout, re-implemented for the benchmark only.

    Weight (Cin, Cout, out_h, out_w, k, k); the input is zero-padded, unfolded into
    (B, Cin, out_h, out_w, k, k) patches by autograd-tracked views, and contracted with one einsum.
    Built from a :class:`LocallyConnected2d`, whose weights it copies, so both compute the same function.
    """

    def __init__(self, layer: LocallyConnected2d) -> None:
        super().__init__()
        self.stride, self.padding, self.kernel = layer.stride, layer.padding, layer.kernel_size
        # ours: (out_h, out_w, Cout, kh, kw, Cin) -> theirs: (Cin, Cout, out_h, out_w, kh, kw)
        self.weight = nn.Parameter(layer.weight.detach().permute(5, 2, 0, 1, 3, 4).contiguous())

    def lc_layout_weight_grad(self) -> Optional[torch.Tensor]:
        """``weight.grad`` permuted back to the LC layer's (out_h, out_w, Cout, kh, kw, Cin) layout."""
        return None if self.weight.grad is None else self.weight.grad.permute(2, 3, 1, 4, 5, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, Cout, out_h, out_w)."""
        ph, pw = self.padding
        x = F.pad(x, (pw, pw, ph, ph))
        patches = x.unfold(2, self.kernel[0], self.stride[0]).unfold(3, self.kernel[1], self.stride[1])
        return torch.einsum('bihwuv,iohwuv->bohw', patches, self.weight)


class TorchBackendLC(nn.Module):
    """The library's LC layer run on its torch backend (``bmm`` over gathered patches) whatever the default:
    the baseline that shows what the native CPU kernels gain."""

    def __init__(self, lc: LocallyConnected2d) -> None:
        super().__init__()
        self.lc = lc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, Cout, out_h, out_w), as ``lc``."""
        with native.use_backend('torch'):
            return self.lc(x)
