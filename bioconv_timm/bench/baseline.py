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

    Dilation: the unfold window spans ``dilation * (k - 1) + 1`` inputs and every ``dilation``-th one is
    kept (still a view). Groups (the authors' code has none; the same layout per group): weight
    (groups, Cin/g, Cout/g, out_h, out_w, k, k), patches split into (B, groups, Cin/g, ...), one einsum with
    the group as a batch dimension; with groups=1 the layout and einsum are exactly the ungrouped ones.
    """

    def __init__(self, layer: LocallyConnected2d) -> None:
        super().__init__()
        self.stride, self.padding, self.kernel = layer.stride, layer.padding, layer.kernel_size
        self.dilation, self.groups = layer.dilation, layer.groups
        w = layer.weight.detach()
        if self.groups == 1:
            # ours: (out_h, out_w, Cout, kh, kw, Cin) -> theirs: (Cin, Cout, out_h, out_w, kh, kw)
            w = w.permute(5, 2, 0, 1, 3, 4)
        else:
            # ours: (out_h, out_w, g * Cout/g, kh, kw, Cin/g) -> (g, Cin/g, Cout/g, out_h, out_w, kh, kw)
            oh, ow, cout, kh, kw, cg = w.shape
            w = w.reshape(oh, ow, self.groups, cout // self.groups, kh, kw, cg).permute(2, 6, 3, 0, 1, 4, 5)
        self.weight = nn.Parameter(w.contiguous())

    def lc_layout_weight_grad(self) -> Optional[torch.Tensor]:
        """``weight.grad`` permuted back to the LC layer's (out_h, out_w, Cout, kh, kw, Cin/groups) layout."""
        g = self.weight.grad
        if g is None:
            return None
        if self.groups == 1:
            return g.permute(2, 3, 1, 4, 5, 0)
        groups, cg, og, oh, ow, kh, kw = g.shape
        return g.permute(3, 4, 0, 2, 5, 6, 1).reshape(oh, ow, groups * og, kh, kw, cg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, Cout, out_h, out_w)."""
        ph, pw = self.padding
        (kh, kw), (dh, dw), (sh, sw) = self.kernel, self.dilation, self.stride
        x = F.pad(x, (pw, pw, ph, ph))
        # window of the dilated kernel, then every d-th tap of it: (B, Cin, out_h, out_w, kh, kw), all views
        patches = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
        if self.groups == 1:
            return torch.einsum('bihwuv,iohwuv->bohw', patches, self.weight)
        b, cin, oh, ow = patches.shape[:4]
        patches = patches.unflatten(1, (self.groups, cin // self.groups))
        out = torch.einsum('bgihwuv,giohwuv->bgohw', patches, self.weight)
        return out.flatten(1, 2)


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
