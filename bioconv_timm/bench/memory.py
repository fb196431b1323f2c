"""Memory: what a case needs (estimated before it runs, so that one that would not fit is skipped), and the
peak memory of one call (CUDA: the allocator's peak; CPU: the peak resident set, in a fresh subprocess per
shape or in-process)."""
from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from ..layers import chunk_bytes
from .cases import LayerCase
from .runners import IMPLS, make_runners

__all__ = ['estimate_case_bytes', 'CPU_MEM_METHOD', 'CPU_MEM_METHOD_INPROCESS', 'CUDA_MEM_METHOD', 'rss_peak_delta',
           'skip_reason', 'cpu_case_memory']

CPU_MEM_METHOD = 'peak RSS increase (VmHWM via clear_refs) of one call, fresh subprocess per shape'
CPU_MEM_METHOD_INPROCESS = 'peak RSS increase (VmHWM via clear_refs) of one call, in-process'
CUDA_MEM_METHOD = 'torch.cuda.max_memory_allocated of one call'

_WORKER_TAG = 'BIOCONV_BENCH_MEMORY '  # the line of the subprocess's stdout that holds its result
_PACKAGE_PARENT = Path(os.path.abspath(__file__)).parents[2]  # holds bioconv_timm/: a checkout or site-packages


# ------------------------------------------------------------------------------------------ estimates

def _estimate_layer_parts(case: LayerCase, impl: str, mode: str, act_bytes: int, chunk: int) -> int:
    b, cin, cout, k = case.batch, case.in_channels, case.out_channels, case.kernel
    loc = case.out_size ** 2
    x = b * cin * case.size ** 2
    xp = b * cin * (case.size + 2 * case.padding) ** 2
    out = b * cout * loc
    kk = cin * k * k                     # a location's patch, all groups together
    kw = (cin // case.groups) * k * k    # one output channel's kernel: a group's share of the patch
    bwd = mode == 'fwd+bwd'
    amp_copy = act_bytes < 4
    if impl in ('conv_nchw', 'conv_cl'):
        w = cout * kw
        return 4 * w * (2 if bwd else 1) + act_bytes * (2 * x + 2 * out) * (2 if bwd else 1)
    w = loc * cout * kw
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


def skip_reason(estimate: int, device: torch.device, max_memory_bytes: Optional[int]) -> Optional[str]:
    """Why a case estimated to need ``estimate`` bytes is skipped, or None when it fits."""
    limit, what = _memory_limit(device, max_memory_bytes)
    if limit is not None and estimate > limit:
        return f'needs ~{estimate / 2 ** 30:.1f} GiB (estimated), over {what}'
    return None


# ------------------------------------------------------------------------------------- peak RSS (CPU)

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


def rss_peak_delta(fn: Callable[[], None]) -> Optional[int]:
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


def _case_memory(case: LayerCase, impls: Sequence[str], modes: Sequence[str], amp: Optional[str],
                 seed: int) -> Dict[str, Optional[int]]:
    """CPU: the peak-RSS increase of one call per (impl, mode), each with its own freshly built layer;
    keys 'impl|mode'."""
    out: Dict[str, Optional[int]] = {}
    dev = torch.device('cpu')
    for impl in impls:
        for mode in modes:
            runner = make_runners(case, [impl], dev, amp, seed)[impl]
            runner.call(mode)  # warm-up: one-time initializations are not the call's memory
            runner.module.zero_grad(set_to_none=True)
            runner.x.grad = None
            out[f'{impl}|{mode}'] = rss_peak_delta(lambda: runner.call(mode))
            del runner
            _release_free_memory()
    return out


def _memory_worker() -> None:
    """Entry point of the per-shape subprocess: JSON job on stdin, one JSON result line on stdout."""
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(job['threads'])
    case = LayerCase(**job['case'])
    result = _case_memory(case, job['impls'], job['modes'], job['amp'], job['seed'])
    print(_WORKER_TAG + json.dumps(result), flush=True)


def _subprocess_case_memory(case: LayerCase, impls: Sequence[str], modes: Sequence[str], amp: Optional[str],
                            seed: int) -> Tuple[Optional[Dict[str, Optional[int]]], str]:
    """:func:`_case_memory` in a fresh Python process (this installation's package first on its path):
    (result, '') or (None, the last line of its stderr)."""
    job = dict(case=asdict(case), impls=list(impls), modes=list(modes), amp=amp, seed=seed,
               threads=torch.get_num_threads())
    code = f'from {__name__} import _memory_worker; _memory_worker()'  # this module, wherever it lives
    path = os.pathsep.join(filter(None, [str(_PACKAGE_PARENT), os.environ.get('PYTHONPATH')]))
    proc = subprocess.run([sys.executable, '-c', code], input=json.dumps(job), capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=path))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_WORKER_TAG)]
    if proc.returncode != 0 or not lines:
        return None, (proc.stderr.strip().splitlines() or ['no output'])[-1]
    return json.loads(lines[-1][len(_WORKER_TAG):]), ''


def cpu_case_memory(case: LayerCase, impls: Sequence[str], modes: Sequence[str],
                     recs: Dict[Tuple[str, str], dict], amp: Optional[str], seed: int, in_process: bool) -> None:
    """Fill ``peak_mem_bytes`` and ``mem_method`` of the (impl, mode) records ``recs`` at ``case`` (CPU)."""
    if in_process:
        result: Optional[Dict[str, Optional[int]]] = _case_memory(case, impls, modes, amp, seed)
        method = CPU_MEM_METHOD_INPROCESS
    else:
        result, err = _subprocess_case_memory(case, impls, modes, amp, seed)
        if result is None:
            for impl in impls:
                for mode in modes:
                    recs[impl, mode]['mem_method'] = f'unavailable: memory subprocess failed ({err})'
            return
        method = CPU_MEM_METHOD
    for impl in impls:
        for mode in modes:
            value = result.get(f'{impl}|{mode}')
            recs[impl, mode]['peak_mem_bytes'] = value
            recs[impl, mode]['mem_method'] = method if value is not None else 'unavailable: no /proc/self/clear_refs'
