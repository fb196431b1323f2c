"""One benchmark run: the defaults of ``BenchConfig`` (what ``bioconv bench`` does; declared in :mod:`.config`),
the machine it ran on, and :func:`run_benchmark`, which measures layers and training steps and returns (and
writes) the records."""
from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import asdict, replace
from typing import Callable, List, Optional, Tuple

import torch

from .._malloc import describe as describe_allocator
from .._atomic import atomic_path
from ..layers import native
from .cases import PAPER_SHAPE_SETS, LayerCase, shape_set
from .config import BenchConfig  # torch-free (the CLI's flags); re-exported here
from .machine import machine_limits
from .report import check_targets
from .runners import resolve_device, report_progress
from .steps import bench_models
from .timing import bench_layers, summarize_layers

__all__ = ['BenchConfig', 'run_benchmark']


def _resolve(cfg: BenchConfig) -> BenchConfig:
    """``cfg`` with every None default filled in for its device and ``quick`` / ``full``."""
    cuda = torch.device(cfg.device).type == 'cuda'
    shapes = cfg.shapes if cfg.shapes is not None else (('resnet20',) if cfg.quick else PAPER_SHAPE_SETS)
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
    """The :data:`MODEL_PAIRS` keys of a ``models`` setting ('none', 'resnet20', 'resnet18_half', 'all')."""
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
    """The machine and settings of a run (a contended CPU gets a ``warning``)."""
    dev = resolve_device(cfg.device)
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
        tcmalloc=tcmalloc, allocator=describe_allocator(), loadavg_1min=load,
        precision=f'autocast {cfg.amp}' if cfg.amp else 'fp32',
        python=platform.python_version(), repeats=cfg.repeats, quick=cfg.quick, full=cfg.full,
        lc_backend=native.build_info() if dev.type == 'cpu' else {'backend': 'torch (CUDA)'},
        machine=machine_limits() if dev.type == 'cpu' else None,
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
        report_progress(progress, 'warning: ' + meta['warning'])
    cases: List[LayerCase] = []
    for name in cfg.shapes:
        cases.extend(shape_set(name, cfg.batch_size))
    layers: List[dict] = []
    if cases:
        report_progress(progress, f'layers: {len(cases)} shapes on {cfg.device}')
        layers = bench_layers(
            cases, impls=cfg.impls, modes=cfg.modes, repeats=cfg.repeats, warmup=cfg.warmup, device=cfg.device,
            amp=cfg.amp, memory=cfg.memory, max_memory_bytes=max_bytes,
            min_repeat_s=None if cfg.min_repeat_ms is None else cfg.min_repeat_ms / 1e3, seed=cfg.seed,
            progress=progress)
    models: List[dict] = []
    pairs = _model_pairs(cfg.models)
    if pairs:
        report_progress(progress, f'training steps: {", ".join(pairs)} on {cfg.device}')
        models = bench_models(
            pairs, batch_size=cfg.model_batch_size, img_size=cfg.model_img_size, steps=cfg.model_steps,
            warmup=cfg.model_warmup, device=cfg.device, amp=cfg.amp, optimizer=cfg.optimizer,
            memory=cfg.memory != 'none', max_memory_bytes=max_bytes, seed=cfg.seed, progress=progress)
    result = dict(meta=meta, layers=layers, summary=summarize_layers(layers), models=models,
                  targets=check_targets(layers, models, (meta.get('machine') or {}).get('copy_gb_per_s')))
    if cfg.json_path:
        folder = os.path.dirname(os.path.abspath(cfg.json_path))
        os.makedirs(folder, exist_ok=True)
        with atomic_path(cfg.json_path) as tmp, open(tmp, 'w') as f:
            json.dump(result, f, indent=1)
    return result
