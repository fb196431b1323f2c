"""Benchmark harness: the LC layer against ``nn.Conv2d`` and the authors' unfold + einsum layout, and whole
LC vs conv models in training (``bioconv bench``, ``scripts/bench_lc.py``, ``python -m bioconv_timm.bench``).

What one run measures, on the same inputs and interleaved (repeat r times every implementation, rotating
the order, so that all of them see the same machine load):

- **layers** (:func:`bench_layers`): at each shape (:data:`SHAPE_SETS`: the paper's ResNet20 stages at B=128,
  the same at 48x48 for TinyImageNet, the 0.5x ResNet18 at 224 with B=32), four implementations of the same
  layer: ``conv_nchw`` (``nn.Conv2d``, NCHW), ``conv_cl`` (``nn.Conv2d``, channels-last input and weight),
  ``lc`` (:class:`bioconv_timm.layers.LocallyConnected2d`, imported, not copied; channels-last input as in
  the LC models; on CPU fp32 its native kernels, :mod:`bioconv_timm.layers.native`), ``lc_torch`` (the same layer
  forced onto its torch backend: what CUDA, bf16/fp16 and machines without a C compiler run) and ``einsum``
  (:class:`UnfoldEinsumLC`, the authors' layout, the same weights as ``lc``),
  each in two modes: ``fwd`` (under ``torch.no_grad``) and ``fwd+bwd`` (forward, then backward of a fixed
  random output gradient into the input and the weight). Per record: median and spread (min, max,
  quartiles) over the repeats, GFLOP/s (2 x the MACs of the conv-equivalent op; fwd+bwd counts 3x fwd),
  the time ratio to ``conv_cl`` and to ``lc`` in the same mode, and the peak memory of one call.
- **models** (:func:`bench_models`): images/s of a whole training step (forward, cross-entropy, backward,
  timm ``create_optimizer_v2('adamw')`` step, fused or foreach) for ``conv_resnet20`` vs ``lc_resnet20``
  and ``conv_resnet18_half`` vs ``lc_resnet18_half``, and the peak memory of a step.

Peak memory, what it measures:

- CUDA: ``torch.cuda.max_memory_allocated()`` over one call after ``reset_peak_memory_stats()``. Layers: minus
  what was allocated before the call (the inputs, weights and output gradient), i.e. the extra memory the
  call needs (outputs, saved tensors, weight gradient, workspaces). Models: the absolute peak of a step
  (parameters, AdamW state and batch included).
- CPU: the increase of the process's peak resident set (``VmHWM``, reset by writing 5 to
  ``/proc/self/clear_refs``) during one call, over the resident set just before it; freed memory is first
  returned to the OS (``malloc_trim``, or tcmalloc's ``ReleaseFreeMemory``) so that pages the allocator kept
  from earlier calls cannot hide the call's own. Layers run this in a fresh subprocess per shape (after one
  warm-up call): the same "extra memory of one call" as on CUDA, but counted in touched pages, so it
  includes allocator overhead and whatever is not a tensor (oneDNN scratch space). Models measure it
  in-process after the timed steps, and add the bytes of the tensors resident at the start of a step
  (parameters, buffers, AdamW state, batch) to report the absolute peak like CUDA does.

Before each case the memory it needs is estimated (:func:`estimate_case_bytes`, :func:`estimate_model_bytes`)
and a case that would not fit (in 80% of the available memory, or ``max_memory_gib``) is skipped with the
reason in the table and the JSON instead of crashing the run.

Nothing here asserts speed: the tests check the records' shape and the numerics, never the timings.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _malloc
from .layers import native
from .layers import LocallyConnected2d, chunk_bytes
from .sharding import estimate_model_bytes

__all__ = [
    'IMPLS', 'MODES', 'SHAPE_SETS', 'MODEL_PAIRS', 'TARGETS', 'LayerCase', 'BenchConfig', 'UnfoldEinsumLC',
    'resnet20_cases', 'tinyimagenet_cases', 'resnet18_half_cases', 'shape_set', 'estimate_case_bytes',
    'estimate_model_bytes', 'bench_layers', 'summarize_layers', 'bench_models', 'check_targets',
    'run_benchmark', 'format_layer_table', 'format_summary_table', 'format_model_table', 'format_report',

    # the first version's API, kept for scripts that use it
    'RESNET20_SHAPES', 'LayerTiming', 'bench_resnet20_layers', 'format_timings', 'timings_as_dicts',
]

IMPLS: Tuple[str, ...] = ('conv_nchw', 'conv_cl', 'lc', 'lc_torch', 'einsum')
MODES: Tuple[str, ...] = ('fwd', 'fwd+bwd')
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}

# The issue's targets (issue 7), checked (and printed, never asserted) by check_targets.
TARGETS = dict(
    lc_over_conv_cl=1.5,        # LC fwd+bwd <= 1.5x channels-last Conv2d at every ResNet20 shape (CPU)
    einsum_over_lc=8.0,         # LC >= 8x faster than the unfold + einsum baseline (CPU)
    lc_resnet20_step=2.0,       # lc_resnet20 training step <= 2x conv_resnet20 (CPU)
    lc_resnet18_half_step=3.0,  # lc_resnet18_half training step <= 3x conv_resnet18_half at B=256 (one H100)
)
# Where a training-step target is set, as (device type, batch); a step measured elsewhere is reported unjudged.
STEP_TARGET_SETTINGS = dict(lc_resnet18_half_step=('cuda', 256))


# ---------------------------------------------------------------------------------------------- shapes

@dataclass(frozen=True)
class LayerCase:
    """One layer shape: a ``kernel x kernel`` convolution (or its LC version) on a square input."""
    group: str          # shape set, e.g. 'resnet20'
    name: str           # position in the network, e.g. 'stage1'
    batch: int
    in_channels: int
    out_channels: int
    size: int           # input height = width
    kernel: int = 3
    stride: int = 1
    padding: int = 1

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the forward pass (the same for conv, LC and einsum)."""
        return (self.batch * self.out_size ** 2 * self.out_channels
                * self.in_channels * self.kernel ** 2)

    @property
    def label(self) -> str:
        return (f'{self.group} {self.name} {self.in_channels}->{self.out_channels} {self.size}x{self.size} '
                f'k{self.kernel}s{self.stride} B={self.batch}')


