"""What the machine can do, measured in the same run as the timings: a practical arithmetic peak (a large fp32
matrix product, which BLAS/oneDNN run close to the cores' FMA peak) and the memory bandwidth (a large copy), so
that each time can be read against its limit.

The nominal FMA peak needs the clock, the vector width and the number of FMA units per core, which no portable
interface reports; the sgemm rate is measured, so the "fraction of peak" columns are fractions of what this
machine's best-tuned kernel reaches here and now (contended runs lower both).
"""
from __future__ import annotations

import time
from typing import Callable, Dict

import torch

__all__ = ['measure_sgemm_gflops', 'measure_copy_bandwidth', 'adamw_step_bytes', 'machine_limits']

# Bytes an AdamW training step must move per fp32 parameter, at the least: the weights read by the forward and
# again by the backward pass (2 reads), the weight gradient written (1 write), then AdamW reads the gradient, the
# weights and both moments (4 reads) and writes the weights and both moments (3 writes). Activations not counted.
ADAMW_VALUES_MOVED_PER_PARAM = 2 + 1 + 4 + 3


def _best_seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up: page faults, thread pool start
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` fp32 matrix product on the CPU (2 n^3 flops), the best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    return 2 * n ** 3 / _best_seconds(lambda: torch.mm(a, b, out=out), repeats) / 1e9


def measure_copy_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """GB/s of a ``mib`` MiB fp32 copy between two buffers far larger than the caches, counting the bytes read
    and the bytes written (a copy moves 2 x its size), the best of ``repeats``."""
    src = torch.ones(mib * 2 ** 20 // 4)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best_seconds(lambda: dst.copy_(src), repeats) / 1e9


def adamw_step_bytes(params: int, bytes_per_value: int = 4) -> int:
    """The least memory traffic of one AdamW training step of a model with ``params`` parameters
    (:data:`ADAMW_VALUES_MOVED_PER_PARAM` values per parameter), in bytes."""
    return ADAMW_VALUES_MOVED_PER_PARAM * bytes_per_value * params


def machine_limits() -> Dict[str, float]:
    """``{'sgemm_gflop_per_s', 'copy_gb_per_s'}`` of this process's torch threads, measured now."""
    return dict(sgemm_gflop_per_s=measure_sgemm_gflops(), copy_gb_per_s=measure_copy_bandwidth())
