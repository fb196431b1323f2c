"""The report: the speed targets against a run, and the plain-text tables of layers, summary and models."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .machine import ADAMW_VALUES_MOVED_PER_PARAM, adamw_step_bytes
from .steps import MODEL_PAIRS
from .timing import summarize_layers

__all__ = ['LAYER_TARGETS', 'TARGETS', 'STEP_TARGET_SETTINGS', 'check_targets', 'format_layer_table', 'format_summary_table',
           'format_model_table', 'format_report', 'step_floor_ms']

# The project's current speed targets (issue 27), in one place: check_targets reads them, format_report prints
# them (information only, never asserted). Layer targets: the worst LC / channels-last conv ratio over a shape
# set's (group, mode) records; step targets: the LC model's step over the conv model's.
LAYER_TARGETS = (  # (name, shape group, mode, at most)
    ('worst LC / conv_cl, fwd+bwd, ResNet20 shapes', 'resnet20', 'fwd+bwd', 1.3),
    ('worst LC / conv_cl, fwd+bwd, 0.5x ResNet18 shapes', 'resnet18_half224', 'fwd+bwd', 1.6),
    ('worst LC / conv_cl, fwd, 0.5x ResNet18 shapes', 'resnet18_half224', 'fwd', 1.6),
)
TARGETS = dict(lc_resnet20_step=1.4,        # lc_resnet20 training step <= 1.4x conv_resnet20
               lc_resnet18_half_step=2.0,   # lc_resnet18_half step <= 2x conv at B=32 on the CPU
               lc_resnet18_half_floor=2.0)  # ... and <= 2x its bytes-moved floor (step_floor_ms)
# Where a training-step target is set, as (device type, batch); a step measured elsewhere is reported unjudged.
STEP_TARGET_SETTINGS = dict(lc_resnet18_half_step=('cpu', 32), lc_resnet18_half_floor=('cpu', 32))


def check_targets(layer_records: Sequence[dict], model_records: Sequence[dict],
                  copy_gb_per_s: Optional[float] = None) -> List[dict]:
    """The targets (:data:`LAYER_TARGETS`, :data:`TARGETS`) against this run (information only: a target is
    'met', 'not met', or None when the run did not measure it, or measured it where the target does not apply:
    then ``note`` says why). ``copy_gb_per_s``: the bandwidth the floor target is judged at (bench.machine)."""
    out = []
    summary = summarize_layers(layer_records)
    for name, group, mode, bound in LAYER_TARGETS:
        ratios = [r['lc_over_conv_cl'] for r in summary
                  if r['group'] == group and r['mode'] == mode and r['lc_over_conv_cl'] is not None]
        worst = max(ratios) if ratios else None
        out.append(dict(name=name, value=worst, target=f'<= {bound}', met=(worst <= bound) if ratios else None))
    # (pair, target, measured against: the conv model's step or the step's bytes-moved floor)
    for arch, key, against in (('resnet20', 'lc_resnet20_step', 'conv'), ('resnet18_half', 'lc_resnet18_half_step', 'conv'),
                               ('resnet18_half', 'lc_resnet18_half_floor', 'floor')):
        lc = next((r for r in model_records if r['arch'] == arch and r['layer_type'] == 'lc'), None)
        if against == 'floor':
            floor = step_floor_ms(lc['params'], copy_gb_per_s) if lc and lc.get('params') else None
            value = lc['median_ms'] / floor if floor and lc.get('median_ms') else None
            name = f'{MODEL_PAIRS[arch][1]} training step / its bytes-moved floor'
        else:
            value = lc['ratio_to_conv'] if lc else None
            name = f'{MODEL_PAIRS[arch][1]} / {MODEL_PAIRS[arch][0]} training step'
        note = None
        if lc:
            name += f" (B={lc['batch']}, {lc['device']})"
            setting = STEP_TARGET_SETTINGS.get(key)
            if setting and (torch.device(lc['device']).type, lc['batch']) != setting:
                note = f'the target is for B={setting[1]} on {setting[0]}'
        out.append(dict(name=name, value=value, target=f'<= {TARGETS[key]}', note=note,
                        met=(value <= TARGETS[key]) if value is not None and note is None else None))
    return out


def _fmt(value: Optional[float], spec: str = '.2f', none: str = '-') -> str:
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


def _percent(part: Optional[float], whole: Optional[float]) -> str:
    return '-' if part is None or not whole else f'{100 * part / whole:.0f}%'


def format_layer_table(records: Sequence[dict], sgemm_gflop_per_s: Optional[float] = None) -> str:
    """Every record: median ms, min-max, IQR, GFLOP/s and its fraction of the run's sgemm rate
    (``bench.machine``), ratio to conv_cl and to LC, peak memory, and the backend an LC implementation ran on
    (which backend runs which kind of layer: ``layers.ops.KERNELS``)."""
    rows = []
    for r in records:
        if r['skipped']:
            rows.append([r['label'], r['mode'], r['impl'], 'skipped: ' + r['skipped']] + [''] * 8)
            continue
        rows.append([r['label'], r['mode'], r['impl'], _fmt(r['median_ms']),
                     f"{_fmt(r['min_ms'])}-{_fmt(r['max_ms'])}", f"{_fmt(r['q1_ms'])}-{_fmt(r['q3_ms'])}",
                     _fmt(r['gflop_per_s'], '.1f'), _percent(r['gflop_per_s'], sgemm_gflop_per_s),
                     _fmt(r['ratio_to_conv_cl']), _fmt(r['ratio_to_lc']), _mib(r['peak_mem_bytes']),
                     r.get('lc_backend') or '-'])
    return _table(['shape', 'mode', 'impl', 'median ms', 'min-max ms', 'IQR ms', 'GFLOP/s', 'of sgemm', 'x conv_cl',
                   'x LC', 'peak MiB', 'LC backend'], rows, left=3)


def format_summary_table(records: Sequence[dict]) -> str:
    """Per (shape, mode): conv NCHW / channels-last / LC / LC torch backend / einsum medians, LC/conv_cl,
    einsum/LC, LC torch/LC, and the backend the LC column ran on."""
    rows = [[s['label'], s['mode'], _fmt(s.get('conv_nchw_ms')), _fmt(s.get('conv_cl_ms')), _fmt(s.get('lc_ms')),
             _fmt(s.get('lc_torch_ms')), _fmt(s.get('einsum_ms')), _fmt(s['lc_over_conv_cl']),
             _fmt(s['einsum_over_lc'], '.1f'), _fmt(s['lc_torch_over_lc'], '.1f'), s.get('lc_backend') or '-']
            for s in summarize_layers(records)]
    return _table(['shape', 'mode', 'conv_nchw ms', 'conv_cl ms', 'LC ms', 'LC torch ms', 'einsum ms', 'LC/conv_cl',
                   'einsum/LC', 'torch/LC', 'LC backend'], rows, left=2)


def step_floor_ms(params: int, copy_gb_per_s: Optional[float]) -> Optional[float]:
    """The least time of an AdamW step of ``params`` fp32 parameters at the measured copy bandwidth (ms)."""
    return None if not copy_gb_per_s else adamw_step_bytes(params) / (copy_gb_per_s * 1e9) * 1e3


def format_model_table(records: Sequence[dict], copy_gb_per_s: Optional[float] = None) -> str:
    """Every model record: batch, input, parameters, step time and spread, images/s, ratio to conv, the step's
    bytes-moved floor at the measured bandwidth and the time over it, peak memory."""
    rows = []
    for r in records:
        size = 'x'.join(str(s) for s in r['img_size'])
        floor = step_floor_ms(r['params'], copy_gb_per_s)
        head = [r['model'], str(r['batch']), size, f"{r['params'] / 1e6:.2f}M"]
        if r['skipped']:
            rows.append(head + ['skipped: ' + r['skipped']] + [''] * 7)
            continue
        rows.append(head + [_fmt(r['median_ms'], '.1f'), f"{_fmt(r['min_ms'], '.1f')}-{_fmt(r['max_ms'], '.1f')}",
                            _fmt(r['images_per_s'], '.1f'), _fmt(r['ratio_to_conv']), _fmt(floor, '.1f'),
                            _fmt(None if floor is None else r['median_ms'] / floor, '.1f'),
                            _mib(r['peak_mem_bytes']), r['optimizer'] or '-'])
    return _table(['model', 'batch', 'input', 'params', 'step ms', 'min-max ms', 'images/s', 'x conv',
                   'floor ms', 'x floor', 'peak MiB', 'optimizer'], rows)


def format_report(result: dict) -> str:
    """The text ``bioconv bench`` prints for a :func:`run_benchmark` result: the machine, the tables, the targets."""
    meta = result['meta']
    parts = [f"bioconv bench: {meta['device_name']}, {meta['precision']}, torch {meta['torch']}, "
             f"{meta['threads']} threads, {meta['date']}"]
    if meta.get('allocator'):
        parts.append(f"allocator: {meta['allocator']['summary']}")
    backend = meta.get('lc_backend') or {}
    if backend.get('available'):
        isa = f"{backend['isa']} build, " if backend.get('isa') else ''  # which path was built (BIOCONV_NATIVE_ARCH)
        parts.append(f"LC layer: native kernels ({isa}{backend.get('vector_width')} floats per vector, "
                     f"{' '.join(backend.get('flags', []))}); lc_torch = the same layer on its torch backend"
                     + ('; depthwise layers: their own native kernels, other grouped layers: the dense ones '
                        'per channel group' if any(r.get('groups', 1) != 1 for r in result['layers']) else ''))
    elif backend.get('error'):
        parts.append(f"LC layer: torch backend (native kernels unavailable: {backend['error'].splitlines()[0]})")
    limits = meta.get('machine') or {}
    if limits:
        parts.append(f"machine, measured in this run: fp32 sgemm {limits['sgemm_gflop_per_s']:.1f} GFLOP/s (a "
                     f"practical FMA peak), copy bandwidth {limits['copy_gb_per_s']:.1f} GB/s (read + write)")
    if meta.get('warning'):
        parts.append('WARNING: ' + meta['warning'])
    if result['layers']:
        mem = next((r['mem_method'] for r in result['layers'] if r['mem_method']), None) or 'not measured'
        parts += ['', f"Layers: median over {meta['repeats']} interleaved repeats; GFLOP/s = 2 x MACs of the "
                      'conv-equivalent op (fwd+bwd = 3 x fwd); of sgemm = that rate over the sgemm rate above; '
                      'x conv_cl / x LC = time ratio to the channels-last Conv2d / the LC layer, same shape and '
                      f'mode; peak MiB = extra memory of one call ({mem})',
                  format_layer_table(result['layers'], limits.get('sgemm_gflop_per_s')), '', 'Summary:', format_summary_table(result['layers'])]
    if result['models']:
        mem = next((r['mem_method'] for r in result['models'] if r['mem_method']), None) or 'not measured'
        parts += ['', 'Training step (forward + cross-entropy + backward + AdamW): median over steps; '
                      f'x conv = step time over the conv model of the pair; floor ms = the bytes an AdamW step '
                      f'must move ({ADAMW_VALUES_MOVED_PER_PARAM} x 4 bytes per parameter: weights read twice, '
                      'gradient written, AdamW reading 4 and writing 3 tensors; bench.machine) at the copy bandwidth '
                      f'above, x floor = step time over it; peak MiB: {mem}',
                  format_model_table(result['models'], limits.get('copy_gb_per_s'))]
    if result['targets']:
        parts += ['', 'Targets (bioconv_timm.bench.report: LAYER_TARGETS, TARGETS):']
        for t in result['targets']:
            if t['met'] is None:
                verdict = f"not judged: {t['note']}" if t.get('note') else 'not measured'
            else:
                verdict = 'met' if t['met'] else 'NOT met'
            parts.append(f"  {t['name']}: {_fmt(t['value'])} (target {t['target']}): {verdict}")
    return '\n'.join(parts)