def resnet20_cases(batch: int = 128, size: int = 32, group: str = 'resnet20') -> List[LayerCase]:
    """The 3x3 convolutions of CIFAR ResNet20: the three stage bodies (16ch at ``size``, 32ch at size/2,
    64ch at size/4) and the two stride-2 stage transitions (16->32, 32->64)."""
    s2, s4 = (size + 1) // 2, (size + 3) // 4
    return [
        LayerCase(group, 'stage1', batch, 16, 16, size),
        LayerCase(group, 'stage2', batch, 32, 32, s2),
        LayerCase(group, 'stage3', batch, 64, 64, s4),
        LayerCase(group, 'down2', batch, 16, 32, size, stride=2),
        LayerCase(group, 'down3', batch, 32, 64, s2, stride=2),
    ]


def tinyimagenet_cases(batch: int = 128) -> List[LayerCase]:
    """ResNet20's stage bodies at TinyImageNet's 48x48 (16ch 48x48, 32ch 24x24, 64ch 12x12)."""
    return resnet20_cases(batch, 48, 'tinyimagenet48')[:3]


def resnet18_half_cases(batch: int = 32) -> List[LayerCase]:
    """0.5x ResNet18 at 224: the 7x7/2 stem (3->32 at 224) and one 3x3 body conv per stage
    (32ch 56x56, 64ch 28x28, 128ch 14x14, 256ch 7x7)."""
    g = 'resnet18_half224'
    return [
        LayerCase(g, 'stem', batch, 3, 32, 224, kernel=7, stride=2, padding=3),
        LayerCase(g, 'stage1', batch, 32, 32, 56),
        LayerCase(g, 'stage2', batch, 64, 64, 28),
        LayerCase(g, 'stage3', batch, 128, 128, 14),
        LayerCase(g, 'stage4', batch, 256, 256, 7),
    ]


def _tiny_cases(batch: int = 2) -> List[LayerCase]:
    """Test-sized shapes (a stride-1 and a stride-2 layer): for unit tests and smoke runs, not for numbers."""
    return [LayerCase('tiny', 'body', batch, 4, 4, 8), LayerCase('tiny', 'down', batch, 4, 8, 7, stride=2)]


# name -> (builder(batch) -> cases, the paper's batch size)
SHAPE_SETS: Dict[str, Tuple[Callable[[int], List[LayerCase]], int]] = {
    'resnet20': (resnet20_cases, 128),
    'tinyimagenet': (tinyimagenet_cases, 128),
    'resnet18_half': (resnet18_half_cases, 32),
    'tiny': (_tiny_cases, 2),   # hidden from --help
}
PUBLIC_SHAPE_SETS = ('resnet20', 'tinyimagenet', 'resnet18_half')


def shape_set(name: str, batch: Optional[int] = None) -> List[LayerCase]:
    """The cases of one shape set at its paper batch size (or ``batch``)."""
    if name not in SHAPE_SETS:
        raise ValueError(f'unknown shape set {name!r}; choose from {", ".join(PUBLIC_SHAPE_SETS)}')
    builder, default_batch = SHAPE_SETS[name]
    return builder(batch or default_batch)


# ------------------------------------------------------------------------------------------- baseline

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
        with native.use_backend('torch'):
            return self.lc(x)


# -------------------------------------------------------------------------------------------- memory

def _estimate_layer_parts(case: LayerCase, impl: str, mode: str, act_bytes: int, chunk: int) -> int:
    b, cin, cout, k = case.batch, case.in_channels, case.out_channels, case.kernel
    loc = case.out_size ** 2
    x = b * cin * case.size ** 2
    xp = b * cin * (case.size + 2 * case.padding) ** 2
    out = b * cout * loc
    kk = cin * k * k
    bwd = mode == 'fwd+bwd'
    amp_copy = act_bytes < 4
    if impl in ('conv_nchw', 'conv_cl'):
        w = cout * kk
        return 4 * w * (2 if bwd else 1) + act_bytes * (2 * x + 2 * out) * (2 if bwd else 1)
    w = loc * cout * kk
    weights = 4 * w * (2 if bwd else 1) + (act_bytes * w * (2 if bwd else 1) if amp_copy else 0)
    if impl in ('lc', 'lc_torch'):  # the torch path's footprint, an upper bound for the native one
        acts = act_bytes * (xp + 2 * out) + min(chunk, act_bytes * b * loc * kk)
        if bwd:
            acts += act_bytes * (2 * out + xp + x)
        return weights + acts
    if impl == 'einsum':
        patches = b * loc * kk
        acts = act_bytes * (patches + w + out + xp)
        if bwd:
            acts += act_bytes * (2 * patches + w + xp + x + out)
        return weights + acts
    raise ValueError(f'unknown implementation {impl!r}; choose from {IMPLS}')


def estimate_case_bytes(case: LayerCase, impl: str, mode: str, amp: Optional[str] = None,
                        device: Union[torch.device, str] = 'cpu') -> int:
    """Rough upper estimate (bytes) of what timing ``impl`` in ``mode`` at ``case`` needs: its weights (and
    their gradient), the inputs, and the transient tensors of a call (einsum: the permuted copy of the
    unfolded input, and its gradient), with a 25% margin."""
    act_bytes = 2 if amp else 4
    return int(1.25 * _estimate_layer_parts(case, impl, mode, act_bytes, chunk_bytes(device)))


def _available_bytes(device: torch.device) -> Optional[int]:
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _memory_limit(device: torch.device, max_memory_bytes: Optional[int]) -> Tuple[Optional[int], str]:
    if max_memory_bytes is not None:
        return int(max_memory_bytes), 'the --max-memory-gib limit'
    available = _available_bytes(device)
    if available is None:
        return None, ''
    return int(0.8 * available), f'80% of the {available / 2 ** 30:.1f} GiB available'


def _skip_reason(estimate: int, device: torch.device, max_memory_bytes: Optional[int]) -> Optional[str]:
    limit, what = _memory_limit(device, max_memory_bytes)
    if limit is not None and estimate > limit:
        return f'needs ~{estimate / 2 ** 30:.1f} GiB (estimated), over {what}'
    return None


def _release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim`` or tcmalloc), so that it cannot hide a
    later call's allocations from the resident-set measurement."""
    gc.collect()
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return
    if hasattr(libc, 'MallocExtension_ReleaseFreeMemory'):  # tcmalloc (LD_PRELOAD)
        libc.MallocExtension_ReleaseFreeMemory()
    elif hasattr(libc, 'malloc_trim'):
        libc.malloc_trim(0)


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise OSError(f'{key} not in /proc/self/status')


def _rss_peak_delta(fn: Callable[[], None]) -> Optional[int]:
    """Bytes by which one call of ``fn`` raises the process's peak resident set above the resident set
    just before it; None where /proc/self/clear_refs cannot reset the peak (not Linux)."""
    _release_free_memory()
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current RSS
        before = _proc_status_kib('VmRSS')
    except OSError:
        return None
    fn()
    return max(0, _proc_status_kib('VmHWM') - before) * 1024


