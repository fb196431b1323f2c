"""The benchmark harness (bioconv_timm.bench, `bioconv bench`): well-formed records at test-sized shapes, the
einsum baseline computes the LC layer, the CLI parses and runs. Nothing here asserts a speed."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bioconv_timm import bench
from bioconv_timm.bench import (IMPLS, MODES, BenchConfig, LayerCase, UnfoldEinsumLC, bench_layers, bench_models,
                                estimate_case_bytes, format_report, run_benchmark, shape_set, summarize_layers)
from bioconv_timm.bench.run import _resolve
from bioconv_timm.bench.runners import make_runners
from bioconv_timm.cli import bench as bench_cli
from bioconv_timm.cli import build_parser, main
from bioconv_timm.layers import LocallyConnected2d, native
from bioconv_timm.settings import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
HAS_CLEAR_REFS = Path('/proc/self/clear_refs').exists()


@pytest.fixture(autouse=True)
def _small_machine_measurements(monkeypatch):
    """Every run_benchmark measures the machine (bench.machine.machine_limits: a 2048^3 sgemm and a 512 MiB copy,
    5 times each, seconds per run). Here machine_limits runs as it is, on a 128^3 sgemm and an 8 MiB copy measured
    once (the sizes test_machine_limits_are_measured_... checks the measurements at); a subprocess (the
    scripts/bench_lc.py test) still measures at the full sizes."""
    from bioconv_timm.bench import machine
    sgemm, copy = machine.measure_sgemm_gflops, machine.measure_copy_bandwidth
    monkeypatch.setattr(machine, 'measure_sgemm_gflops', lambda n=128, repeats=1: sgemm(n, repeats))
    monkeypatch.setattr(machine, 'measure_copy_bandwidth', lambda mib=8, repeats=1: copy(mib, repeats))

LAYER_KEYS = {
    'group', 'shape', 'label', 'batch', 'in_channels', 'out_channels', 'input_size', 'output_size', 'kernel',
    'stride', 'padding', 'groups', 'dilation', 'impl', 'mode', 'device', 'amp', 'lc_backend', 'input_format',
    'gflop', 'repeats', 'inner',
    'times_ms', 'median_ms', 'min_ms', 'max_ms', 'q1_ms', 'q3_ms', 'gflop_per_s', 'ratio_to_conv_cl',
    'ratio_to_lc', 'estimated_bytes', 'peak_mem_bytes', 'mem_method', 'skipped'}


def _check_layer_records(records, cases, impls=IMPLS, modes=MODES, repeats=None):
    assert len(records) == len(cases) * len(impls) * len(modes)
    assert {(r['label'], r['impl'], r['mode']) for r in records} == {
        (c.label, i, m) for c in cases for i in impls for m in modes}
    by_key = {(r['label'], r['mode'], r['impl']): r for r in records}
    for r in records:
        assert set(r) == LAYER_KEYS
        assert r['skipped'] is None
        if repeats is not None:
            assert r['repeats'] == repeats == len(r['times_ms'])
        assert all(t > 0 for t in r['times_ms'])
        assert 0 < r['min_ms'] <= r['q1_ms'] <= r['median_ms'] <= r['q3_ms'] <= r['max_ms']
        assert r['inner'] >= 1
        case = next(c for c in cases if c.label == r['label'])
        assert r['gflop'] == pytest.approx(2 * case.macs * (3 if r['mode'] == 'fwd+bwd' else 1) / 1e9)
        assert r['gflop_per_s'] == pytest.approx(r['gflop'] / (r['median_ms'] / 1e3))
        # the ratios come from the medians of the same run's records
        conv_cl = by_key[r['label'], r['mode'], 'conv_cl']['median_ms']
        lc = by_key[r['label'], r['mode'], 'lc']['median_ms']
        assert r['ratio_to_conv_cl'] == pytest.approx(r['median_ms'] / conv_cl)
        assert r['ratio_to_lc'] == pytest.approx(r['median_ms'] / lc)
    summary = summarize_layers(records)
    assert len(summary) == len(cases) * len(modes)
    for s in summary:
        assert s['lc_over_conv_cl'] == pytest.approx(s['lc_ms'] / s['conv_cl_ms'])
        assert s['einsum_over_lc'] == pytest.approx(s['einsum_ms'] / s['lc_ms'])
        assert s['lc_over_conv_cl'] == pytest.approx(by_key[s['label'], s['mode'], 'lc']['ratio_to_conv_cl'])
    json.dumps(records)


def test_paper_shape_sets():
    r20 = shape_set('resnet20')
    assert [(c.batch, c.in_channels, c.out_channels, c.size, c.stride, c.out_size) for c in r20] == [
        (128, 16, 16, 32, 1, 32), (128, 32, 32, 16, 1, 16), (128, 64, 64, 8, 1, 8),
        (128, 16, 32, 32, 2, 16), (128, 32, 64, 16, 2, 8)]
    assert r20[0].macs == 128 * 32 * 32 * 16 * 16 * 9
    assert [(c.in_channels, c.size, c.out_size) for c in shape_set('tinyimagenet')] == [
        (16, 48, 48), (32, 24, 24), (64, 12, 12)]
    r18 = shape_set('resnet18_half')
    assert [(c.batch, c.in_channels, c.out_channels, c.size, c.kernel, c.stride, c.out_size) for c in r18] == [
        (32, 3, 32, 224, 7, 2, 112), (32, 32, 32, 56, 3, 1, 56), (32, 64, 64, 28, 3, 1, 28),
        (32, 128, 128, 14, 3, 1, 14), (32, 256, 256, 7, 3, 1, 7)]
    assert all(c.batch == 64 for c in shape_set('resnet20', 64))
    with pytest.raises(ValueError, match='unknown shape set'):
        shape_set('resnet50')
    # the estimate orders the implementations as their memory does: einsum > LC > conv
    stage1 = r18[1]
    conv, lc, einsum = (estimate_case_bytes(stage1, i, 'fwd+bwd') for i in ('conv_cl', 'lc', 'einsum'))
    assert conv < lc < einsum
    assert estimate_case_bytes(stage1, 'lc', 'fwd') < lc


def test_bench_layers_records_are_well_formed():
    cases = shape_set('tiny')
    records = bench_layers(cases, repeats=3, memory='none')
    _check_layer_records(records, cases, repeats=3)
    assert all(r['peak_mem_bytes'] is None for r in records)
    conv_cl = [r for r in records if r['impl'] == 'conv_cl']
    assert all(r['ratio_to_conv_cl'] == 1.0 for r in conv_cl)
    assert {r['input_format'] for r in records if r['impl'] in ('lc', 'conv_cl')} == {'channels_last'}
    table = bench.format_layer_table(records) + bench.format_summary_table(records)
    assert 'einsum/LC' in table and 'x conv_cl' in table and cases[0].label in table


@pytest.mark.skipif(not HAS_CLEAR_REFS, reason='needs /proc/self/clear_refs (Linux)')
@pytest.mark.parametrize('memory', ['subprocess', 'inprocess'])
def test_cpu_peak_memory_counts_the_weight_gradient(memory):
    case = LayerCase('t', 'm', 4, 16, 16, 16)
    records = bench_layers([case], impls=('conv_cl', 'lc', 'einsum'), repeats=1, memory=memory)
    by = {(r['impl'], r['mode']): r for r in records}
    assert all(isinstance(r['peak_mem_bytes'], int) and r['peak_mem_bytes'] >= 0 for r in records)
    method = bench.CPU_MEM_METHOD if memory == 'subprocess' else bench.CPU_MEM_METHOD_INPROCESS
    assert all(r['mem_method'] == method for r in records)
    # a fwd+bwd call allocates (and writes) the LC weight gradient: 256 locations x 16 x 3 x 3 x 16 floats
    weight_bytes = 256 * 16 * 9 * 16 * 4
    assert by['lc', 'fwd+bwd']['peak_mem_bytes'] >= 0.9 * weight_bytes
    assert by['einsum', 'fwd+bwd']['peak_mem_bytes'] >= 0.9 * weight_bytes


def test_cases_that_would_not_fit_are_skipped_with_a_reason():
    cases = shape_set('tiny')[:1]
    records = bench_layers(cases, impls=('conv_cl', 'lc'), repeats=1, memory='none', max_memory_bytes=1)
    assert len(records) == 4
    for r in records:
        assert 'GiB (estimated)' in r['skipped']
        assert r['median_ms'] is None and r['times_ms'] == [] and r['ratio_to_conv_cl'] is None
    assert 'skipped: needs' in bench.format_layer_table(records)
    assert summarize_layers(records)[0]['lc_over_conv_cl'] is None


@pytest.mark.parametrize('geometry', [
    dict(cin=3, cout=4, size=(9, 9), kernel=3, stride=2, padding=1),
    dict(cin=4, cout=5, size=(8, 6), kernel=3, stride=1, padding=1),
    dict(cin=3, cout=4, size=(12, 12), kernel=7, stride=2, padding=3),   # the ResNet18 stem's geometry
])
def test_einsum_baseline_matches_the_lc_layer_forward_and_gradients(geometry):
    g = geometry
    lc = LocallyConnected2d(g['cin'], g['cout'], g['kernel'], g['size'], g['stride'], g['padding']).double()
    baseline = UnfoldEinsumLC(lc)
    x = torch.randn(3, g['cin'], *g['size'], dtype=torch.float64)
    x_lc = x.clone().requires_grad_(True)
    x_ein = x.clone().requires_grad_(True)
    y_lc, y_ein = lc(x_lc), baseline(x_ein)
    torch.testing.assert_close(y_ein, y_lc)
    grad = torch.randn_like(y_lc)
    y_lc.backward(grad)
    y_ein.backward(grad)
    torch.testing.assert_close(x_ein.grad, x_lc.grad)
    torch.testing.assert_close(baseline.lc_layout_weight_grad(), lc.weight.grad)


# ------------------------------------------------------------------- grouped (depthwise) and dilated

def test_depthwise_dilated_shape_set():
    cases = shape_set('depthwise_dilated')
    assert [(c.name, c.batch, c.in_channels, c.out_channels, c.size, c.kernel, c.padding, c.groups, c.dilation,
             c.out_size) for c in cases] == [
        ('dw3', 32, 64, 64, 16, 3, 1, 64, 1, 16), ('dw7', 32, 40, 40, 16, 7, 3, 40, 1, 16),
        ('dw7', 32, 80, 80, 16, 7, 3, 80, 1, 16), ('dilated', 32, 32, 32, 16, 3, 2, 1, 2, 16),
        ('grouped', 32, 64, 64, 16, 3, 1, 4, 1, 16)]
    assert len({c.label for c in cases}) == 5   # the labels key the ratios: they must differ
    assert cases[1].label == 'depthwise_dilated dw7 40->40 16x16 k7s1g40 B=32'
    assert cases[3].label == 'depthwise_dilated dilated 32->32 16x16 k3s1d2 B=32'
    assert shape_set('resnet20')[0].label == 'resnet20 stage1 16->16 32x32 k3s1 B=128'   # unchanged
    # a depthwise output sees one input channel: MACs / groups; dilation widens the window, not the work
    assert cases[0].macs == 32 * 16 * 16 * 64 * 1 * 9
    assert cases[3].macs == 32 * 16 * 16 * 32 * 32 * 9
    assert LayerCase('t', 'd', 1, 4, 4, 9, kernel=3, padding=0, dilation=3).out_size == 3   # 9 - 3*2
    assert all(c.batch == 4 for c in shape_set('depthwise_dilated', 4))
    with pytest.raises(ValueError, match='groups'):
        LayerCase('t', 'bad', 1, 6, 4, 8, groups=4)
    # the weight estimate follows the groups: a depthwise LC layer holds Cin x fewer weights (B=1: the
    # weights dominate the estimate)
    dw, dense = shape_set('depthwise_dilated', 1)[0], LayerCase('t', 'dense', 1, 64, 64, 16)
    assert estimate_case_bytes(dw, 'lc', 'fwd') < estimate_case_bytes(dense, 'lc', 'fwd') / 10
    assert bench.PAPER_SHAPE_SETS == ('resnet20', 'tinyimagenet', 'resnet18_half')
    assert 'depthwise_dilated' in bench.PUBLIC_SHAPE_SETS


@pytest.mark.parametrize('case', shape_set('tiny_grouped') + shape_set('depthwise_dilated', 1),
                         ids=lambda c: c.label)
def test_every_implementation_computes_the_grouped_dilated_conv(case):
    """With the conv's kernel at every location, all five implementations of a benchmark case compute
    nn.Conv2d (groups, dilation): forward, input gradient, and the weight gradient summed over locations."""
    runners = make_runners(case, IMPLS, torch.device('cpu'), None, lc_from_conv=True)
    conv = runners['conv_nchw'].module
    assert (conv.groups, conv.dilation) == (case.groups, (case.dilation, case.dilation))
    x = runners['conv_nchw'].x.detach()
    ref_x = x.clone().requires_grad_(True)
    ref = torch.nn.functional.conv2d(ref_x, conv.weight.detach().clone().requires_grad_(True), None, case.stride,
                                     case.padding, case.dilation, case.groups)
    assert ref.shape == (case.batch, case.out_channels, case.out_size, case.out_size)
    grad = torch.randn_like(ref)
    ref.backward(grad)
    w_ref = torch.nn.grad.conv2d_weight(x, conv.weight.shape, grad, case.stride, case.padding, case.dilation,
                                        case.groups)
    for impl, runner in runners.items():
        runner.module.zero_grad(set_to_none=True)
        xi = runner.x.detach().clone().requires_grad_(True)
        y = runner.module(xi)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4, msg=lambda m: f'{impl} forward: {m}')
        y.backward(grad)
        torch.testing.assert_close(xi.grad, ref_x.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f'{impl} dx: {m}')
        if impl.startswith('conv'):
            w_grad = runner.module.weight.grad
        else:
            # an LC weight gradient, (out_h, out_w, Cout, kh, kw, Cin/g), summed over the locations, is the
            # gradient of the shared conv kernel (Cout, Cin/g, kh, kw)
            lc_grad = runner.module.lc_layout_weight_grad() if impl == 'einsum' else runners['lc'].module.weight.grad
            w_grad = lc_grad.sum((0, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(w_grad, w_ref, rtol=1e-4, atol=1e-3, msg=lambda m: f'{impl} dw: {m}')
    # grouped and dilated LC layers run on the native kernels by default, where they build
    expected = 'native' if native.available() else 'torch'
    assert bench.lc_backend(case, 'lc') == (expected, None)
    assert bench.lc_backend(case, 'lc_torch') == ('torch', None)
    assert bench.lc_backend(case, 'conv_cl') == (None, None)


def test_bench_layers_times_grouped_and_dilated_cases():
    cases = shape_set('tiny_grouped')
    records = bench_layers(cases, repeats=2, memory='none')
    _check_layer_records(records, cases, repeats=2)
    for r in records:
        case = next(c for c in cases if c.label == r['label'])
        assert (r['groups'], r['dilation']) == (case.groups, case.dilation)
        if r['impl'] == 'lc':   # grouped layers run natively too, where the kernels build
            assert r['lc_backend'] == ('native' if native.available() else 'torch')
        elif r['impl'] == 'lc_torch':
            assert r['lc_backend'] == 'torch'
        elif r['impl'] in ('conv_nchw', 'conv_cl', 'einsum'):
            assert r['lc_backend'] is None
    assert cases[0].label.endswith('k3s1g4 B=2') and cases[2].label.endswith('k3s1d2g2 B=2')
    assert {s['lc_backend'] for s in summarize_layers(records)[:2]} == {'native' if native.available() else 'torch'}
    layer_table, summary_table = bench.format_layer_table(records), bench.format_summary_table(records)
    assert 'LC backend' in layer_table and 'LC backend' in summary_table
    assert any(line.split()[-1] == ('native' if native.available() else 'torch')
               for line in summary_table.splitlines() if 'g4' in line)


@pytest.mark.skipif(not HAS_CLEAR_REFS, reason='needs /proc/self/clear_refs (Linux)')
def test_grouped_case_peak_memory_in_a_subprocess():
    # the subprocess rebuilds the LayerCase from JSON: groups and dilation must survive the trip
    case = shape_set('tiny_grouped')[2]
    records = bench_layers([case], impls=('conv_cl', 'lc', 'einsum'), modes=('fwd+bwd',), repeats=1,
                           memory='subprocess')
    assert all(r['mem_method'] == bench.CPU_MEM_METHOD and isinstance(r['peak_mem_bytes'], int) for r in records)


def test_lc_under_the_native_backend_without_kernels_is_skipped_with_the_reason(monkeypatch):
    """BIOCONV_LC_BACKEND=native on a machine whose kernels do not build: the lc rows are skipped with the
    build error, the rest of the run (lc_torch, the convs) goes on."""
    cases = shape_set('tiny_grouped')[:1] + shape_set('tiny')[:1]

    def no_kernels():
        raise native.NativeBuildError('no C compiler found (tried $CC, cc, gcc, clang)')

    monkeypatch.setattr(native, 'load', no_kernels)
    with native.use_backend('native'):
        assert bench.lc_backend(cases[0], 'lc')[0] is None
        records = bench_layers(cases, impls=('conv_cl', 'lc', 'lc_torch'), modes=('fwd',), repeats=1, memory='none')
    by = {(r['group'], r['impl']): r for r in records}
    for group in ('tiny_grouped', 'tiny'):
        lc = by[group, 'lc']
        assert "lc backend 'native'" in lc['skipped'] and 'no C compiler' in lc['skipped']
        assert lc['median_ms'] is None and lc['lc_backend'] is None and lc['times_ms'] == []
        lc_torch = by[group, 'lc_torch']
        assert lc_torch['skipped'] is None and lc_torch['lc_backend'] == 'torch' and lc_torch['ratio_to_lc'] is None
        assert by[group, 'conv_cl']['median_ms'] > 0
    assert "skipped: lc backend 'native'" in bench.format_layer_table(records)
    assert summarize_layers(records)[0]['lc_over_conv_cl'] is None


def test_bioconv_bench_selects_the_depthwise_dilated_set(tmp_path, capsys):
    cfg = _resolve(bench_cli.config_from_args(build_parser().parse_args(
        ['bench', '--shapes', 'depthwise_dilated', '--models', 'none'])))
    assert cfg.shapes == ('depthwise_dilated',) and cfg.batch_size is None and cfg.models == 'none'
    both = bench_cli.config_from_args(build_parser().parse_args(
        ['bench', '--shapes', 'resnet20', 'depthwise_dilated']))
    assert tuple(both.shapes) == ('resnet20', 'depthwise_dilated')
    assert 'depthwise_dilated' not in _resolve(BenchConfig()).shapes   # not a paper shape: only when asked
    steps_only = _resolve(bench_cli.config_from_args(build_parser().parse_args(  # the help's 'none: no layers'
        ['bench', '--shapes', 'none', '--models', 'resnet20'])))
    assert steps_only.shapes == () and steps_only.models == 'resnet20'
    # the same path end to end, at the test-sized grouped shapes
    out = tmp_path / 'grouped.json'
    assert main(['bench', '--shapes', 'tiny_grouped', '--models', 'none', '--repeats', '1', '--memory', 'none',
                 '--json', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'LC backend' in text and 'k3s1g4' in text
    result = json.loads(out.read_text())
    _check_layer_records(result['layers'], shape_set('tiny_grouped'), repeats=1)
    if native.available():
        assert 'depthwise layers: their own native kernels' in text
        assert f"native kernels ({native.build_info()['isa']} build, " in text  # which instruction set ran


def test_bench_models_records_are_well_formed():
    records = bench_models(('resnet20',), batch_size=2, img_size=16, steps=2, warmup=1)
    assert [(r['model'], r['layer_type']) for r in records] == [('conv_resnet20', 'conv'), ('lc_resnet20', 'lc')]
    conv, lc = records
    for r in records:
        assert r['skipped'] is None and r['steps'] == 2 and all(t > 0 for t in r['times_ms'])
        assert r['min_ms'] <= r['median_ms'] <= r['max_ms']
        assert r['images_per_s'] == pytest.approx(2 / (r['median_ms'] / 1e3))
        assert r['optimizer'] in ('adamw (fused)', 'adamw (foreach)')
        assert r['img_size'] == [16, 16] and r['batch'] == 2
        # resident at the start of a step: parameters and both AdamW moments (fp32), at least
        assert r['resident_bytes'] >= 12 * r['params']
        if HAS_CLEAR_REFS:
            assert r['peak_mem_bytes'] >= r['resident_bytes'] and r['step_extra_bytes'] >= 0
    assert lc['params'] > 10 * conv['params']
    assert lc['ratio_to_conv'] == pytest.approx(lc['median_ms'] / conv['median_ms'])
    assert 'lc_resnet20' in bench.format_model_table(records)
    json.dumps(records)


def test_bioconv_bench_quick_parses_and_resolves(monkeypatch):
    args = build_parser().parse_args(['bench', '--quick'])
    assert args.func is bench_cli.run_from_args
    cfg = _resolve(bench_cli.config_from_args(args))
    assert cfg.shapes == ('resnet20',) and cfg.batch_size == 64 and cfg.repeats == 15
    assert cfg.models == 'resnet20' and cfg.model_steps == 10 and cfg.device == 'cpu' and cfg.amp is None
    assert tuple(cfg.impls) == IMPLS and tuple(cfg.modes) == MODES
    default = _resolve(BenchConfig())
    assert default.shapes == ('resnet20', 'tinyimagenet', 'resnet18_half') and default.batch_size is None
    assert default.models == 'resnet20'
    assert _resolve(BenchConfig(full=True)).models == 'all'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # the defaults of a CUDA machine
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    gpu = _resolve(bench_cli.config_from_args(build_parser().parse_args(
        ['bench', '--device', 'cuda', '--amp', 'fp16', '--json', 'x.json'])))
    assert gpu.models == 'all' and gpu.amp == 'fp16' and gpu.json_path == 'x.json' and gpu.repeats == 10
    assert 'lc_torch' not in gpu.impls and 'lc' in gpu.impls
    assert bench.default_model_batch('resnet18_half', 'cuda') == 256
    assert bench.default_model_batch('resnet18_half', 'cpu') == 32
    with pytest.raises(ConfigError, match=r"shapes \(--shapes\) = \('resnet50',\) is not one of: resnet20"):
        bench_cli.config_from_args(build_parser().parse_args(['bench', '--shapes', 'resnet50']))


def test_bioconv_bench_runs_at_tiny_shapes(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    assert main(['bench', '--quick', '--shapes', 'tiny', '--models', 'none', '--repeats', '1', '--memory', 'none',
                 '--json', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'Summary:' in text and 'einsum/LC' in text and 'Targets (bioconv_timm.bench.report: LAYER_TARGETS, TARGETS):' in text
    result = json.loads(out.read_text())
    assert set(result) == {'meta', 'layers', 'summary', 'models', 'targets'}
    assert result['meta']['quick'] and result['meta']['repeats'] == 1 and result['models'] == []
    _check_layer_records(result['layers'], shape_set('tiny', 64), repeats=1)


def test_bench_reports_the_allocator_it_ran_under():
    result = run_benchmark(BenchConfig(shapes=('tiny',), impls=('conv_cl', 'lc'), modes=('fwd',), repeats=1,
                                       memory='none', models='none'))
    allocator = result['meta']['allocator']
    assert {'name', 'setting', 'summary', 'glibc_tunables', 'mallopt', 'large_blocks', 'preloaded'} <= set(allocator)
    assert allocator['setting'] in ('bioconv mallopt', 'GLIBC_TUNABLES', 'default', 'opted out', 'preloaded')
    header = format_report(result).splitlines()[:3]
    assert f"allocator: {allocator['summary']}" in header
    json.dumps(result['meta'])


def test_run_benchmark_targets_use_the_same_records():
    result = run_benchmark(BenchConfig(shapes=('tiny',), repeats=1, memory='none', models='none'))
    # relabel the tiny records as ResNet20 shapes: the targets read exactly those ratios
    for r in result['layers']:
        r['group'] = 'resnet20'
    targets = bench.check_targets(result['layers'], [])
    ratios = [s['lc_over_conv_cl'] for s in summarize_layers(result['layers']) if s['mode'] == 'fwd+bwd']
    assert targets[0]['value'] == pytest.approx(max(ratios))
    assert targets[2]['met'] is None and 'not measured' in format_report(dict(result, targets=targets))


def test_resnet18_half_step_target_is_judged_only_at_its_own_setting():
    def pair(device, batch, ratio):
        return [dict(arch='resnet18_half', layer_type='conv', ratio_to_conv=1.0, batch=batch, device=device),
                dict(arch='resnet18_half', layer_type='lc', ratio_to_conv=ratio, batch=batch, device=device)]

    def step(device, batch, ratio):
        return next(t for t in bench.check_targets([], pair(device, batch, ratio)) if 'resnet18_half' in t['name'])

    gpu = step('cuda:0', 256, 1.8)
    assert gpu['value'] == pytest.approx(1.8) and gpu['met'] is None and 'B=32 on cpu' in gpu['note']
    result = run_benchmark(BenchConfig(shapes=('tiny',), impls=('conv_cl', 'lc'), modes=('fwd',), repeats=1,
                                       memory='none', models='none'))
    report = format_report(dict(result, targets=[gpu]))
    assert 'not judged' in report and 'B=256, cuda:0' in report
    assert step('cpu', 32, 1.9)['met'] is True
    assert step('cpu', 32, 2.1)['met'] is False


def test_the_targets_printed_are_the_current_ones():
    """The report prints the targets from one place (LAYER_TARGETS, TARGETS), not an old issue's."""
    from bioconv_timm.bench.report import LAYER_TARGETS, TARGETS
    result = run_benchmark(BenchConfig(shapes=('tiny',), impls=('conv_cl', 'lc'), modes=('fwd',), repeats=1,
                                       memory='none', models='none'))
    report = format_report(result)
    assert 'issue 7' not in report and 'einsum / LC' not in report
    for name, _, _, bound in LAYER_TARGETS:
        assert f'{name}: - (target <= {bound}): not measured' in report
    assert f"(target <= {TARGETS['lc_resnet20_step']})" in report


