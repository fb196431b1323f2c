"""Whole-model training steps: images/s and peak memory of conv vs LC models, their steps interleaved."""
from __future__ import annotations

import gc
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sharding import estimate_model_bytes
from .memory import CUDA_MEM_METHOD, rss_peak_delta, skip_reason
from .runners import amp_context, resolve_device, report_progress, timing_stats, sync_device

__all__ = ['MODEL_PAIRS', 'default_model_batch', 'bench_models']

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
    """(parameter count, (H, W) input size) of a registered model, built on the meta device."""
    import timm

    from .. import models as _  # noqa: F401  (registers the models)
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
    """One model in training: channels-last, AdamW, a fixed batch (B, C, H, W) with labels (B,)."""

    def __init__(self, name: str, batch: int, img_size: Optional[int], dev: torch.device, amp: Optional[str],
                 optimizer: str, seed: int) -> None:
        import timm

        from .. import models as _  # noqa: F401
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
        with amp_context(self.dev, self.amp):
            loss = F.cross_entropy(self.model(self.x), self.y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def timed(self) -> float:
        """Milliseconds of one step."""
        sync_device(self.dev)
        start = time.perf_counter()
        self.step()
        sync_device(self.dev)
        return (time.perf_counter() - start) * 1e3

    def resident_bytes(self) -> int:
        """Bytes of the tensors resident at the start of a step: parameters, buffers, AdamW state, batch."""
        tensors = list(self.model.parameters()) + list(self.model.buffers()) + [self.x, self.y]
        for state in self.optimizer.state.values():
            tensors.extend(v for v in state.values() if torch.is_tensor(v))
        return sum(t.numel() * t.element_size() for t in tensors)

    def peak_memory(self) -> Tuple[Optional[int], Optional[int], str]:
        """(absolute peak bytes of one step, extra over the start of the step, method)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.dev.type == 'cuda':
            sync_device(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)
            before = torch.cuda.memory_allocated(self.dev)
            self.step()
            sync_device(self.dev)
            peak = int(torch.cuda.max_memory_allocated(self.dev))
            return peak, peak - before, CUDA_MEM_METHOD + ' (absolute)'
        extra = rss_peak_delta(self.step)
        if extra is None:
            return None, None, 'unavailable: no /proc/self/clear_refs'
        return (self.resident_bytes() + extra, extra,
                'resident tensors (params, buffers, AdamW state, batch) + peak RSS increase of one step')


def _model_record(name: str, arch: str, batch: int, size: Tuple[int, int], params: int, dev: torch.device,
                  amp: Optional[str], estimate: int, skipped: Optional[str]) -> dict:
    """The record of one model before it is measured."""
    return dict(
        model=name, arch=arch, layer_type='lc' if name.startswith('lc_') else 'conv', batch=batch,
        img_size=list(size), params=params, device=str(dev), amp=amp, optimizer=None, steps=0,
        times_ms=[], median_ms=None, min_ms=None, max_ms=None, q1_ms=None, q3_ms=None,
        images_per_s=None, ratio_to_conv=None, estimated_bytes=estimate, peak_mem_bytes=None,
        step_extra_bytes=None, resident_bytes=None, mem_method=None, skipped=skipped)


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
    dev = resolve_device(device)
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
            recs[name] = _model_record(name, arch, batch, size, params, dev, amp, estimate,
                                       skip_reason(estimate, dev, max_memory_bytes))
            if recs[name]['skipped']:
                report_progress(progress, f'  {name} B={batch}: skipped, {recs[name]["skipped"]}')
                continue
            report_progress(progress, f'  {name} B={batch} {size[0]}x{size[1]}: building ({params / 1e6:.1f}M params)')
            runners[name] = _ModelRunner(name, batch, img_size, dev, amp, optimizer, seed)
            recs[name]['optimizer'] = f'adamw ({runners[name].optimizer_impl})'
        try:
            _time_steps(runners, recs, batch, steps, warmup, memory, progress)
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


def _time_steps(runners: Dict[str, _ModelRunner], recs: Dict[str, dict], batch: int, steps: int, warmup: int,
                memory: bool, progress: Optional[Callable[[str], None]]) -> None:
    """Warm up, then time ``steps`` steps of every runner (rotating their order) into ``recs``; with
    ``memory``, also the peak memory of one step."""
    if runners:
        report_progress(progress, f'  {" vs ".join(runners)}: {warmup} warm-up + {steps} timed steps')
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
            rec.update(timing_stats(rec['times_ms']), steps=len(rec['times_ms']))
            rec['images_per_s'] = batch / (rec['median_ms'] / 1e3)
        if memory:
            peak, extra, method = runner.peak_memory()
            rec.update(peak_mem_bytes=peak, step_extra_bytes=extra, mem_method=method,
                       resident_bytes=runner.resident_bytes())