CPU_MEM_METHOD = 'peak RSS increase (VmHWM via clear_refs) of one call, fresh subprocess per shape'
CPU_MEM_METHOD_INPROCESS = 'peak RSS increase (VmHWM via clear_refs) of one call, in-process'
CUDA_MEM_METHOD = 'torch.cuda.max_memory_allocated of one call'


# -------------------------------------------------------------------------------------------- timing

def _amp_context(device: torch.device, amp: Optional[str]):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def _device(device) -> torch.device:
    """torch.device with an explicit index for CUDA ('cuda' -> 'cuda:<current>'), as older torch's memory
    functions require."""
    dev = torch.device(device)
    if dev.type == 'cuda' and dev.index is None:
        dev = torch.device('cuda', torch.cuda.current_device())
    return dev


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _stats(times_ms: Sequence[float]) -> Dict[str, float]:
    ts = sorted(times_ms)
    if len(ts) >= 2:
        q1, _, q3 = statistics.quantiles(ts, n=4, method='inclusive')
    else:
        q1 = q3 = ts[0]
    return dict(median_ms=statistics.median(ts), min_ms=ts[0], max_ms=ts[-1], q1_ms=q1, q3_ms=q3)


def _build_layer(case: LayerCase, impl: str, device: torch.device, conv: nn.Conv2d,
                 lc_holder: Dict[str, LocallyConnected2d]) -> nn.Module:
    if impl == 'conv_nchw':
        return conv
    if impl == 'conv_cl':
        cl = nn.Conv2d(case.in_channels, case.out_channels, case.kernel, case.stride, case.padding, bias=False)
        cl.load_state_dict(conv.state_dict())
        return cl.to(device=device, memory_format=torch.channels_last)
    if 'lc' not in lc_holder:
        lc_holder['lc'] = LocallyConnected2d(case.in_channels, case.out_channels, case.kernel, case.size,
                                             case.stride, case.padding, device=device)
    if impl == 'lc':
        return lc_holder['lc']
    if impl == 'lc_torch':
        return TorchBackendLC(lc_holder['lc'])
    if impl == 'einsum':
        return UnfoldEinsumLC(lc_holder['lc'])
    raise ValueError(f'unknown implementation {impl!r}; choose from {IMPLS}')


class _LayerRunner:
    """One implementation at one case: its module, its own input leaf and output gradient, and one call
    of ``fwd`` or ``fwd+bwd``."""

    def __init__(self, module: nn.Module, x: torch.Tensor, grad: torch.Tensor, device: torch.device,
                 amp: Optional[str]) -> None:
        self.module, self.x, self.grad0, self.device, self.amp = module, x, grad, device, amp
        self.grad: Optional[torch.Tensor] = None
        self.inner: Dict[str, int] = {}

    def call(self, mode: str) -> None:
        if mode == 'fwd':
            with torch.no_grad(), _amp_context(self.device, self.amp):
                self.module(self.x)
            return
        self.module.zero_grad(set_to_none=True)
        self.x.grad = None
        with _amp_context(self.device, self.amp):
            y = self.module(self.x)
        if self.grad is None or self.grad.dtype != y.dtype or self.grad.stride() != y.stride():
            # the same values in the output's dtype and memory format
            self.grad = torch.empty_like(y).copy_(self.grad0)
        y.backward(self.grad)

    def timed(self, mode: str) -> float:
        """Milliseconds per call, ``inner`` calls between two synchronizations."""
        inner = self.inner.get(mode, 1)
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(inner):
            self.call(mode)
        _sync(self.device)
        return (time.perf_counter() - start) * 1e3 / inner


def _make_runners(case: LayerCase, impls: Sequence[str], device: torch.device, amp: Optional[str],
                  seed: int = 0) -> Dict[str, _LayerRunner]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(case.in_channels, case.out_channels, case.kernel, case.stride, case.padding,
                     bias=False).to(device)
    x0 = torch.randn(case.batch, case.in_channels, case.size, case.size, device=device)
    g0 = torch.randn(case.batch, case.out_channels, case.out_size, case.out_size, device=device)
    holder: Dict[str, LocallyConnected2d] = {}
    runners = {}
    for impl in impls:
        module = _build_layer(case, impl, device, conv, holder)
        # conv_cl and lc get channels-last inputs (the LC models run channels-last), the others NCHW
        fmt = torch.channels_last if impl in ('conv_cl', 'lc', 'lc_torch') else torch.contiguous_format
        x = x0.contiguous(memory_format=fmt).clone(memory_format=fmt).requires_grad_(True)
        runners[impl] = _LayerRunner(module, x, g0, device, amp)
    return runners


def _layer_record(case: LayerCase, impl: str, mode: str, device: torch.device, amp: Optional[str]) -> dict:
    return dict(
        group=case.group, shape=case.name, label=case.label, batch=case.batch,
        in_channels=case.in_channels, out_channels=case.out_channels, input_size=[case.size, case.size],
        output_size=[case.out_size, case.out_size], kernel=case.kernel, stride=case.stride,
        padding=case.padding, impl=impl, mode=mode, device=str(device), amp=amp,
        input_format='channels_last' if impl in ('conv_cl', 'lc', 'lc_torch') else 'nchw',
        gflop=2 * case.macs * (3 if mode == 'fwd+bwd' else 1) / 1e9,
        repeats=0, inner=None, times_ms=[], median_ms=None, min_ms=None, max_ms=None, q1_ms=None, q3_ms=None,
        gflop_per_s=None, ratio_to_conv_cl=None, ratio_to_lc=None,
        estimated_bytes=estimate_case_bytes(case, impl, mode, amp, device), peak_mem_bytes=None, mem_method=None,
        skipped=None)


def _progress(progress: Optional[Callable[[str], None]], message: str) -> None:
    if progress is not None:
        progress(message)


