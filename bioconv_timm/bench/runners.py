"""What a measurement is made of: the implementations and modes, one layer call on its own inputs, device
synchronization, autocast, and the statistics of repeated timings."""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..layers import LocallyConnected2d, native, resolve_backend
from .baseline import TorchBackendLC, UnfoldEinsumLC
from .cases import IMPLS, MODES, LayerCase  # IMPLS, MODES: re-exported here

__all__ = ['IMPLS', 'MODES', 'AMP_DTYPES', 'lc_backend', 'amp_context', 'resolve_device', 'sync_device', 'timing_stats',
           'report_progress', 'make_runners']

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
CHANNELS_LAST_IMPLS = ('conv_cl', 'lc', 'lc_torch')  # the LC models run channels-last; the others get NCHW


def amp_context(device: torch.device, amp: Optional[str]):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """torch.device with an explicit index for CUDA ('cuda' -> 'cuda:<current>'), as older torch's memory
    functions require."""
    dev = torch.device(device)
    if dev.type == 'cuda' and dev.index is None:
        dev = torch.device('cuda', torch.cuda.current_device())
    return dev


def sync_device(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timing_stats(times_ms: Sequence[float]) -> Dict[str, float]:
    """Median, min, max and quartiles (``*_ms``) of one or more timings."""
    ts = sorted(times_ms)
    if len(ts) >= 2:
        q1, _, q3 = statistics.quantiles(ts, n=4, method='inclusive')
    else:
        q1 = q3 = ts[0]
    return dict(median_ms=statistics.median(ts), min_ms=ts[0], max_ms=ts[-1], q1_ms=q1, q3_ms=q3)


def report_progress(progress: Optional[Callable[[str], None]], message: str) -> None:
    if progress is not None:
        progress(message)


def _conv(case: LayerCase) -> nn.Conv2d:
    """The ``nn.Conv2d`` of ``case`` (groups and dilation included), bias-free like the LC layer here."""
    return nn.Conv2d(case.in_channels, case.out_channels, case.kernel, case.stride, case.padding,
                     dilation=case.dilation, groups=case.groups, bias=False)


def lc_backend(case: LayerCase, impl: str, device: Union[str, torch.device] = 'cpu',
               amp: Optional[str] = None) -> Tuple[Optional[str], Optional[str]]:
    """(backend, None): the LC backend ('native' or 'torch') that ``impl`` runs ``case`` on in this process
    (``lc``: the process's choice, ``BIOCONV_LC_BACKEND`` / ``native.use_backend``; ``lc_torch``: torch); or
    (None, why ``impl`` cannot run ``case``), e.g. ``lc`` under the native backend where the kernels do not
    build. (None, None) for the implementations that are not the LC layer."""
    if impl not in ('lc', 'lc_torch'):
        return None, None
    # the layer casts to the autocast dtype before its operator picks a backend: decide on that dtype
    dtype = AMP_DTYPES[amp] if amp else torch.float32
    x = torch.empty(0, dtype=dtype, device=device)
    taps = torch.empty(0, 0, 0, case.kernel, case.kernel, 0, dtype=dtype, device=device)  # shape[3:5] = taps
    try:
        return resolve_backend(x, taps, 'torch' if impl == 'lc_torch' else ''), None
    except native.NativeBuildError as err:
        return None, f'{impl} backend {native.get_backend()!r}: {str(err).splitlines()[0]}'


def _build_layer(case: LayerCase, impl: str, device: torch.device, conv: nn.Conv2d,
                 lc_holder: Dict[str, LocallyConnected2d], lc_from_conv: bool = False) -> nn.Module:
    """``impl``'s module at ``case``: the conv ones share ``conv``'s weights, the LC ones the LC layer kept in
    ``lc_holder`` (built by the first of them; its own random kernel per location, or with ``lc_from_conv``
    ``conv``'s kernel at every location, so that all five compute the conv's function: for tests)."""
    if impl == 'conv_nchw':
        return conv
    if impl == 'conv_cl':
        cl = _conv(case)
        cl.load_state_dict(conv.state_dict())
        return cl.to(device=device, memory_format=torch.channels_last)
    if 'lc' not in lc_holder:
        if lc_from_conv:
            lc_holder['lc'] = LocallyConnected2d.from_conv(conv, case.size)
        else:
            lc_holder['lc'] = LocallyConnected2d(case.in_channels, case.out_channels, case.kernel, case.size,
                                                 case.stride, case.padding, case.dilation, case.groups,
                                                 device=device)
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
            with torch.no_grad(), amp_context(self.device, self.amp):
                self.module(self.x)
            return
        self.module.zero_grad(set_to_none=True)
        self.x.grad = None
        with amp_context(self.device, self.amp):
            y = self.module(self.x)
        if self.grad is None or self.grad.dtype != y.dtype or self.grad.stride() != y.stride():
            # the same values in the output's dtype and memory format
            self.grad = torch.empty_like(y).copy_(self.grad0)
        y.backward(self.grad)

    def timed(self, mode: str) -> float:
        """Milliseconds per call, ``inner`` calls between two synchronizations."""
        inner = self.inner.get(mode, 1)
        sync_device(self.device)
        start = time.perf_counter()
        for _ in range(inner):
            self.call(mode)
        sync_device(self.device)
        return (time.perf_counter() - start) * 1e3 / inner


def make_runners(case: LayerCase, impls: Sequence[str], device: torch.device, amp: Optional[str],
                  seed: int = 0, lc_from_conv: bool = False) -> Dict[str, _LayerRunner]:
    """{impl: runner} at ``case``, all on the same input (B, Cin, size, size) and output gradient
    (B, Cout, out_size, out_size), seeded. ``lc_from_conv``: the LC layers hold the conv's weights."""
    torch.manual_seed(seed)
    conv = _conv(case).to(device)
    x0 = torch.randn(case.batch, case.in_channels, case.size, case.size, device=device)
    g0 = torch.randn(case.batch, case.out_channels, case.out_size, case.out_size, device=device)
    holder: Dict[str, LocallyConnected2d] = {}
    runners = {}
    for impl in impls:
        module = _build_layer(case, impl, device, conv, holder, lc_from_conv)
        fmt = torch.channels_last if impl in CHANNELS_LAST_IMPLS else torch.contiguous_format
        x = x0.contiguous(memory_format=fmt).clone(memory_format=fmt).requires_grad_(True)
        runners[impl] = _LayerRunner(module, x, g0, device, amp)
    return runners
