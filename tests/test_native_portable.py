"""Portable builds of the native LC kernels (issue 27 item 2): every build target of
bioconv_timm.layers.native (BIOCONV_NATIVE_ARCH = generic, avx2, avx512) against a float64 reference, against
the thread count and against each other; the target selection itself; and, where a cross compiler and
qemu-user exist, the aarch64 (NEON, SVE) builds of the same C file under emulation.

Each target is built once per module, in a temporary cache folder (never the default one), by a fresh process
that runs every case and saves its results: the variable is read when the kernels are first loaded.
"""
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
import torch.nn.functional as F

from bioconv_timm.errors import UserValueError
from bioconv_timm.layers import native

HAS_COMPILER = native._compiler() is not None
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason='no C compiler on this machine')
X86 = native._is_x86()
CPU_FLAGS = native._cpu_flags() or set()

# target: (isa the library reports, floats per vector, fused multiply-add, the CPU flags it needs)
EXPECTED = {
    'generic': ('sse2', 4, False, ()),
    'avx2': ('avx2+fma', 8, True, ('avx2', 'fma')),
    'avx512': ('avx512', 16, True, ('avx512f', 'avx512cd', 'avx512dq', 'avx512bw', 'avx512vl')),
}
TOL = 2e-6  # relative to the largest reference value: fp32 rounding of sums of a few hundred products


def _target_param(target):
    needs = EXPECTED[target][3]
    skip = (not HAS_COMPILER and 'no C compiler on this machine'
            or target != 'generic' and not X86 and f'{target} is an x86 target'
            or needs and not set(needs) <= CPU_FLAGS and f'this CPU lacks {" ".join(needs)}')
    return pytest.param(target, marks=pytest.mark.skipif(bool(skip), reason=skip or ''))


TARGETS = [_target_param(t) for t in EXPECTED]