def bench_layers(cases: Sequence[LayerCase], impls: Sequence[str] = IMPLS, modes: Sequence[str] = MODES,
                 repeats: int = 7, warmup: int = 1, device: str = 'cpu', amp: Optional[str] = None,
                 memory: str = 'auto', max_memory_bytes: Optional[int] = None,
                 min_repeat_s: Optional[float] = None, seed: int = 0,
                 progress: Optional[Callable[[str], None]] = None) -> List[dict]:
    """Time ``impls`` x ``modes`` at every case, interleaved, on the same inputs; one record per
    (case, impl, mode), with ratios filled in (:func:`add_ratios`).

    Args:
        cases: shapes (:func:`shape_set`, :func:`resnet20_cases`, ...).
        impls: subset of :data:`IMPLS`. ``einsum`` shares ``lc``'s weights.
        modes: subset of :data:`MODES`.
        repeats: timed repeats per record (median and spread over these).
        warmup: untimed calls per implementation and mode before timing.
        device: 'cpu' or 'cuda[:i]'.
        amp: None (fp32), 'bf16' or 'fp16': ``torch.autocast`` around the forward.
        memory: 'auto' (CUDA: allocator peak; CPU: peak RSS in a subprocess per shape), 'subprocess',
            'inprocess', or 'none'.
        max_memory_bytes: skip a case whose estimate exceeds this (default: 80% of what is available).
        min_repeat_s: run each timed repeat as ``inner`` back-to-back calls lasting at least this long,
            reporting time per call (default 0.02 s on CUDA, where one call can be microseconds; 0 on CPU).
    """
    dev = _device(device)
    amp = amp or None
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f'amp must be one of {sorted(AMP_DTYPES)} or None, got {amp!r}')
    for impl in impls:
        if impl not in IMPLS:
            raise ValueError(f'unknown implementation {impl!r}; choose from {IMPLS}')
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f'unknown mode {mode!r}; choose from {MODES}')
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    if memory == 'auto':
        memory = 'cuda' if dev.type == 'cuda' else 'subprocess'
    elif memory in ('subprocess', 'inprocess') and dev.type == 'cuda':
        memory = 'cuda'
    if memory not in ('cuda', 'subprocess', 'inprocess', 'none'):
        raise ValueError(f"memory must be 'auto', 'subprocess', 'inprocess' or 'none', got {memory!r}")
    if min_repeat_s is None:
        min_repeat_s = 0.02 if dev.type == 'cuda' else 0.0
    cudnn_benchmark = torch.backends.cudnn.benchmark
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    records: List[dict] = []
    try:
        for case in cases:
            recs = {(impl, mode): _layer_record(case, impl, mode, dev, amp) for impl in impls for mode in modes}
            run_impls = []
            for impl in impls:
                estimate = max(recs[impl, mode]['estimated_bytes'] for mode in modes)
                reason = _skip_reason(estimate, dev, max_memory_bytes)
                if reason:
                    for mode in modes:
                        recs[impl, mode]['skipped'] = reason
                    _progress(progress, f'  {case.label} {impl}: skipped, {reason}')
                else:
                    run_impls.append(impl)
            if run_impls:
                _progress(progress, f'  {case.label}: {", ".join(run_impls)} x {", ".join(modes)}, '
                                    f'{repeats} repeats')
                _time_case(case, run_impls, modes, recs, dev, amp, repeats, warmup, min_repeat_s, memory, seed)
                if memory in ('subprocess', 'inprocess'):
                    _cpu_case_memory(case, run_impls, modes, recs, amp, seed, in_process=memory == 'inprocess')
            records.extend(recs[impl, mode] for mode in modes for impl in impls)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    return add_ratios(records)


def _time_case(case: LayerCase, impls: Sequence[str], modes: Sequence[str], recs: Dict[Tuple[str, str], dict],
               dev: torch.device, amp: Optional[str], repeats: int, warmup: int, min_repeat_s: float,
               memory: str, seed: int) -> None:
    runners = _make_runners(case, impls, dev, amp, seed)
    try:
        for mode in modes:
            for impl, runner in runners.items():
                for _ in range(max(0, warmup)):
                    runner.call(mode)
                if min_repeat_s > 0:
                    first = runner.timed(mode) / 1e3
                    runner.inner[mode] = max(1, min(1000, math.ceil(min_repeat_s / max(first, 1e-9))))
                recs[impl, mode]['inner'] = runner.inner.get(mode, 1)
            names = list(runners)
            for r in range(repeats):
                order = names[r % len(names):] + names[:r % len(names)]  # rotate: no fixed "first" position
                for impl in order:
                    recs[impl, mode]['times_ms'].append(runners[impl].timed(mode))
            if memory == 'cuda':
                for impl, runner in runners.items():
                    _sync(dev)
                    runner.module.zero_grad(set_to_none=True)
                    runner.x.grad = None
                    torch.cuda.reset_peak_memory_stats(dev)
                    before = torch.cuda.memory_allocated(dev)
                    runner.call(mode)
                    _sync(dev)
                    recs[impl, mode]['peak_mem_bytes'] = int(torch.cuda.max_memory_allocated(dev) - before)
                    recs[impl, mode]['mem_method'] = CUDA_MEM_METHOD
        for (impl, mode), rec in recs.items():
            if impl in runners:
                rec.update(_stats(rec['times_ms']), repeats=len(rec['times_ms']))
                rec['gflop_per_s'] = rec['gflop'] / (rec['median_ms'] / 1e3)
    finally:
        del runners
        gc.collect()
        if dev.type == 'cuda':
            torch.cuda.empty_cache()


def _case_memory(case: LayerCase, impls: Sequence[str], modes: Sequence[str], amp: Optional[str],
                 seed: int) -> Dict[str, Optional[int]]:
    """CPU: the peak-RSS increase of one call per (impl, mode), each with its own freshly built layer."""
    out: Dict[str, Optional[int]] = {}
    dev = torch.device('cpu')
    for impl in impls:
        for mode in modes:
            runner = _make_runners(case, [impl], dev, amp, seed)[impl]
            runner.call(mode)  # warm-up: one-time initializations are not the call's memory
            runner.module.zero_grad(set_to_none=True)
            runner.x.grad = None
            out[f'{impl}|{mode}'] = _rss_peak_delta(lambda: runner.call(mode))
            del runner
            _release_free_memory()
    return out


def _memory_worker() -> None:
    """Entry point of the per-shape subprocess: JSON job on stdin, one JSON result line on stdout."""
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(job['threads'])
    case = LayerCase(**job['case'])
    result = _case_memory(case, job['impls'], job['modes'], job['amp'], job['seed'])
    print('BIOCONV_BENCH_MEMORY ' + json.dumps(result), flush=True)


