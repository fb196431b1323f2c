"""The native CPU kernels (bioconv_timm.layers.native, layers/csrc/lc_cpu.c) against the torch backend in float64."""
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from bioconv_timm.layers import native
from bioconv_timm.layers import DOUBLE_BACKWARD_ERROR, LocallyConnected2d, locally_connected2d
from conftest import reference_lc

HAS_COMPILER = any(shutil.which(c) for c in filter(None, (os.environ.get('CC'), 'cc', 'gcc', 'clang')))
needs_native = pytest.mark.skipif(not HAS_COMPILER, reason='no C compiler on this machine')
PARTS = ('forward', 'backward_input', 'backward_weight')


@contextlib.contextmanager
def backends_used():
    """Yields a set that collects (part, backend) for every LC operator call inside the block: part is one of
    PARTS, backend 'native' or 'torch' (the backend the operator chose; the native input gradient's col2im
    fallback for odd channel counts counts as native)."""
    from bioconv_timm.layers.ops import KERNELS, Kernels
    used, depth, saved = set(), [0], dict(KERNELS)

    def spy(fn, part, backend):
        def wrapper(*args):
            depth[0] += 1
            try:
                if depth[0] == 1:
                    used.add((part, backend))
                return fn(*args)
            finally:
                depth[0] -= 1
        return wrapper

    for (backend, kind), kernels in saved.items():
        KERNELS[(backend, kind)] = Kernels(*(spy(getattr(kernels, part), part, backend) for part in PARTS))
    try:
        yield used
    finally:
        KERNELS.update(saved)


def test_kernels_build_where_a_compiler_exists():
    if not HAS_COMPILER:
        pytest.skip('no C compiler on this machine')
    assert native.available(), native.unavailable_reason()
    info = native.build_info()
    assert info['vector_width'] in (4, 8, 16) and os.path.exists(info['path'])
    # what was built and why: the default target unless BIOCONV_NATIVE_ARCH / BIOCONV_CFLAGS chose one
    assert info['target'] in native.TARGETS + ('custom',) and info['isa'] and isinstance(info['fma'], bool)
    assert info['why'].startswith(f"target {info['target']} (") and f"{info['vector_width']} floats" in info['why']
    if not os.environ.get('BIOCONV_NATIVE_ARCH') and not os.environ.get('BIOCONV_CFLAGS'):
        assert (info['target'], info['target_source']) == ('native', 'default')
        assert os.path.basename(info['path']).startswith('lc_cpu-native-')


def _reference(x, weight, bias, stride, padding, grad):
    """Forward and gradients on the torch backend in float64."""
    xr = x.detach().double().requires_grad_()
    wr = weight.detach().double().requires_grad_()
    br = bias.detach().double().requires_grad_() if bias is not None else None
    with native.use_backend('torch'):
        out = locally_connected2d(xr, wr, br, stride, padding)
    out.backward(grad.double())
    return out, xr.grad, wr.grad, (br.grad if br is not None else None)


def _native(x, weight, bias, stride, padding, grad):
    xn = x.clone().requires_grad_()
    wn = weight.clone().requires_grad_()
    bn = bias.clone().requires_grad_() if bias is not None else None
    with native.use_backend('native'):
        out = locally_connected2d(xn, wn, bn, stride, padding)
    out.backward(grad)
    return out, xn.grad, wn.grad, (bn.grad if bn is not None else None)