# (batch, Cin, Cout, (H, W), (kh, kw), stride, padding, dilation, groups): channels that are and are not a
# multiple of every vector width (3, 5, 13, 20 take the scatter-form input gradient and
# lc_backward_weight_any on some widths), batches that are not a multiple of the tile, rectangular shapes,
# strides 2 and 3, dilation, depthwise (with and without a channel multiplier) and grouped layers, and
# kernels large enough for the forward's dot form.
CASES = [
    (5, 16, 16, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (9, 32, 24, (7, 9), (3, 2), (2, 1), (1, 0), (1, 1), 1),
    (4, 3, 16, (9, 9), (5, 5), (2, 2), (2, 2), (1, 1), 1),
    (17, 48, 40, (5, 5), (1, 1), (1, 1), (0, 0), (1, 1), 1),
    (3, 5, 7, (6, 5), (2, 3), (1, 1), (0, 2), (1, 1), 1),
    (4, 16, 16, (8, 8), (3, 3), (1, 1), (2, 2), (2, 2), 1),
    (3, 8, 8, (9, 7), (3, 3), (3, 2), (2, 1), (2, 1), 1),
    (5, 24, 24, (9, 9), (7, 7), (2, 2), (3, 3), (1, 1), 24),
    (3, 13, 13, (8, 8), (3, 3), (1, 1), (2, 2), (2, 2), 13),
    (2, 8, 16, (6, 6), (3, 3), (1, 1), (1, 1), (1, 1), 8),
    (4, 32, 40, (7, 7), (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (3, 20, 16, (6, 6), (3, 3), (2, 2), (1, 1), (1, 1), 4),
    # 12 output channels x 27 taps: the transposed copy's 8 x 8 blocks (AVX) and both of its edges
    (3, 3, 12, (7, 7), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    # kernels the forward uses as stored (the dot form) on 4- and 8-float targets, then on every target:
    # 83 KB and 1.07 MB a location, batches and channel counts that are not a multiple of the tile
    (7, 64, 36, (5, 5), (3, 3), (1, 1), (1, 1), (2, 1), 1),
    (4, 256, 116, (4, 4), (3, 3), (1, 2), (1, 1), (2, 1), 1),
]
CASE_IDS = ['b{}-c{}-o{}-{}x{}-k{}x{}-s{}x{}-p{}x{}-d{}x{}-g{}'.format(c[0], c[1], c[2], *c[3], *c[4], *c[5], *c[6],
                                                                      *c[7], c[8]) for c in CASES]


def _out_size(case):
    _, _, _, size, kernel, stride, padding, dilation, _ = case
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(size, kernel, stride, padding, dilation))


def _inputs(case, seed):
    """x (B, Cin, H, W), weight (out_h, out_w, Cout, kh, kw, Cin / groups), grad (B, Cout, out_h, out_w)."""
    b, cin, cout, size, kernel, *_, groups = case
    gen = torch.Generator().manual_seed(seed)
    oh, ow = _out_size(case)
    return (torch.randn(b, cin, *size, generator=gen), torch.randn(oh, ow, cout, *kernel, cin // groups, generator=gen),
            torch.randn(b, cout, oh, ow, generator=gen))


def reference(x, weight, stride, padding, dilation, groups):
    """Slow, obviously correct LC layer with dilation and groups: one dot product per output location, in
    whatever dtype it gets (float64 here). Output channel o of group g reads input channels of group g."""
    b = x.shape[0]
    oh, ow, cout, kh, kw, ci = weight.shape
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    rows = []
    for y in range(oh):
        cols = []
        for xx in range(ow):
            y0, x0 = y * stride[0], xx * stride[1]
            patch = xp[:, :, y0:y0 + dilation[0] * (kh - 1) + 1:dilation[0],
                       x0:x0 + dilation[1] * (kw - 1) + 1:dilation[1]]
            patch = patch.reshape(b, groups, ci, kh, kw)
            kernel = weight[y, xx].reshape(groups, cout // groups, kh, kw, ci)
            cols.append(torch.einsum('bgiuv,gouvi->bgo', patch, kernel).reshape(b, cout))
        rows.append(torch.stack(cols, -1))
    return torch.stack(rows, -2)


def _reference_grads(case, seed, flip=False):
    """(output, input grad, weight grad) of the float64 reference; ``flip`` mirrors every kernel left-right
    (a wrong kernel, to show that the tolerance catches one)."""
    x, weight, grad = (t.double() for t in _inputs(case, seed))
    x.requires_grad_()
    weight.requires_grad_()
    w = weight.flip(4) if flip else weight
    out = reference(x, w, *case[5:8], case[8])
    gx, gw = torch.autograd.grad(out, (x, weight), grad)
    return out.detach(), gx, gw


def _rel_err(a, ref):
    return ((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


_CHILD = """
    import json, sys, torch
    from bioconv_timm.layers import native, locally_connected2d
    cases, seeds, out_path = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    results = []
    with native.use_backend('native'):  # raises when the target does not build: no silent torch fallback
        for case, seed in zip(cases, seeds):
            gen = torch.Generator().manual_seed(seed)
            b, cin, cout, size, kernel, stride, padding, dilation, groups = case
            oh, ow = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                      for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)]
            x = torch.randn(b, cin, *size, generator=gen)
            w = torch.randn(oh, ow, cout, *kernel, cin // groups, generator=gen)
            g = torch.randn(b, cout, oh, ow, generator=gen)
            per_threads = []
            for threads in (1, 3):
                torch.set_num_threads(threads)
                xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
                out = locally_connected2d(xi, wi, None, tuple(stride), tuple(padding), tuple(dilation), groups)
                out.backward(g)
                per_threads.append((out.detach(), xi.grad, wi.grad))
            results.append(per_threads)
    torch.save(dict(results=results, info=native.build_info()), out_path)
"""


@pytest.fixture(scope='module')
def builds(tmp_path_factory):
    """target -> {'results': [per case: [(out, grad x, grad w) with 1 thread, the same with 3]], 'info':
    build_info()}; each target built once, all of them in one temporary cache folder."""
    folder = tmp_path_factory.mktemp('portable-builds')
    done = {}

    def get(target):
        if target not in done:
            env = dict(os.environ, BIOCONV_NATIVE_ARCH=target, BIOCONV_CACHE_DIR=str(folder / 'cache'),
                       OMP_NUM_THREADS='1')
            for name in ('BIOCONV_CFLAGS', 'BIOCONV_LC_BACKEND'):
                env.pop(name, None)
            out = folder / f'{target}.pt'
            proc = subprocess.run([sys.executable, '-c', textwrap.dedent(_CHILD), json.dumps(CASES),
                                   json.dumps(list(range(len(CASES)))), str(out)],
                                  capture_output=True, text=True, env=env, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[target] = torch.load(out)
        return done[target]
    return get


@pytest.mark.parametrize('target', TARGETS)
def test_target_builds_what_it_says(builds, target):
    info = builds(target)['info']
    isa, width, fma, _ = EXPECTED[target]
    assert info['available'] and info['target'] == target and info['target_source'] == 'BIOCONV_NATIVE_ARCH'
    assert Path(info['path']).name.startswith(f'lc_cpu-{target}-')
    assert info['vector_width'] == width and info['fma'] is fma
    if X86:
        assert info['isa'] == isa and info['flags'][:2] == ['-O3', '-march=x86-64']
        registers = 32 if target == 'avx512' else 16  # what the tiles are sized for (zmm0-31; ymm/xmm0-15)
        assert info['vector_registers'] == registers and f'tiles for {registers} vector registers' in info['why']
        assert not any(f.startswith('-march=native') for f in info['flags'])
    assert f'target {target} (BIOCONV_NATIVE_ARCH={target})' in info['why'] and f'{width} floats' in info['why']


@pytest.mark.parametrize('target', TARGETS)
@pytest.mark.parametrize('index', range(len(CASES)), ids=CASE_IDS)
def test_target_matches_the_float64_reference(builds, target, index):
    got = builds(target)['results'][index][0]
    ref = _reference_grads(CASES[index], index)
    for name, a, r in zip(('output', 'input grad', 'weight grad'), got, ref):
        assert a.dtype == torch.float32 and a.shape == r.shape, name
        assert _rel_err(a, r) < TOL, (target, name, _rel_err(a, r))


def _forward_form(case, info):
    """'dot' where the forward uses a location's kernel as stored, 'copy' where it copies it transposed
    first (the rule in lc_forward; build_info() reports the size threshold)."""
    b, cin, cout, size, kernel, stride, padding, dilation, groups = case
    kernel_bytes = cout * kernel[0] * kernel[1] * cin * 4
    dense = groups == 1 and cin % info['vector_width'] == 0 and dilation[1] == 1
    return 'dot' if dense and kernel_bytes >= info['forward_dot_min_kernel_bytes'] else 'copy'


@pytest.mark.parametrize('target', TARGETS)
def test_cases_reach_both_forms_of_the_forward(builds, target):
    """The reference cases above cover both ways the forward reads a kernel on every target."""
    info = builds(target)['info']
    forms = [_forward_form(case, info) for case in CASES if case[8] == 1]
    assert {'dot', 'copy'} <= set(forms), (target, info['forward_dot_min_kernel_bytes'])


@pytest.mark.parametrize('target', TARGETS)
def test_target_results_do_not_depend_on_the_thread_count(builds, target):
    for index, (one, three) in enumerate(builds(target)['results']):
        for name, a, b in zip(('output', 'input grad', 'weight grad'), one, three):
            assert torch.equal(a, b), (CASE_IDS[index], name)


@pytest.mark.parametrize('other', [t for t in TARGETS if t.values[0] != 'generic'])
def test_generic_build_agrees_with_the_vector_builds(builds, other):
    """The SSE2 build (4 floats, no FMA) and the AVX2 / AVX-512 ones sum in other orders and round
    differently, so they agree to fp32 rounding, not bit for bit -- and are separate libraries."""
    generic, wide = builds('generic'), builds(other)
    assert generic['info']['path'] != wide['info']['path']
    assert Path(generic['info']['path']).parent == Path(wide['info']['path']).parent  # one cache, no collision
    for index, (a_case, b_case) in enumerate(zip(generic['results'], wide['results'])):
        ref = _reference_grads(CASES[index], index)
        for name, a, b, r in zip(('output', 'input grad', 'weight grad'), a_case[0], b_case[0], ref):
            assert (a - b).abs().max().item() <= 2 * TOL * r.abs().max().item(), (CASE_IDS[index], name)


@needs_compiler
def test_the_reference_check_catches_a_wrong_kernel(builds):
    """The check can fail: the generic build's results against a reference whose kernels are mirrored
    left-right (what a kernel that walked a row backwards would compute) are far outside the tolerance."""
    results = builds('generic')['results']
    for index in (0, 5, 7):  # dense, dilated, depthwise
        wrong = _reference_grads(CASES[index], index, flip=True)
        assert _rel_err(results[index][0][0], wrong[0]) > 100 * TOL
        assert _rel_err(results[index][0][2], wrong[2]) > 100 * TOL


# --- target selection, no build ---

def test_target_selection(monkeypatch):
    monkeypatch.delenv('BIOCONV_NATIVE_ARCH', raising=False)
    monkeypatch.delenv('BIOCONV_CFLAGS', raising=False)
    assert native.requested_target() == ('native', 'default')
    monkeypatch.setenv('BIOCONV_NATIVE_ARCH', ' AVX2 ')
    assert native.requested_target() == ('avx2', 'BIOCONV_NATIVE_ARCH')
    monkeypatch.setenv('BIOCONV_NATIVE_ARCH', 'neon')
    with pytest.raises(UserValueError, match="'neon'; choose one of native, avx512, avx2, generic"):
        native.requested_target()
    monkeypatch.setenv('BIOCONV_NATIVE_ARCH', 'generic')
    monkeypatch.setenv('BIOCONV_CFLAGS', '-O2')
    with pytest.raises(UserValueError, match='both set'):
        native.requested_target()
    monkeypatch.delenv('BIOCONV_NATIVE_ARCH')
    assert native.requested_target() == ('custom', 'BIOCONV_CFLAGS')
    assert native.target_flags('custom') == (['-O2', '-fopenmp'], ['-O2'])


def test_target_flags_per_architecture():
    assert native.target_flags('native')[0] == ['-O3', '-march=native', '-fopenmp']  # unchanged default
    assert native.target_flags('generic', 'x86_64') == (['-O3', '-march=x86-64', '-fopenmp'], ['-O3', '-march=x86-64'])
    assert native.target_flags('avx2', 'x86_64')[0] == ['-O3', '-march=x86-64', '-mavx2', '-mfma', '-fopenmp']
    assert '-mavx512f' in native.target_flags('avx512', 'AMD64')[0]
    # elsewhere (aarch64: NEON is its baseline) generic is plain -O3, and the x86 targets are refused
    assert native.target_flags('generic', 'aarch64') == (['-O3', '-fopenmp'], ['-O3'])
    for target in ('avx2', 'avx512'):
        with pytest.raises(native.NativeBuildError, match=f'{target} is an x86 target and this machine is aarch64'):
            native.target_flags(target, 'aarch64')


def test_a_cpu_without_the_instructions_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(native, '_cpu_flags', lambda: {'sse2', 'avx', 'avx2'})
    with pytest.raises(native.NativeBuildError, match='this CPU lacks fma, so the avx2 kernels would crash'):
        native._check_cpu('avx2')
    assert native._check_cpu('generic') == '' and native._check_cpu('native') == ''
    monkeypatch.setattr(native, '_cpu_flags', lambda: None)  # no /proc/cpuinfo: trusted, and said so
    assert native._check_cpu('avx512') == 'CPU not checked (no /proc/cpuinfo)'


# --- the C file on its own: a C harness against a float64 reference in C, natively and for aarch64 ---

HARNESS = r'''#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef int64_t i64;
int lc_vector_width(void);
const char *lc_isa(void);
int lc_fma(void);
/* the kernels' signatures (lc_cpu.c): three arrays, then sizes, then the thread count */
#define I5 i64, i64, i64, i64, i64
#define ARGS14 const float *, const float *, float *, I5, I5, i64, i64, i64, i64, int
#define ARGS15 const float *, const float *, float *, I5, I5, I5, int
#define ARGS16 const float *, const float *, float *, I5, I5, I5, i64, int
int lc_forward(ARGS15);
void lc_backward_input(ARGS15);
void lc_backward_weight(ARGS15);
void lc_backward_weight_any(ARGS16);
void lc_dw_forward(ARGS14);
void lc_dw_backward_input(ARGS14);
void lc_dw_backward_weight(ARGS14);

static unsigned long long rng = 88172645463325252ULL;
static float frand(void)  /* xorshift64, uniform in [-1, 1) */
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *randv(i64 n)
{
    float *p = malloc(n * sizeof(float));
    for (i64 i = 0; i < n; i++) p[i] = frand();
    return p;
}
static double worst_rel(const float *a, const double *r, i64 n) {
    double m = 0, d = 0;
    for (i64 i = 0; i < n; i++) { m = fmax(m, fabs(r[i])); d = fmax(d, fabs(a[i] - r[i])); }
    return d / (m > 0 ? m : 1);
}
static int same(const float *a, const float *b, i64 n) { return memcmp(a, b, n * sizeof(float)) == 0; }

int main(void) {
    const i64 VW = lc_vector_width();
    /* B, H, W, C, CO, KH, KW, SH, SW, PH, PW, DH, DW, depthwise */
    static const i64 G[][14] = {
        {5, 8, 8, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 0}, {9, 7, 9, 32, 24, 3, 2, 2, 1, 1, 0, 1, 1, 0},
        {3, 9, 9, 16, 8, 3, 3, 1, 1, 2, 2, 2, 2, 0},  {4, 6, 6, 3, 5, 3, 3, 2, 2, 1, 1, 1, 1, 0},
        {17, 6, 5, 48, 40, 1, 1, 1, 1, 0, 0, 1, 1, 0}, {5, 9, 9, 24, 24, 7, 7, 2, 2, 3, 3, 1, 1, 1},
        {3, 8, 8, 13, 13, 3, 3, 1, 1, 2, 2, 2, 2, 1}};
    double worst = 0;
    int bad = 0;
    for (unsigned t = 0; t < sizeof G / sizeof G[0]; t++) {
        const i64 *g_ = G[t];
        i64 B = g_[0], H = g_[1], W = g_[2], C = g_[3], CO = g_[4], KH = g_[5], KW = g_[6], SH = g_[7], SW = g_[8];
        i64 PH = g_[9], PW = g_[10], DH = g_[11], DW = g_[12], dw = g_[13];
        i64 OH = (H + 2 * PH - DH * (KH - 1) - 1) / SH + 1, OW = (W + 2 * PW - DW * (KW - 1) - 1) / SW + 1;
        i64 CI = dw ? 1 : C;  /* input channels a kernel reads */
        i64 nx = B * H * W * C, nw = OH * OW * CO * KH * KW * CI, no = B * OH * OW * CO;
        float *x = randv(nx), *w = randv(nw), *g = randv(no);
        double *ro = calloc(no, 8), *rgx = calloc(nx, 8), *rgw = calloc(nw, 8);
        for (i64 b = 0; b < B; b++) for (i64 oy = 0; oy < OH; oy++) for (i64 ox = 0; ox < OW; ox++)
        for (i64 co = 0; co < CO; co++) for (i64 ky = 0; ky < KH; ky++) for (i64 kx = 0; kx < KW; kx++)
        for (i64 ci = 0; ci < CI; ci++) {
            i64 iy = oy * SH + ky * DH - PH, ix = ox * SW + kx * DW - PW, c = dw ? co : ci;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
            i64 xi = ((b * H + iy) * W + ix) * C + c, oi = ((b * OH + oy) * OW + ox) * CO + co;
            i64 wi = dw ? (((oy * OW + ox) * KH + ky) * KW + kx) * C + co
                        : ((((oy * OW + ox) * CO + co) * KH + ky) * KW + kx) * C + ci;
            ro[oi] += (double)x[xi] * w[wi];
            rgx[xi] += (double)g[oi] * w[wi];
            rgw[wi] += (double)g[oi] * x[xi];
        }
        float *o[2], *gx[2], *gw[2];
        int threads[2] = {1, 3};
        int have_gx = dw || C % VW == 0;
        for (int r = 0; r < 2; r++) {
            o[r] = calloc(no, 4); gx[r] = calloc(nx, 4); gw[r] = calloc(nw, 4);
            int n = threads[r];
            if (dw) {
                lc_dw_forward(x, w, o[r], B, H, W, C, PH, PW, OH, OW, KH, KW, SH, SW, DH, DW, n);
                lc_dw_backward_input(g, w, gx[r], B, H, W, C, PH, PW, OH, OW, KH, KW, SH, SW, DH, DW, n);
                lc_dw_backward_weight(x, g, gw[r], B, H, W, C, PH, PW, OH, OW, KH, KW, SH, SW, DH, DW, n);
            } else {
                if (lc_forward(x, w, o[r], B, H, W, C, PH, PW, OH, OW, CO, KH, KW, SH, SW, DH, DW, n)) return 2;
                if (have_gx) lc_backward_input(g, w, gx[r], B, H, W, C, PH, PW, OH, OW, CO, KH, KW, SH, SW, DH, DW, n);
                if (C % VW == 0) {
                    lc_backward_weight(x, g, gw[r], B, H, W, C, PH, PW, OH, OW, CO, KH, KW, SH, SW, DH, DW, n);
                } else {  /* g padded to COP output channels, as native_backend passes it */
                    i64 COP = (CO + VW - 1) / VW * VW;
                    float *gp = calloc(B * OH * OW * COP, 4);
                    for (i64 i = 0; i < B * OH * OW; i++) memcpy(gp + i * COP, g + i * CO, CO * 4);
                    lc_backward_weight_any(x, gp, gw[r], B, H, W, C, PH, PW, OH, OW, CO, COP, KH, KW, SH, SW,
                                           DH, DW, n);
                    free(gp);
                }
            }
        }
        double e[3] = {worst_rel(o[0], ro, no), have_gx ? worst_rel(gx[0], rgx, nx) : 0, worst_rel(gw[0], rgw, nw)};
        int eq = same(o[0], o[1], no) && same(gx[0], gx[1], nx) && same(gw[0], gw[1], nw);
        printf("case %u: forward %.2e input grad %.2e weight grad %.2e threads 1 == 3: %s\n", t, e[0], e[1], e[2],
               eq ? "yes" : "NO");
        for (int k = 0; k < 3; k++) worst = fmax(worst, e[k]);
        bad |= !eq;
    }
    printf("isa %s vector_width %d fma %d worst %.3e\n", lc_isa(), lc_vector_width(), lc_fma(), worst);
    return (bad || worst > 2e-6) ? 1 : 0;
}
'''
AARCH64_CC, QEMU, AARCH64_SYSROOT = shutil.which('aarch64-linux-gnu-gcc'), shutil.which('qemu-aarch64'), Path(
    '/usr/aarch64-linux-gnu')
HAS_AARCH64 = bool(AARCH64_CC and QEMU and AARCH64_SYSROOT.is_dir())
needs_aarch64 = pytest.mark.skipif(not HAS_AARCH64, reason='needs aarch64-linux-gnu-gcc, libc6-dev-arm64-cross '
                                   'and qemu-user (apt-get install gcc-aarch64-linux-gnu qemu-user)')


def _run_harness(tmp_path, cc, flags, runner=()):
    """Compile the harness (-O1) and lc_cpu.c (``flags``), run it; its stdout (it exits 1 on a failure)."""
    (tmp_path / 'harness.c').write_text(HARNESS)
    exe = tmp_path / 'harness'
    subprocess.run([cc, '-O1', '-c', str(tmp_path / 'harness.c'), '-o', str(tmp_path / 'harness.o')], check=True)
    subprocess.run([cc, *flags, '-std=gnu11', str(tmp_path / 'harness.o'), str(native.SOURCE), '-lm', '-o', str(exe)],
                   check=True)
    proc = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_compiler
@pytest.mark.skipif(not X86, reason='an x86 build')
def test_c_harness_on_the_generic_x86_build(tmp_path):
    """The harness itself, on this machine: the SSE2 build of every kernel against the C float64 reference."""
    out = _run_harness(tmp_path, native._compiler(), ['-O3', '-march=x86-64', '-fopenmp'])
    assert 'isa sse2 vector_width 4 fma 0' in out and 'NO' not in out


@needs_aarch64
@pytest.mark.parametrize('flags, isa', [
    (['-O3', '-fopenmp'], 'neon vector_width 4 fma 1'),
    (['-O3', '-march=armv8.2-a+sve', '-fopenmp'], 'neon (sve target; 128-bit vectors) vector_width 4 fma 1'),
], ids=['neon', 'sve'])
def test_aarch64_build_under_emulation(tmp_path, flags, isa):
    """What an ARM machine compiles (generic and native targets: plain -O3, NEON its baseline; an SVE
    -march), cross-compiled and run under qemu-user: every kernel against the float64 reference, 1 and 3
    threads bit for bit. Emulation checks the results, not the speed."""
    out = _run_harness(tmp_path, AARCH64_CC, flags, [QEMU, '-L', str(AARCH64_SYSROOT)])
    assert f'isa {isa}' in out and 'NO' not in out