def _cpu_case_memory(case: LayerCase, impls: Sequence[str], modes: Sequence[str],
                     recs: Dict[Tuple[str, str], dict], amp: Optional[str], seed: int, in_process: bool) -> None:
    if in_process:
        result: Dict[str, Optional[int]] = _case_memory(case, impls, modes, amp, seed)
        method = CPU_MEM_METHOD_INPROCESS
    else:
        job = dict(case=asdict(case), impls=list(impls), modes=list(modes), amp=amp, seed=seed,
                   threads=torch.get_num_threads())
        code = 'from bioconv_timm.bench import _memory_worker; _memory_worker()'
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # import this checkout's package
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get('PYTHONPATH')])))
        proc = subprocess.run([sys.executable, '-c', code], input=json.dumps(job), capture_output=True, text=True,
                              env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('BIOCONV_BENCH_MEMORY ')]
        if proc.returncode != 0 or not lines:
            err = (proc.stderr.strip().splitlines() or ['no output'])[-1]
            for impl in impls:
                for mode in modes:
                    recs[impl, mode]['mem_method'] = f'unavailable: memory subprocess failed ({err})'
            return
        result = json.loads(lines[-1].split(' ', 1)[1])
        method = CPU_MEM_METHOD
    for impl in impls:
        for mode in modes:
            value = result.get(f'{impl}|{mode}')
            recs[impl, mode]['peak_mem_bytes'] = value
            recs[impl, mode]['mem_method'] = method if value is not None else 'unavailable: no /proc/self/clear_refs'


def add_ratios(records: List[dict]) -> List[dict]:
    """Fill ``ratio_to_conv_cl`` and ``ratio_to_lc`` (median time over the median of ``conv_cl`` / ``lc``
    at the same case and mode, from these records); None where either side is missing or skipped."""
    medians = {(r['label'], r['mode'], r['impl']): r['median_ms'] for r in records}
    for r in records:
        for key, ref in (('ratio_to_conv_cl', 'conv_cl'), ('ratio_to_lc', 'lc')):
            base = medians.get((r['label'], r['mode'], ref))
            r[key] = r['median_ms'] / base if r['median_ms'] is not None and base else None
    return records


def summarize_layers(records: Sequence[dict]) -> List[dict]:
    """One row per (case, mode): the median of each implementation, LC / conv_cl, einsum / LC and
    LC torch backend / LC."""
    rows: Dict[Tuple[str, str], dict] = {}
    for r in records:
        row = rows.setdefault((r['label'], r['mode']), dict(label=r['label'], group=r['group'], mode=r['mode']))
        row[f"{r['impl']}_ms"] = r['median_ms']
        row[f"{r['impl']}_peak_mem_bytes"] = r['peak_mem_bytes']
    for row in rows.values():
        lc, conv_cl, einsum = row.get('lc_ms'), row.get('conv_cl_ms'), row.get('einsum_ms')
        lc_torch = row.get('lc_torch_ms')
        row['lc_over_conv_cl'] = lc / conv_cl if lc and conv_cl else None
        row['einsum_over_lc'] = einsum / lc if einsum and lc else None
        row['lc_torch_over_lc'] = lc_torch / lc if lc_torch and lc else None
    return list(rows.values())


# -------------------------------------------------------------------------------------------- models

MODEL_PAIRS: Dict[str, Tuple[str, str]] = {
    'resnet20': ('conv_resnet20', 'lc_resnet20'),
    'resnet18_half': ('conv_resnet18_half', 'lc_resnet18_half'),
}


def default_model_batch(arch: str, device: str) -> int:
    """The batch sizes of the benchmark: ResNet20 128; ResNet18-half 256 on GPU (the paper's ImageNet
    batch), 32 on CPU."""
    if arch == 'resnet20':
        return 128
    return 256 if torch.device(device).type == 'cuda' else 32


def _model_info(name: str, **kwargs) -> Tuple[int, Tuple[int, int]]:
    import timm

    from . import models as _  # noqa: F401  (registers the models)
    with torch.device('meta'):
        model = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters()), tuple(model.img_size)


def _make_adamw(model: nn.Module, impl: str) -> Tuple[torch.optim.Optimizer, str]:
    """timm's AdamW (``create_optimizer_v2(opt='adamw')``), fused where this torch and device have it,
    else the multi-tensor ``foreach`` version."""
    from timm.optim import create_optimizer_v2
    kw = dict(opt='adamw', lr=1e-4, weight_decay=0.05)
    if impl in ('auto', 'fused'):
        try:
            return create_optimizer_v2(model, fused=True, **kw), 'fused'
        except (RuntimeError, TypeError, ValueError):
            if impl == 'fused':
                raise
    if impl not in ('auto', 'fused', 'foreach'):
        raise ValueError(f"optimizer must be 'auto', 'fused' or 'foreach', got {impl!r}")
    return create_optimizer_v2(model, foreach=True, **kw), 'foreach'