def test_bench_lc_script_is_the_same_benchmark(tmp_path):
    out = tmp_path / 'b.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'bench_lc.py'), '--shapes', 'tiny', '--models',
                           'none', '--impls', 'conv_cl', 'lc', '--modes', 'fwd', '--repeats', '1', '--memory', 'none',
                           '--json', str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'LC/conv_cl' in proc.stdout
    records = json.loads(out.read_text())['layers']
    assert {(r['impl'], r['mode']) for r in records} == {('conv_cl', 'fwd'), ('lc', 'fwd')}


def test_python_m_bioconv_timm_bench_is_bioconv_bench():
    # scripts/gpu_bench.sh runs the benchmark as `python -m bioconv_timm.bench`
    proc = subprocess.run([sys.executable, '-m', 'bioconv_timm.bench', '--help'], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert '--min-repeat-ms' in proc.stdout and '--max-memory-gib' in proc.stdout


def test_gpu_script_is_valid_bash():
    script = ROOT / 'scripts' / 'gpu_bench.sh'
    subprocess.run(['bash', '-n', str(script)], check=True)
    text = script.read_text()
    assert '--amp bf16' in text or 'bf16' in text
    assert 'bioconv_timm.bench' in text


# --------------------------------------------------------------------------------------------- CUDA

@CUDA
@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_cuda_bench_layers_with_autocast(amp):
    cases = shape_set('tiny')
    records = bench_layers(cases, repeats=2, device='cuda', amp=amp, min_repeat_s=0.001)
    _check_layer_records(records, cases, repeats=2)
    for r in records:
        assert r['device'].startswith('cuda') and r['amp'] == amp
        assert r['mem_method'] == bench.CUDA_MEM_METHOD and r['peak_mem_bytes'] >= 0
    lc = next(r for r in records if r['impl'] == 'lc' and r['mode'] == 'fwd+bwd')
    assert lc['peak_mem_bytes'] >= 4 * torch.Size(  # the fp32 weight gradient
        [*lc['output_size'], lc['out_channels'], 3, 3, lc['in_channels']]).numel()


@CUDA
def test_cuda_einsum_baseline_matches_the_lc_layer_under_autocast():
    lc = LocallyConnected2d(4, 8, 3, (9, 9), 2, 1).cuda()
    baseline = UnfoldEinsumLC(lc)
    x = torch.randn(2, 4, 9, 9, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        y_lc, y_ein = lc(x), baseline(x)
    torch.testing.assert_close(y_ein.float(), y_lc.float(), atol=5e-2, rtol=5e-2)


@CUDA
@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_cuda_bench_models_with_amp(amp):
    records = bench_models(('resnet20',), batch_size=4, img_size=16, steps=2, warmup=1, device='cuda', amp=amp)
    for r in records:
        assert r['skipped'] is None and r['images_per_s'] > 0 and r['optimizer'] == 'adamw (fused)'
        # absolute peak of a step: parameters, gradients and the two AdamW moments at least
        assert r['peak_mem_bytes'] >= 12 * r['params'] and r['peak_mem_bytes'] >= r['step_extra_bytes'] > 0
        assert r['mem_method'].startswith(bench.CUDA_MEM_METHOD)
    assert math.isfinite(records[1]['ratio_to_conv'])


@CUDA
def test_cuda_run_benchmark_writes_json(tmp_path):
    out = tmp_path / 'cuda.json'
    result = run_benchmark(BenchConfig(device='cuda', amp='bf16', shapes=('tiny',), repeats=2, min_repeat_ms=1,
                                       models='resnet20', model_batch_size=4, model_img_size=16, model_steps=1,
                                       json_path=str(out)))
    assert json.loads(out.read_text())['meta']['device_name'].startswith('CUDA')
    assert result['meta']['precision'] == 'autocast bf16'
    assert 'Targets' in format_report(result)


def test_machine_limits_are_measured_and_the_step_floor_follows_the_bytes_an_adamw_step_moves():
    from bioconv_timm.bench.machine import adamw_step_bytes, measure_copy_bandwidth, measure_sgemm_gflops
    from bioconv_timm.bench.report import step_floor_ms
    assert measure_sgemm_gflops(n=128, repeats=1) > 0 and measure_copy_bandwidth(mib=8, repeats=1) > 0
    # weights read twice, gradient written, AdamW reads gradient, weights, 2 moments and writes 3: 10 fp32 values
    assert adamw_step_bytes(1_000_000) == 40_000_000
    assert step_floor_ms(1_000_000, copy_gb_per_s=10.0) == pytest.approx(4.0)  # 40 MB at 10 GB/s
    assert step_floor_ms(1_000_000, None) is None


def test_the_report_prints_the_fraction_of_sgemm_and_the_step_floor():
    records = bench_models(('resnet20',), batch_size=2, img_size=16, steps=1, warmup=0, memory=False)
    layer = dict(label='s', mode='fwd', impl='lc', skipped=None, median_ms=1.0, min_ms=1.0, max_ms=1.0, q1_ms=1.0,
                 q3_ms=1.0, gflop_per_s=25.0, ratio_to_conv_cl=2.0, ratio_to_lc=1.0, peak_mem_bytes=None)
    assert '50%' in bench.format_layer_table([layer], sgemm_gflop_per_s=50.0).splitlines()[-1]
    lc = next(r for r in records if r['model'] == 'lc_resnet20')
    row = next(line for line in bench.format_model_table(records, copy_gb_per_s=1.0).splitlines()
               if line.startswith('lc_resnet20'))
    floor = 40 * lc['params'] / 1e9 * 1e3  # ms at 1 GB/s
    assert f'{floor:.1f}' in row and f"{lc['median_ms'] / floor:.1f}" in row


def test_the_big_step_is_judged_against_its_bytes_moved_floor():
    from bioconv_timm.bench.report import TARGETS, step_floor_ms
    params, bandwidth = 483_000_000, 40.0
    floor = step_floor_ms(params, bandwidth)

    def floor_target(ms, device='cpu', batch=32, gb=bandwidth):
        records = [dict(arch='resnet18_half', layer_type='conv', ratio_to_conv=1.0, batch=batch, device=device,
                        median_ms=100.0, params=3_000_000),
                   dict(arch='resnet18_half', layer_type='lc', ratio_to_conv=ms / 100, batch=batch, device=device,
                        median_ms=ms, params=params)]
        return next(t for t in bench.check_targets([], records, gb) if 'floor' in t['name'])

    assert floor == pytest.approx(40 * params / 40e9 * 1e3)  # 40 bytes per parameter at 40 GB/s
    met = floor_target(1.9 * floor)
    assert met['value'] == pytest.approx(1.9) and met['met'] is True and met['target'] == f"<= {TARGETS['lc_resnet18_half_floor']}"
    assert floor_target(2.1 * floor)['met'] is False
    assert floor_target(1.9 * floor, gb=None)['met'] is None           # no bandwidth measured (e.g. CUDA)
    assert floor_target(1.9 * floor, device='cuda:0', batch=256)['met'] is None