def _rel_err(a, ref):
    return ((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


# (batch, Cin, Cout, (H, W), (kh, kw), stride, padding, bias): the ResNet shapes, then the odd ones --
# channels that are not a multiple of the vector width (RGB stems, 5, 48), batches that are not a
# multiple of the tile (1, 5, 17, 33), rectangular inputs and kernels, strides 2 and 3, padding 0 and
# padding wider than half the kernel; a stride-1 layer with a small kernel, a wide input and a batch of
# several blocks, where the forward takes the batch in blocks and the locations in groups; a large kernel.
GEOMETRIES = [
    (8, 16, 16, (8, 8), (3, 3), 1, 1, False),
    (6, 32, 64, (8, 8), (3, 3), 2, 1, False),
    (4, 64, 32, (4, 4), (1, 1), 2, 0, False),
    (5, 3, 16, (9, 11), (3, 3), 1, 1, True),
    (3, 3, 8, (12, 12), (7, 7), 2, 3, False),
    (17, 16, 5, (10, 10), (5, 5), 2, 2, False),
    (1, 48, 32, (6, 6), (1, 1), 1, 0, True),
    (33, 16, 48, (9, 9), (3, 3), 2, 0, False),
    (2, 32, 16, (5, 7), (3, 2), (1, 2), (3, 1), True),
    (4, 16, 16, (4, 4), (4, 4), 3, 2, False),
    (3, 5, 7, (6, 5), (2, 3), 1, (0, 2), False),
    (19, 20, 16, (6, 40), (3, 3), 1, 1, False),  # forward batch blocks, location groups that cross rows
    (7, 128, 72, (4, 4), (3, 3), 1, 1, True),     # a large kernel (368 KB a location), 72 = 2 x 32 + 8
    (5, 256, 118, (3, 3), (3, 3), 1, 1, True),    # 1.09 MB: the forward uses it as stored on every target
]


@needs_native
@pytest.mark.parametrize('geometry', GEOMETRIES, ids=lambda g: 'b{}-c{}-o{}-{}x{}-k{}x{}-s{}-p{}-bias{}'.format(
    g[0], g[1], g[2], *g[3], *g[4], g[5], g[6], int(g[7])))
def test_native_matches_torch_backend(geometry):
    b, cin, cout, size, kernel, stride, padding, bias = geometry
    torch.manual_seed(0)
    layer = LocallyConnected2d(cin, cout, kernel, size, stride, padding, bias=bias)
    x = torch.randn(b, cin, *size).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(b, cout, *layer.output_size)
    ref = _reference(x, layer.weight.detach(), layer.bias, layer.stride, layer.padding, grad)
    got = _native(x, layer.weight.detach(), layer.bias.detach() if bias else None, layer.stride, layer.padding,
                  grad)
    assert native.available()
    for name, a, r in zip(('output', 'input grad', 'weight grad', 'bias grad'), got, ref):
        if r is None:
            continue
        assert a.shape == r.shape and a.dtype == torch.float32, name
        assert _rel_err(a, r) < 2e-6, (name, _rel_err(a, r))
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert got[1].is_contiguous(memory_format=torch.channels_last)


@needs_native
def test_native_takes_any_input_layout():
    torch.manual_seed(1)
    layer = LocallyConnected2d(16, 16, 3, 8, padding=1)
    base = torch.randn(4, 32, 8, 8)
    for x in (base[:, :16], base[:, :16].contiguous(), base[:, ::2].contiguous(memory_format=torch.channels_last)):
        with native.use_backend('native'):
            out = layer(x)
        with native.use_backend('torch'):
            ref = layer(x)
        assert _rel_err(out, ref.double()) < 2e-6


@needs_native
def test_native_results_do_not_depend_on_the_thread_count():
    torch.manual_seed(2)
    layer = LocallyConnected2d(16, 32, 3, 8, stride=2, padding=1)
    x = torch.randn(8, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            xi = x.clone().requires_grad_()
            layer.zero_grad(set_to_none=True)
            with native.use_backend('native'):
                layer(xi).square().sum().backward()
            results.append((xi.grad.clone(), layer.weight.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    for gx, gw in results[1:]:
        assert torch.equal(gx, results[0][0]) and torch.equal(gw, results[0][1])


@needs_native
def test_backend_choice_and_errors(monkeypatch):
    layer = LocallyConnected2d(16, 16, 3, 6, padding=1)
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    for backend in ('torch', 'native'):
        with backends_used() as used:
            with native.use_backend(backend):
                out = layer(x)
            out.sum().backward()  # outside the block: the backward follows the forward's backend
        assert used == {(part, backend) for part in PARTS}
    # double and CUDA-less bf16 inputs go to the torch backend, whatever the choice
    with backends_used() as used, native.use_backend('native'):
        layer.double()(x.double())
    assert used == {('forward', 'torch')}
    monkeypatch.setenv('BIOCONV_LC_BACKEND', 'fast')
    with pytest.raises(ValueError, match="'fast'.*auto, native, torch"):
        native.get_backend()
    with pytest.raises(ValueError, match='unknown LC backend'):
        native.set_backend('cuda')
    monkeypatch.setenv('BIOCONV_LC_BACKEND', 'torch')
    assert native.get_backend() == 'torch'


def _run_fresh(code: str, env: dict) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **env)
    for name in ('BIOCONV_LC_BACKEND', 'BIOCONV_NATIVE_ARCH', 'BIOCONV_CFLAGS'):
        full_env.pop(name, None)
    full_env.update(env)
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=300)


_FALLBACK_SCRIPT = '''
    import json, warnings, torch
    from bioconv_timm.layers import LocallyConnected2d, native, resolve_backend
    from bioconv_timm.layers.ops import KERNELS
    ran_torch = []
    dense = KERNELS['torch', 'dense']
    KERNELS['torch', 'dense'] = dense._replace(forward=lambda *args: ran_torch.append(1) or dense.forward(*args))
    layer = LocallyConnected2d(16, 16, 3, 6, padding=1)
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        out = layer(x)
        out.sum().backward()
        layer(x)
    try:
        with native.use_backend('native'):
            layer(x)
        native_error = None
    except native.NativeBuildError as exc:
        native_error = str(exc)
    print(json.dumps(dict(torch_forwards=len(ran_torch), backend=resolve_backend(x, layer.weight),
                          warnings=[str(w.message) for w in caught],
                          native_error=native_error, info=native.build_info())))
'''


def test_without_a_compiler_the_torch_backend_runs_with_one_warning(tmp_path):
    proc = _run_fresh(_FALLBACK_SCRIPT, {'CC': str(tmp_path / 'no-such-cc'), 'PATH': str(tmp_path),
                                         'BIOCONV_CACHE_DIR': str(tmp_path / 'cache')})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['torch_forwards'] == 2 and result['backend'] == 'torch'
    assert len(result['warnings']) == 1 and 'slower torch path' in result['warnings'][0]
    assert 'no C compiler found' in result['native_error'] and 'BIOCONV_LC_BACKEND=torch' in result['native_error']
    assert result['info']['available'] is False


_BUILD_INFO_SCRIPT = ('from bioconv_timm.layers import native; import json; native.load(); '
                      'print(json.dumps(native.build_info()))')


@pytest.fixture(scope='module')
def first_build(tmp_path_factory):
    """(cache folder, build_info) of a fresh process's first load into an empty cache folder; tests that change
    the folder copy it (``_copy_cache``)."""
    cache = tmp_path_factory.mktemp('cache')
    return cache, json.loads(_run_fresh(_BUILD_INFO_SCRIPT, {'BIOCONV_CACHE_DIR': str(cache)}).stdout.strip().splitlines()[-1])


def _copy_cache(cache: Path, info: dict, tmp_path: Path):
    """A copy of ``cache`` in tmp_path and the path its library has there."""
    shutil.copytree(cache, tmp_path, dirs_exist_ok=True)
    return tmp_path / Path(info['path']).relative_to(cache)


@needs_native
def test_build_is_cached_per_machine(first_build):
    cache, first = first_build
    second = json.loads(_run_fresh(_BUILD_INFO_SCRIPT, {'BIOCONV_CACHE_DIR': str(cache)}).stdout.strip().splitlines()[-1])
    assert first['cached'] is False and second['cached'] is True
    assert first['path'] == second['path'] and first['path'].startswith(str(cache))
    assert [p.name for p in (cache / 'kernels').iterdir()] == [os.path.basename(first['path'])]


@needs_native
def test_lc_model_gradients_match_between_backends():
    import timm
    import bioconv_timm  # noqa: F401
    torch.manual_seed(3)
    model = timm.create_model('lc_resnet20', num_classes=10)
    model.eval()  # BN in eval: the two passes see the same statistics
    x = torch.randn(3, 3, 32, 32)
    grads = {}
    for backend in ('torch', 'native'):
        model.zero_grad(set_to_none=True)
        with backends_used() as used:
            with native.use_backend(backend):
                out = model(x)
            out.square().mean().backward()
        assert {b for _, b in used} == {backend}  # the backward too, although it runs outside the block
        grads[backend] = (out.detach(), [p.grad.clone() for p in model.parameters()])
    out_t, g_t = grads['torch']
    out_n, g_n = grads['native']
    assert _rel_err(out_n, out_t.double()) < 1e-5
    for a, r in zip(g_n, g_t):
        assert _rel_err(a, r.double()) < 1e-4


_PORTABLE_SCRIPT = '''
    import json, torch
    from bioconv_timm.layers import native
    from bioconv_timm.layers import LocallyConnected2d, locally_connected2d
    worst = 0.0
    torch.manual_seed(0)
    for b, cin, cout, size, k, s, p, d, g in [
            (5, 16, 16, 8, 3, 1, 1, 1, 1), (3, 32, 24, 7, 3, 2, 1, 1, 1), (9, 3, 16, 9, 5, 2, 2, 1, 1),
            (2, 8, 8, 6, 3, 1, 0, 1, 1), (17, 48, 40, 5, 1, 1, 0, 1, 1), (4, 16, 16, 8, 3, 1, 2, 2, 1),
            (3, 3, 8, 9, 3, 2, 2, 2, 1), (5, 8, 8, 7, 3, 1, 3, 3, 1),
            (5, 24, 24, 9, 7, 2, 3, 1, 24), (3, 13, 13, 8, 3, 1, 2, 2, 13), (4, 16, 32, 7, 3, 1, 1, 1, 2)]:
        layer = LocallyConnected2d(cin, cout, k, size, s, p, d, g)
        x = torch.randn(b, cin, size, size)
        g = torch.randn(b, cout, *layer.output_size)
        grads = []
        for backend, dtype in (('torch', torch.float64), ('native', torch.float32)):
            xi = x.to(dtype).requires_grad_()
            w = layer.weight.detach().to(dtype).requires_grad_()
            with native.use_backend(backend):
                out = locally_connected2d(xi, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)
            out.backward(g.to(dtype))
            grads.append((out.detach().double(), xi.grad.double(), w.grad.double()))
        for a, r in zip(grads[1], grads[0]):
            worst = max(worst, ((a - r).abs().max() / r.abs().max()).item())
    print(json.dumps(dict(worst=worst, vector_width=native.vector_width(), info=native.build_info())))
'''


@needs_native
@pytest.mark.skipif(platform.machine() != 'x86_64', reason='x86-64 instruction-set levels')
def test_custom_cflags_build_is_correct(tmp_path):
    """BIOCONV_CFLAGS replaces the target's flags (target 'custom'): an x86-64-v3 (AVX2) binary is correct
    (dilated, depthwise and grouped layers included). The named targets (generic, avx2, avx512):
    tests/test_native_portable.py."""
    cflags = '-O2 -march=x86-64-v3'
    proc = _run_fresh(_PORTABLE_SCRIPT, {'BIOCONV_CFLAGS': cflags, 'BIOCONV_CACHE_DIR': str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    info = result['info']
    assert result['vector_width'] == 8 and info['flags'][:2] == cflags.split()
    assert (info['target'], info['target_source'], info['isa']) == ('custom', 'BIOCONV_CFLAGS', 'avx2+fma')
    assert result['worst'] < 2e-6, result


@needs_native
def test_damaged_cache_is_rebuilt_and_unwritable_cache_falls_back(tmp_path, first_build):
    code = _BUILD_INFO_SCRIPT
    library = _copy_cache(*first_build, tmp_path)  # a cache folder holding a build, as the first load left it
    with open(library, 'wb') as f:
        f.write(b'not a shared library')
    again = json.loads(_run_fresh(code, {'BIOCONV_CACHE_DIR': str(tmp_path)}).stdout.strip().splitlines()[-1])
    assert again['available'] and again['cached'] is False and again['path'] == str(library)
    blocker = tmp_path / 'a-file'
    blocker.write_text('the cache folder cannot be created below a file')
    temp = tmp_path / 'tmp'
    temp.mkdir()
    proc = _run_fresh(code, {'BIOCONV_CACHE_DIR': str(blocker / 'cache'), 'TMPDIR': str(temp)})
    assert proc.returncode == 0, proc.stderr
    fallback = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fallback['available'] and 'cache_warning' not in fallback
    # the per-user temp folder, created private (0700), is kept as the cache for the next process
    folder = temp / f'bioconv_timm-{os.getuid()}'
    assert Path(fallback['path']).parent == folder / 'kernels'
    assert all((p.stat().st_mode & 0o777) == 0o700 for p in (folder, folder / 'kernels'))


_LOAD_SCRIPT = '''
    import json, os, stat
    from bioconv_timm.layers import native
    native.load()
    info = native.build_info()
    for key, path in (('file', info['path']), ('folder', os.path.dirname(info['path']))):
        st = os.stat(path)
        info[key + '_uid'], info[key + '_mode'] = st.st_uid, stat.S_IMODE(st.st_mode)
    print(json.dumps(info))
'''


def _plant_library(path: Path, marker: Path) -> None:
    """A shared library whose constructor writes ``marker``: what a hostile user would leave in the cache."""
    source = path.parent.parent / 'planted.c'
    source.write_text('#include <stdio.h>\n'
                      '__attribute__((constructor)) static void planted(void) {\n'
                      f'    FILE *f = fopen({json.dumps(str(marker))}, "w");\n'
                      '    if (f) { fputs("the planted library ran", f); fclose(f); }\n'
                      '}\n')
    subprocess.run([native._compiler(), '-shared', '-fPIC', str(source), '-o', str(path)], check=True)
    source.unlink()


@needs_native
@pytest.mark.parametrize('case', ['group-writable folder', 'world-writable file', 'foreign file owner',
                                  'planted temp folder'])
def test_kernel_cache_never_loads_a_library_another_user_could_have_written(tmp_path, case):
    """A library with the kernels' file name, planted where another local user could write it, never runs:
    the load builds the kernels in a private folder instead (or rebuilds the file in place)."""
    assert native.available()
    name = os.path.basename(native.build_info()['path'])  # the file name this machine's build gets
    temp, marker, uid = tmp_path / 'tmp', tmp_path / 'planted-library-ran', os.getuid()
    temp.mkdir()
    env = {'BIOCONV_CACHE_DIR': str(tmp_path / 'cache'), 'TMPDIR': str(temp)}
    if case == 'planted temp folder':  # an unwritable cache: the build falls back to <tmp>/bioconv_timm-<uid>
        blocker = tmp_path / 'a-file'
        blocker.write_text('the cache folder cannot be created below a file')
        env['BIOCONV_CACHE_DIR'] = str(blocker / 'cache')
        folder = temp / f'bioconv_timm-{uid}' / 'kernels'
    else:
        folder = tmp_path / 'cache' / 'kernels'
    folder.mkdir(parents=True, mode=0o755)
    planted = folder / name
    _plant_library(planted, marker)
    if case == 'group-writable folder':
        folder.chmod(0o775)
    elif case == 'world-writable file':
        planted.chmod(0o666)
    elif case == 'foreign file owner':
        if uid != 0:
            pytest.skip('giving a file to another user needs root')
        os.chown(planted, 65534, 65534)  # nobody
    else:  # another user created the per-user temp folder first, open to all
        folder.parent.chmod(0o777)
        if uid == 0:
            os.chown(folder.parent, 65534, 65534)
    content = planted.read_bytes()

    proc = _run_fresh(_LOAD_SCRIPT, env)
    assert not marker.exists(), f'the planted library in {folder} was loaded'
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info['available'] and info['cached'] is False
    assert info['file_uid'] == info['folder_uid'] == uid
    assert not (info['file_mode'] | info['folder_mode']) & 0o022
    if case in ('world-writable file', 'foreign file owner'):  # a private folder: the file is rebuilt in place
        assert info['path'] == str(planted) and 'cache_warning' not in info
        assert planted.read_bytes() != content
        return
    # a folder others can write is left alone and named in a warning with the fix
    assert planted.read_bytes() == content and not info['path'].startswith(str(folder.parent) + os.sep)
    assert info['folder_mode'] == 0o700 and 'RuntimeWarning' in proc.stderr
    if case == 'group-writable folder':
        assert f'{folder} is writable by group or others (mode 775)' in info['cache_warning']
        assert f'chmod go-w {folder}' in info['cache_warning']
        assert info['path'] == str(temp / f'bioconv_timm-{uid}' / 'kernels' / name)
    else:
        assert str(folder.parent) in info['cache_warning'] and f'remove {folder.parent}' in info['cache_warning']
        assert Path(info['path']).parent.parent == temp  # a fresh mkdtemp folder for this process


def _lc_with_grads(layer, x, grad, backend):
    """Output and gradients of ``layer``, the forward run on ``backend``; checks that forward and backward
    ran on it."""
    xi = x.clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    with backends_used() as used:
        with native.use_backend(backend):
            out = layer(xi)
        out.backward(grad)
    assert used == {(part, backend) for part in PARTS}
    grads = [xi.grad, layer.weight.grad] + ([layer.bias.grad] if layer.bias is not None else [])
    return out, grads


# Strides that differ between height and width, on odd rectangular inputs with rectangular kernels and
# padding: a stride whose height and width are swapped in a weight-gradient kernel or in col2im changes the
# result. Cin = 32 (a multiple of every vector width) takes lc_backward_weight and lc_backward_input; Cin = 5
# takes lc_backward_weight_any and the torch col2im.
STRIDE_GEOMETRIES = [
    (3, 32, 8, (9, 7), (3, 2), (2, 1), (1, 0), True),
    (4, 5, 6, (7, 11), (3, 2), (1, 3), (0, 1), False),
    (2, 32, 16, (8, 11), (2, 3), (1, 3), (1, 1), False),
    (3, 5, 8, (11, 6), (2, 3), (2, 1), (1, 1), True),
]


@pytest.mark.parametrize('backend', ['torch', pytest.param('native', marks=needs_native)])
@pytest.mark.parametrize('geometry', STRIDE_GEOMETRIES, ids=lambda g: 'c{}-{}x{}-k{}x{}-s{}x{}-p{}x{}'.format(
    g[1], *g[3], *g[4], *g[5], *g[6]))
def test_rectangular_strides_match_a_float64_reference(geometry, backend):
    b, cin, cout, size, kernel, stride, padding, bias = geometry
    torch.manual_seed(6)
    dtype = torch.float64 if backend == 'torch' else torch.float32  # native: fp32 only
    layer = LocallyConnected2d(cin, cout, kernel, size, stride, padding, bias=bias).to(dtype)
    x = torch.randn(b, cin, *size, dtype=torch.float64)
    grad = torch.randn(b, cout, *layer.output_size, dtype=torch.float64)
    params = [p.detach().double().requires_grad_() for p in (layer.weight, layer.bias) if p is not None]
    xr = x.clone().requires_grad_()
    ref = reference_lc(xr, params[0], stride, padding, params[1] if bias else None)
    ref_grads = torch.autograd.grad(ref, [xr, *params], grad)
    out, grads = _lc_with_grads(layer, x.to(dtype), grad.to(dtype), backend)
    for name, a, r in zip(('output', 'input grad', 'weight grad', 'bias grad'), (out, *grads), (ref, *ref_grads)):
        assert a.shape == r.shape, name
        assert _rel_err(a, r) < (1e-12 if backend == 'torch' else 2e-6), (name, _rel_err(a, r))


@pytest.mark.parametrize('backend', ['torch', pytest.param('native', marks=needs_native)])
@pytest.mark.parametrize('cin', [5, 16])
def test_non_contiguous_weight_gives_the_contiguous_result(backend, cin):
    torch.manual_seed(5)
    layer = LocallyConnected2d(cin, 6, (3, 2), (7, 6), stride=(2, 1), padding=1, bias=True)
    x = torch.randn(3, cin, 7, 6)
    grad = torch.randn(3, 6, *layer.output_size)
    weight = layer.weight.detach().clone()
    results = []
    for w in (weight, weight.transpose(0, 2).contiguous().transpose(0, 2)):  # same values, another layout
        layer.weight = nn.Parameter(w)
        results.append(_lc_with_grads(layer, x, grad, backend))
    assert not layer.weight.is_contiguous()
    (out_c, grads_c), (out_n, grads_n) = results
    assert torch.equal(out_n, out_c)
    for a, r in zip(grads_n, grads_c):
        assert torch.equal(a, r)


@pytest.mark.parametrize('backend', ['torch', pytest.param('native', marks=needs_native)])
def test_gradient_penalty_raises_the_same_clear_error_on_both_backends(backend):
    """Both backends' backward run without a graph: a second-order term must raise, not silently vanish."""
    torch.manual_seed(7)
    layer = LocallyConnected2d(8, 8, 3, 6, padding=1)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    with native.use_backend(backend):
        out = layer(x)
        first = torch.autograd.grad(layer(x).square().sum(), (x, layer.weight))
    with backends_used() as used:  # outside the use_backend block: the backward follows the forward
        grads = torch.autograd.grad(out.square().sum(), (x, layer.weight), create_graph=True)
    assert used == {('backward_input', backend), ('backward_weight', backend)}
    for g, f in zip(grads, first):  # the first-order values themselves are right
        assert torch.equal(g, f)
    for g in grads:  # an input-gradient penalty (WGAN-GP, R1) and a weight-gradient one
        with pytest.raises(RuntimeError) as error:
            g.square().sum().backward(retain_graph=True)
        assert str(error.value) == DOUBLE_BACKWARD_ERROR