class _ModelRunner:
    def __init__(self, name: str, batch: int, img_size: Optional[int], dev: torch.device, amp: Optional[str],
                 optimizer: str, seed: int) -> None:
        import timm

        from . import models as _  # noqa: F401
        torch.manual_seed(seed)
        kwargs = dict(img_size=img_size) if img_size else {}
        with torch.device(dev):  # initialize on the device: 483M parameters are slow to init and copy on CPU
            model = timm.create_model(name, **kwargs)
        self.model = model.to(memory_format=torch.channels_last).train()
        self.optimizer, self.optimizer_impl = _make_adamw(self.model, optimizer)
        h, w = self.model.img_size
        self.x = torch.randn(batch, self.model.in_chans, h, w, device=dev).contiguous(
            memory_format=torch.channels_last)
        self.y = torch.randint(0, self.model.num_classes, (batch,), device=dev)
        self.dev, self.amp = dev, amp
        self.scaler = torch.amp.GradScaler('cuda') if amp == 'fp16' and dev.type == 'cuda' else None

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with _amp_context(self.dev, self.amp):
            loss = F.cross_entropy(self.model(self.x), self.y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def timed(self) -> float:
        _sync(self.dev)
        start = time.perf_counter()
        self.step()
        _sync(self.dev)
        return (time.perf_counter() - start) * 1e3

    def resident_bytes(self) -> int:
        tensors = list(self.model.parameters()) + list(self.model.buffers()) + [self.x, self.y]
        for state in self.optimizer.state.values():
            tensors.extend(v for v in state.values() if torch.is_tensor(v))
        return sum(t.numel() * t.element_size() for t in tensors)

    def peak_memory(self) -> Tuple[Optional[int], Optional[int], str]:
        """(absolute peak bytes of one step, extra over the start of the step, method)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.dev.type == 'cuda':
            _sync(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)
            before = torch.cuda.memory_allocated(self.dev)
            self.step()
            _sync(self.dev)
            peak = int(torch.cuda.max_memory_allocated(self.dev))
            return peak, peak - before, CUDA_MEM_METHOD + ' (absolute)'
        extra = _rss_peak_delta(self.step)
        if extra is None:
            return None, None, 'unavailable: no /proc/self/clear_refs'
        return (self.resident_bytes() + extra, extra,
                'resident tensors (params, buffers, AdamW state, batch) + peak RSS increase of one step')


def bench_models(pairs: Sequence[str] = ('resnet20',), batch_size: Optional[int] = None,
                 img_size: Optional[int] = None, steps: int = 5, warmup: int = 2, device: str = 'cpu',
                 amp: Optional[str] = None, optimizer: str = 'auto', memory: bool = True,
                 max_memory_bytes: Optional[int] = None, seed: int = 0,
                 progress: Optional[Callable[[str], None]] = None) -> List[dict]:
    """Training-step throughput of the conv and LC model of each pair (:data:`MODEL_PAIRS`), their steps
    interleaved; one record per model, the LC one with ``ratio_to_conv`` (step time over the conv one's).

    Args:
        pairs: keys of :data:`MODEL_PAIRS`.
        batch_size: images per step (default :func:`default_model_batch`).
        img_size: input size (default: the model's, 32 or 224); smaller only for smoke tests.
        steps, warmup: timed and untimed steps (the first step creates the AdamW state).
        amp: None, 'bf16' or 'fp16' (fp16 on CUDA uses a GradScaler).
        optimizer: 'auto' (fused AdamW where available, else foreach), 'fused' or 'foreach'.
        memory: also measure the peak memory of one step.
    """
    dev = _device(device)
    amp = amp or None
    records: List[dict] = []
    for arch in pairs:
        if arch not in MODEL_PAIRS:
            raise ValueError(f'unknown model pair {arch!r}; choose from {sorted(MODEL_PAIRS)}')
        batch = batch_size or default_model_batch(arch, device)
        runners: Dict[str, _ModelRunner] = {}
        recs: Dict[str, dict] = {}
        for name in MODEL_PAIRS[arch]:
            kwargs = dict(img_size=img_size) if img_size else {}
            params, size = _model_info(name, **kwargs)
            estimate = estimate_model_bytes(params, batch, size, amp)
            recs[name] = dict(
                model=name, arch=arch, layer_type='lc' if name.startswith('lc_') else 'conv', batch=batch,
                img_size=list(size), params=params, device=str(dev), amp=amp, optimizer=None, steps=0,
                times_ms=[], median_ms=None, min_ms=None, max_ms=None, q1_ms=None, q3_ms=None,
                images_per_s=None, ratio_to_conv=None, estimated_bytes=estimate, peak_mem_bytes=None,
                step_extra_bytes=None, resident_bytes=None, mem_method=None,
                skipped=_skip_reason(estimate, dev, max_memory_bytes))
            if recs[name]['skipped']:
                _progress(progress, f'  {name} B={batch}: skipped, {recs[name]["skipped"]}')
                continue
            _progress(progress, f'  {name} B={batch} {size[0]}x{size[1]}: building ({params / 1e6:.1f}M params)')
            runners[name] = _ModelRunner(name, batch, img_size, dev, amp, optimizer, seed)
            recs[name]['optimizer'] = f'adamw ({runners[name].optimizer_impl})'
        try:
            if runners:
                _progress(progress, f'  {" vs ".join(runners)}: {warmup} warm-up + {steps} timed steps')
            for runner in runners.values():
                for _ in range(max(0, warmup)):
                    runner.step()
            for s in range(steps):
                names = list(runners)
                for name in names[s % len(names):] + names[:s % len(names)]:
                    recs[name]['times_ms'].append(runners[name].timed())
            for name, runner in runners.items():
                rec = recs[name]
                if rec['times_ms']:
                    rec.update(_stats(rec['times_ms']), steps=len(rec['times_ms']))
                    rec['images_per_s'] = batch / (rec['median_ms'] / 1e3)
                if memory:
                    peak, extra, method = runner.peak_memory()
                    rec.update(peak_mem_bytes=peak, step_extra_bytes=extra, mem_method=method,
                               resident_bytes=runner.resident_bytes())
        finally:
            del runners
            gc.collect()
            if dev.type == 'cuda':
                torch.cuda.empty_cache()
        conv_name, lc_name = MODEL_PAIRS[arch]
        if recs[conv_name]['median_ms'] and recs[lc_name]['median_ms']:
            recs[lc_name]['ratio_to_conv'] = recs[lc_name]['median_ms'] / recs[conv_name]['median_ms']
            recs[conv_name]['ratio_to_conv'] = 1.0
        records.extend(recs.values())
    return records


# ----------------------------------------------------------------------------------------- the report

def check_targets(layer_records: Sequence[dict], model_records: Sequence[dict]) -> List[dict]:
    """The issue's targets against this run (information only: a target is 'met', 'not met', or None when
    the run did not measure it, or measured it where the target does not apply: then ``note`` says why).
    LC/conv and einsum/LC use the fwd+bwd records of the ResNet20 shapes."""
    out = []
    summary = [r for r in summarize_layers(layer_records) if r['mode'] == 'fwd+bwd' and r['group'] == 'resnet20']
    lc_conv = [r['lc_over_conv_cl'] for r in summary if r['lc_over_conv_cl'] is not None]
    einsum_lc = [r['einsum_over_lc'] for r in summary if r['einsum_over_lc'] is not None]
    out.append(dict(name='worst LC / conv_cl, fwd+bwd, ResNet20 shapes', value=max(lc_conv) if lc_conv else None,
                    target=f"<= {TARGETS['lc_over_conv_cl']}",
                    met=(max(lc_conv) <= TARGETS['lc_over_conv_cl']) if lc_conv else None))
    out.append(dict(name='smallest einsum / LC, fwd+bwd, ResNet20 shapes',
                    value=min(einsum_lc) if einsum_lc else None, target=f">= {TARGETS['einsum_over_lc']}",
                    met=(min(einsum_lc) >= TARGETS['einsum_over_lc']) if einsum_lc else None))
    for arch, key in (('resnet20', 'lc_resnet20_step'), ('resnet18_half', 'lc_resnet18_half_step')):
        lc = next((r for r in model_records if r['arch'] == arch and r['layer_type'] == 'lc'), None)
        value = lc['ratio_to_conv'] if lc else None
        name = f'{MODEL_PAIRS[arch][1]} / {MODEL_PAIRS[arch][0]} training step'
        note = None
        if lc:
            name += f" (B={lc['batch']}, {lc['device']})"
            setting = STEP_TARGET_SETTINGS.get(key)
            if setting and (torch.device(lc['device']).type, lc['batch']) != setting:
                note = f'the target is for B={setting[1]} on {setting[0]} (one H100)'
        out.append(dict(name=name, value=value, target=f'<= {TARGETS[key]}', note=note,
                        met=(value <= TARGETS[key]) if value is not None and note is None else None))
    return out


def _fmt(value, spec: str = '.2f', none: str = '-') -> str:
    return none if value is None else format(value, spec)


def _mib(value: Optional[int]) -> str:
    return '-' if value is None else f'{value / 2 ** 20:.1f}'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Plain-text table: the first ``left`` columns left-aligned, the others right-aligned."""
    cells = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append('  '.join(v.ljust(w) if i < left else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            lines.append('  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def format_layer_table(records: Sequence[dict]) -> str:
    """Every record: median ms, min-max, IQR, GFLOP/s, ratio to conv_cl and to LC, peak memory."""
    rows = []
    for r in records:
        if r['skipped']:
            rows.append([r['label'], r['mode'], r['impl'], 'skipped: ' + r['skipped'], '', '', '', '', '', ''])
            continue
        rows.append([r['label'], r['mode'], r['impl'], _fmt(r['median_ms']),
                     f"{_fmt(r['min_ms'])}-{_fmt(r['max_ms'])}", f"{_fmt(r['q1_ms'])}-{_fmt(r['q3_ms'])}",
                     _fmt(r['gflop_per_s'], '.1f'), _fmt(r['ratio_to_conv_cl']), _fmt(r['ratio_to_lc']),
                     _mib(r['peak_mem_bytes'])])
    return _table(['shape', 'mode', 'impl', 'median ms', 'min-max ms', 'IQR ms', 'GFLOP/s', 'x conv_cl',
                   'x LC', 'peak MiB'], rows, left=3)


def format_summary_table(records: Sequence[dict]) -> str:
    """Per (shape, mode): conv NCHW / channels-last / LC / LC torch backend / einsum medians, LC/conv_cl,
    einsum/LC, LC torch/LC."""
    rows = [[s['label'], s['mode'], _fmt(s.get('conv_nchw_ms')), _fmt(s.get('conv_cl_ms')), _fmt(s.get('lc_ms')),
             _fmt(s.get('lc_torch_ms')), _fmt(s.get('einsum_ms')), _fmt(s['lc_over_conv_cl']),
             _fmt(s['einsum_over_lc'], '.1f'), _fmt(s['lc_torch_over_lc'], '.1f')]
            for s in summarize_layers(records)]
    return _table(['shape', 'mode', 'conv_nchw ms', 'conv_cl ms', 'LC ms', 'LC torch ms', 'einsum ms', 'LC/conv_cl',
                   'einsum/LC', 'torch/LC'], rows, left=2)


def format_model_table(records: Sequence[dict]) -> str:
    rows = []
    for r in records:
        size = 'x'.join(str(s) for s in r['img_size'])
        if r['skipped']:
            rows.append([r['model'], str(r['batch']), size, f"{r['params'] / 1e6:.2f}M",
                         'skipped: ' + r['skipped'], '', '', '', ''])
            continue
        rows.append([r['model'], str(r['batch']), size, f"{r['params'] / 1e6:.2f}M", _fmt(r['median_ms'], '.1f'),
                     f"{_fmt(r['min_ms'], '.1f')}-{_fmt(r['max_ms'], '.1f')}", _fmt(r['images_per_s'], '.1f'),
                     _fmt(r['ratio_to_conv']), _mib(r['peak_mem_bytes']), r['optimizer'] or '-'])
    return _table(['model', 'batch', 'input', 'params', 'step ms', 'min-max ms', 'images/s', 'x conv',
                   'peak MiB', 'optimizer'], rows)


def format_report(result: dict) -> str:
    meta = result['meta']
    parts = [f"bioconv bench: {meta['device_name']}, {meta['precision']}, torch {meta['torch']}, "
             f"{meta['threads']} threads, {meta['date']}"]
    if meta.get('allocator'):
        parts.append(f"allocator: {meta['allocator']['summary']}")
    backend = meta.get('lc_backend') or {}
    if backend.get('available'):
        parts.append(f"LC layer: native kernels ({backend.get('vector_width')} floats per vector, "
                     f"{' '.join(backend.get('flags', []))}); lc_torch = the same layer on its torch backend")
    elif backend.get('error'):
        parts.append(f"LC layer: torch backend (native kernels unavailable: {backend['error'].splitlines()[0]})")
    if meta.get('warning'):
        parts.append('WARNING: ' + meta['warning'])
    if result['layers']:
        mem = next((r['mem_method'] for r in result['layers'] if r['mem_method']), None) or 'not measured'
        parts += ['', f"Layers: median over {meta['repeats']} interleaved repeats; GFLOP/s = 2 x MACs of the "
                      'conv-equivalent op (fwd+bwd = 3 x fwd); x conv_cl / x LC = time ratio to the channels-last '
                      'Conv2d / the LC layer, same shape and mode; peak MiB = extra memory of one call '
                      f'({mem})',
                  format_layer_table(result['layers']), '', 'Summary:', format_summary_table(result['layers'])]
    if result['models']:
        mem = next((r['mem_method'] for r in result['models'] if r['mem_method']), None) or 'not measured'
        parts += ['', 'Training step (forward + cross-entropy + backward + AdamW): median over steps; '
                      f'x conv = step time over the conv model of the pair; peak MiB: {mem}',
                  format_model_table(result['models'])]
    if result['targets']:
        parts += ['', 'Targets (issue 7):']
        for t in result['targets']:
            if t['met'] is None:
                verdict = f"not judged: {t['note']}" if t.get('note') else 'not measured'
            else:
                verdict = 'met' if t['met'] else 'NOT met'
            parts.append(f"  {t['name']}: {_fmt(t['value'])} (target {t['target']}): {verdict}")
    return '\n'.join(parts)


@dataclass
class BenchConfig:
    """Everything ``bioconv bench`` does; None fields take the defaults of ``quick`` / ``full`` / the device.

    quick: ResNet20 shapes at B=64 with 15 repeats (medians that hold on a noisy shared machine), and the
        ResNet20 training step (a few minutes on 2 cores).
    full: also the 0.5x ResNet18 training step on CPU (B=32; its LC model has 483M parameters); on CUDA
    it runs by default (B=256).
    """
    quick: bool = False
    full: bool = False
    device: str = 'cpu'
    amp: Optional[str] = None
    shapes: Optional[Sequence[str]] = None        # shape sets; default quick: resnet20, else all three
    batch_size: Optional[int] = None              # layer batch for every shape set (default: per set)
    repeats: Optional[int] = None
    warmup: int = 1
    impls: Sequence[str] = IMPLS
    modes: Sequence[str] = MODES
    memory: str = 'auto'
    max_memory_gib: Optional[float] = None
    min_repeat_ms: Optional[float] = None
    models: str = 'auto'                          # 'auto', 'none', 'resnet20', 'resnet18_half', 'all'
    model_batch_size: Optional[int] = None
    model_img_size: Optional[int] = None
    model_steps: Optional[int] = None
    model_warmup: int = 2
    optimizer: str = 'auto'
    threads: Optional[int] = None
    seed: int = 0
    json_path: Optional[str] = None


def _resolve(cfg: BenchConfig) -> BenchConfig:
    cuda = torch.device(cfg.device).type == 'cuda'
    shapes = cfg.shapes if cfg.shapes is not None else (('resnet20',) if cfg.quick else PUBLIC_SHAPE_SETS)
    batch = cfg.batch_size or (64 if cfg.quick else None)
    repeats = cfg.repeats or (15 if cfg.quick else (10 if cuda else 7))
    impls = tuple(cfg.impls)
    if cuda:  # the LC layer runs its torch backend on CUDA anyway: lc_torch would time it twice
        impls = tuple(i for i in impls if i != 'lc_torch')
    models = cfg.models
    if models == 'auto':
        models = 'all' if (cuda or cfg.full) and not cfg.quick else 'resnet20'
    steps = cfg.model_steps or 10
    return replace(cfg, shapes=tuple(shapes), batch_size=batch, repeats=repeats, models=models, model_steps=steps,
                   impls=impls)


def _model_pairs(models: str) -> Tuple[str, ...]:
    return {'none': (), 'resnet20': ('resnet20',), 'resnet18_half': ('resnet18_half',),
            'all': ('resnet20', 'resnet18_half')}[models]


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meta(cfg: BenchConfig) -> dict:
    dev = _device(cfg.device)
    tcmalloc = False
    try:
        with open('/proc/self/maps') as f:
            tcmalloc = 'tcmalloc' in f.read()
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else None
    cores = os.cpu_count() or 1
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else _cpu_name()
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        device=str(dev), device_name=f'{dev.type.upper()} {name}'.strip(), torch=torch.__version__,
        threads=torch.get_num_threads(), cpu_count=cores, omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
        tcmalloc=tcmalloc, allocator=_malloc.describe(), loadavg_1min=load,
        precision=f'autocast {cfg.amp}' if cfg.amp else 'fp32',
        python=platform.python_version(), repeats=cfg.repeats, quick=cfg.quick, full=cfg.full,
        lc_backend=native.build_info() if dev.type == 'cpu' else {'backend': 'torch (CUDA)'},
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()})
    if dev.type == 'cpu' and load is not None and load > 0.5 * cores:
        meta['warning'] = (f'load average {load:.1f} on {cores} cores before the run: other processes are '
                           'busy, so these timings are contended (run benchmarks alone)')
    return meta


def run_benchmark(cfg: BenchConfig, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run what ``cfg`` asks for; returns ``{'meta', 'layers', 'summary', 'models', 'targets'}`` (the JSON
    written to ``cfg.json_path``, if given)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg = _resolve(cfg)
    meta = _meta(cfg)
    max_bytes = int(cfg.max_memory_gib * 2 ** 30) if cfg.max_memory_gib is not None else None
    if meta.get('warning'):
        _progress(progress, 'warning: ' + meta['warning'])
    cases: List[LayerCase] = []
    for name in cfg.shapes:
        cases.extend(shape_set(name, cfg.batch_size))
    layers: List[dict] = []
    if cases:
        _progress(progress, f'layers: {len(cases)} shapes on {cfg.device}')
        layers = bench_layers(
            cases, impls=cfg.impls, modes=cfg.modes, repeats=cfg.repeats, warmup=cfg.warmup, device=cfg.device,
            amp=cfg.amp, memory=cfg.memory, max_memory_bytes=max_bytes,
            min_repeat_s=None if cfg.min_repeat_ms is None else cfg.min_repeat_ms / 1e3, seed=cfg.seed,
            progress=progress)
    models: List[dict] = []
    pairs = _model_pairs(cfg.models)
    if pairs:
        _progress(progress, f'training steps: {", ".join(pairs)} on {cfg.device}')
        models = bench_models(
            pairs, batch_size=cfg.model_batch_size, img_size=cfg.model_img_size, steps=cfg.model_steps,
            warmup=cfg.model_warmup, device=cfg.device, amp=cfg.amp, optimizer=cfg.optimizer,
            memory=cfg.memory != 'none', max_memory_bytes=max_bytes, seed=cfg.seed, progress=progress)
    result = dict(meta=meta, layers=layers, summary=summarize_layers(layers), models=models,
                  targets=check_targets(layers, models))
    if cfg.json_path:
        folder = os.path.dirname(os.path.abspath(cfg.json_path))
        os.makedirs(folder, exist_ok=True)
        with open(cfg.json_path, 'w') as f:
            json.dump(result, f, indent=1)
    return result


# ------------------------------------------------------------------------- the first version's API

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


def bench_resnet20_layers(batch_size: int = 128, repeats: int = 7,
                          shapes: Iterable[Tuple[int, int, int, int]] = RESNET20_SHAPES,
                          einsum: bool = True) -> List[LayerTiming]:
    """Forward+backward of LC vs channels-last Conv2d (3x3, padding 1), and optionally the einsum
    baseline: :func:`bench_layers` at these shapes, as one :class:`LayerTiming` per shape."""
    cases = [LayerCase('resnet20', f'{cin}->{cout}', batch_size, cin, cout, size, stride=stride)
             for cin, cout, size, stride in shapes]
    impls = ('conv_cl', 'lc', 'einsum') if einsum else ('conv_cl', 'lc')
    records = bench_layers(cases, impls=impls, modes=('fwd+bwd',), repeats=repeats, memory='none')
    rows = []
    for case in cases:
        by_impl = {r['impl']: r for r in records if r['label'] == case.label}
        conv, lc = by_impl['conv_cl'], by_impl['lc']
        row = LayerTiming(f'{case.in_channels}->{case.out_channels}ch {case.size}x{case.size} s{case.stride} '
                          f'B={batch_size}', conv['median_ms'], lc['median_ms'], lc['max_ms'] - lc['min_ms'],
                          lc['median_ms'] / conv['median_ms'])
        if einsum:
            row.einsum_ms = by_impl['einsum']['median_ms']
            row.einsum_over_lc = row.einsum_ms / row.lc_ms
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

