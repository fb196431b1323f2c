"""Benchmarks of the LC layer against nn.Conv2d (a script that prints numbers, never a unit test)."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Sequence, Tuple

import torch
import torch.nn as nn

from .layers import LocallyConnected2d

# (in_channels, out_channels, input size, stride): the 3x3 convolutions of CIFAR ResNet20 at B=128.
RESNET20_SHAPES: Tuple[Tuple[int, int, int, int], ...] = (
    (16, 16, 32, 1), (32, 32, 16, 1), (64, 64, 8, 1),  # stage bodies
    (16, 32, 32, 2), (32, 64, 16, 2),                   # stride-2 stage transitions
)


@dataclass
class LayerTiming:
    shape: str
    conv_ms: float         # nn.Conv2d, channels-last, forward+backward (median)
    lc_ms: float           # LocallyConnected2d, forward+backward (median)
    lc_spread_ms: float    # max - min over repeats
    ratio: float           # lc_ms / conv_ms
    einsum_ms: float = float('nan')   # the authors' unfold + einsum layout, forward+backward (median)
    einsum_over_lc: float = float('nan')


class UnfoldEinsumLC(nn.Module):
    """Baseline: the authors' layout, re-implemented for the benchmark only.

    Weight (Cin, Cout, out_h, out_w, k, k); the input is zero-padded, unfolded into
    (B, Cin, out_h, out_w, k, k) patches by autograd-tracked views, and contracted with one einsum.
    """

    def __init__(self, layer: LocallyConnected2d) -> None:
        super().__init__()
        self.stride, self.padding, self.kernel = layer.stride, layer.padding, layer.kernel_size
        # ours: (out_h, out_w, Cout, kh, kw, Cin) -> theirs: (Cin, Cout, out_h, out_w, kh, kw)
        self.weight = nn.Parameter(layer.weight.detach().permute(5, 2, 0, 1, 3, 4).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        x = nn.functional.pad(x, (pw, pw, ph, ph))
        patches = x.unfold(2, self.kernel[0], self.stride[0]).unfold(3, self.kernel[1], self.stride[1])
        return torch.einsum('bihwuv,iohwuv->bohw', patches, self.weight)


def _median_ms(fn: Callable[[], None], repeats: int) -> Tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), max(times) - min(times)


def bench_resnet20_layers(batch_size: int = 128, repeats: int = 7,
                          shapes: Sequence[Tuple[int, int, int, int]] = RESNET20_SHAPES,
                          einsum: bool = True) -> List[LayerTiming]:
    """Forward+backward of LC vs channels-last Conv2d (3x3, padding 1), and optionally vs the
    authors' unfold + einsum layout, on the same inputs in one run."""
    rows = []
    for cin, cout, size, stride in shapes:
        conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False).to(memory_format=torch.channels_last)
        lc = LocallyConnected2d(cin, cout, 3, (size, size), stride, 1)
        x = torch.randn(batch_size, cin, size, size).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        grad = torch.randn(batch_size, cout, *lc.output_size).contiguous(memory_format=torch.channels_last)

        def run(layer: nn.Module) -> Callable[[], None]:
            def step() -> None:
                layer.zero_grad(set_to_none=True)
                x.grad = None
                layer(x).backward(grad)
            return step

        # interleave so both see the same machine load
        conv_ms, _ = _median_ms(run(conv), repeats)
        lc_ms, lc_spread = _median_ms(run(lc), repeats)
        row = LayerTiming(f'{cin}->{cout}ch {size}x{size} s{stride} B={batch_size}',
                          conv_ms, lc_ms, lc_spread, lc_ms / conv_ms)
        if einsum:
            row.einsum_ms, _ = _median_ms(run(UnfoldEinsumLC(lc)), repeats)
            row.einsum_over_lc = row.einsum_ms / lc_ms
        rows.append(row)
    return rows


def format_timings(rows: Sequence[LayerTiming]) -> str:
    lines = [f"{'shape':34s} {'conv_cl ms':>10s} {'LC ms':>9s} {'spread':>8s} {'LC/conv':>8s} "
             f"{'einsum ms':>10s} {'einsum/LC':>10s}"]
    for r in rows:
        lines.append(f'{r.shape:34s} {r.conv_ms:10.2f} {r.lc_ms:9.2f} {r.lc_spread_ms:8.2f} {r.ratio:8.2f} '
                     f'{r.einsum_ms:10.2f} {r.einsum_over_lc:10.2f}')
    return '\n'.join(lines)


def timings_as_dicts(rows: Sequence[LayerTiming]) -> List[dict]:
    return [asdict(r) for r in rows]
