"""Layer timings: every implementation and mode at each case, interleaved on the same inputs, one record per
(case, impl, mode) with its spread, GFLOP/s, time ratios and peak memory."""
from __future__ import annotations

import gc
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .cases import LayerCase
from .memory import CUDA_MEM_METHOD, cpu_case_memory, estimate_case_bytes, skip_reason
from .runners import (AMP_DTYPES, CHANNELS_LAST_IMPLS, IMPLS, MODES, lc_backend, make_runners, report_progress,
                      resolve_device, sync_device, timing_stats)

__all__ = ['bench_layers', 'add_ratios', 'summarize_layers']


def _layer_record(case: LayerCase, impl: str, mode: str, device: torch.device, amp: Optional[str]) -> dict:
    """The record of (case, impl, mode) before it is measured: the shape, the work, the memory estimate, and
    for the LC implementations the backend they run on (``lc_backend``: None for the others)."""
    backend, _ = lc_backend(case, impl, device, amp)
    return dict(
        group=case.group, shape=case.name, label=case.label, batch=case.batch,
        in_channels=case.in_channels, out_channels=case.out_channels, input_size=[case.size, case.size],
        output_size=[case.out_size, case.out_size], kernel=case.kernel, stride=case.stride,
        padding=case.padding, groups=case.groups, dilation=case.dilation, impl=impl, mode=mode,
        device=str(device), amp=amp, lc_backend=backend,
        input_format='channels_last' if impl in CHANNELS_LAST_IMPLS else 'nchw',
        gflop=2 * case.macs * (3 if mode == 'fwd+bwd' else 1) / 1e9,
        repeats=0, inner=None, times_ms=[], median_ms=None, min_ms=None, max_ms=None, q1_ms=None, q3_ms=None,
        gflop_per_s=None, ratio_to_conv_cl=None, ratio_to_lc=None,
        estimated_bytes=estimate_case_bytes(case, impl, mode, amp, device), peak_mem_bytes=None, mem_method=None,
        skipped=None)


def _memory_method(memory: str, dev: torch.device) -> str:
    """'cuda', 'subprocess', 'inprocess' or 'none' from ``bench_layers``'s ``memory`` argument."""
    if memory == 'auto':
        memory = 'cuda' if dev.type == 'cuda' else 'subprocess'
    elif memory in ('subprocess', 'inprocess') and dev.type == 'cuda':
        memory = 'cuda'
    if memory not in ('cuda', 'subprocess', 'inprocess', 'none'):
        raise ValueError(f"memory must be 'auto', 'subprocess', 'inprocess' or 'none', got {memory!r}")
    return memory


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
    dev = resolve_device(device)
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
    memory = _memory_method(memory, dev)
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
                # an implementation that cannot compute this case (the native LC kernels and groups) is
                # skipped with its reason, like one that would not fit in memory
                _, reason = lc_backend(case, impl, dev, amp)
                if not reason:
                    estimate = max(recs[impl, mode]['estimated_bytes'] for mode in modes)
                    reason = skip_reason(estimate, dev, max_memory_bytes)
                if reason:
                    for mode in modes:
                        recs[impl, mode]['skipped'] = reason
                    report_progress(progress, f'  {case.label} {impl}: skipped, {reason}')
                else:
                    run_impls.append(impl)
            if run_impls:
                report_progress(progress, f'  {case.label}: {", ".join(run_impls)} x {", ".join(modes)}, '
                                    f'{repeats} repeats')
                _time_case(case, run_impls, modes, recs, dev, amp, repeats, warmup, min_repeat_s, memory, seed)
                if memory in ('subprocess', 'inprocess'):
                    cpu_case_memory(case, run_impls, modes, recs, amp, seed, in_process=memory == 'inprocess')
            records.extend(recs[impl, mode] for mode in modes for impl in impls)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    return add_ratios(records)


def _time_case(case: LayerCase, impls: Sequence[str], modes: Sequence[str], recs: Dict[Tuple[str, str], dict],
               dev: torch.device, amp: Optional[str], repeats: int, warmup: int, min_repeat_s: float,
               memory: str, seed: int) -> None:
    """Time every (impl, mode) at ``case`` into ``recs``: the repeats rotate the order of the implementations,
    so that no one of them always runs first; on CUDA also the allocator peak of one call."""
    runners = make_runners(case, impls, dev, amp, seed)
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
                    sync_device(dev)
                    runner.module.zero_grad(set_to_none=True)
                    runner.x.grad = None
                    torch.cuda.reset_peak_memory_stats(dev)
                    before = torch.cuda.memory_allocated(dev)
                    runner.call(mode)
                    sync_device(dev)
                    recs[impl, mode]['peak_mem_bytes'] = int(torch.cuda.max_memory_allocated(dev) - before)
                    recs[impl, mode]['mem_method'] = CUDA_MEM_METHOD
        for (impl, mode), rec in recs.items():
            if impl in runners:
                rec.update(timing_stats(rec['times_ms']), repeats=len(rec['times_ms']))
                rec['gflop_per_s'] = rec['gflop'] / (rec['median_ms'] / 1e3)
    finally:
        del runners
        gc.collect()
        if dev.type == 'cuda':
            torch.cuda.empty_cache()


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
    """One row per (case, mode): the median of each implementation, LC / conv_cl, einsum / LC,
    LC torch backend / LC, and the backend the ``lc`` implementation ran on (``lc_backend``)."""
    rows: Dict[Tuple[str, str], dict] = {}
    for r in records:
        row = rows.setdefault((r['label'], r['mode']), dict(label=r['label'], group=r['group'], mode=r['mode']))
        row[f"{r['impl']}_ms"] = r['median_ms']
        row[f"{r['impl']}_peak_mem_bytes"] = r['peak_mem_bytes']
        if r['impl'] == 'lc':
            row['lc_backend'] = None if r['skipped'] else r.get('lc_backend')
    for row in rows.values():
        lc, conv_cl, einsum = row.get('lc_ms'), row.get('conv_cl_ms'), row.get('einsum_ms')
        lc_torch = row.get('lc_torch_ms')
        row['lc_over_conv_cl'] = lc / conv_cl if lc and conv_cl else None
        row['einsum_over_lc'] = einsum / lc if einsum and lc else None
        row['lc_torch_over_lc'] = lc_torch / lc if lc_torch and lc else None
    return list(rows.values())
