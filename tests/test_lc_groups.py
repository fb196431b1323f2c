"""LocallyConnected2d with groups (depthwise included) and dilation, nn.Conv2d semantics (issue 18, part 1)."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from bioconv_timm import LocallyConnected2d, grid_means, locally_connected2d, share_weights_, weight_snr
from bioconv_timm.layers import lc_backward_input, lc_backward_weight, lc_forward, native, resolve_backend
from test_native import PARTS, backends_used

HAS_NATIVE = native.available()
needs_native = pytest.mark.skipif(not HAS_NATIVE, reason='no native kernels on this machine')

# (batch, Cin, Cout, (H, W), (kh, kw), stride, padding, dilation, groups, bias): odd sizes and strides,
# rectangular everything; groups 2, depthwise (groups == Cin) with multiplier 1 and 2, dilation alone,
# groups alone.
GEOMETRIES = [
    (2, 4, 6, (7, 9), (3, 2), (2, 1), (1, 0), (2, 1), 2, True),
    (2, 4, 4, (7, 9), (3, 2), (2, 1), (1, 0), (2, 1), 4, True),
    (3, 3, 6, (6, 5), (3, 3), (1, 1), (2, 2), (2, 2), 3, False),
    (2, 3, 2, (8, 7), (2, 3), (1, 2), (0, 1), (3, 1), 1, True),
    (1, 6, 4, (5, 5), (3, 3), (2, 2), (1, 1), (1, 1), 2, False),
]
IDS = ['b{}-c{}-o{}-{}x{}-k{}x{}-s{}x{}-p{}x{}-d{}x{}-g{}-bias{}'.format(
    g[0], g[1], g[2], *g[3], *g[4], *g[5], *g[6], *g[7], g[8], int(g[9])) for g in GEOMETRIES]


def reference(x, weight, bias, stride, padding, dilation, groups):
    """One location at a time: output (i, j) applies its own kernel, group by group, to the input patch whose
    tap (u, v) is padded input (i * stride + u * dilation, j * stride + v * dilation).

    x (B, Cin, H, W); weight (out_h, out_w, Cout, kh, kw, Cin/groups); bias (Cout, out_h, out_w) or None.
    """
    out_h, out_w, cout, kh, kw, cg = weight.shape
    og = cout // groups
    xp = nn.functional.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    out = x.new_zeros(x.shape[0], cout, out_h, out_w)
    for i in range(out_h):
        rows = i * stride[0] + dilation[0] * torch.arange(kh)
        for j in range(out_w):
            cols = j * stride[1] + dilation[1] * torch.arange(kw)
            patch = xp[:, :, rows][:, :, :, cols]  # (B, Cin, kh, kw)
            for g in range(groups):
                kernel = weight[i, j, g * og:(g + 1) * og]  # (Cout/g, kh, kw, Cin/g)
                part = patch[:, g * cg:(g + 1) * cg]
                out[:, g * og:(g + 1) * og, i, j] = torch.einsum('bcuv,ouvc->bo', part, kernel)
    return out if bias is None else out + bias


def _layer_and_input(geometry, dtype=torch.float64):
    b, cin, cout, size, kernel, stride, padding, dilation, groups, bias = geometry
    layer = LocallyConnected2d(cin, cout, kernel, size, stride, padding, dilation, groups, bias=bias).to(dtype)
    if bias:
        with torch.no_grad():
            layer.bias.normal_()
    return layer, torch.randn(b, cin, *size, dtype=dtype)


def _args(layer):
    return layer.stride, layer.padding, layer.dilation, layer.groups


@pytest.mark.parametrize('geometry', GEOMETRIES, ids=IDS)
def test_values_and_gradients_match_the_per_location_reference(geometry):
    torch.manual_seed(0)
    layer, x = _layer_and_input(geometry)
    assert layer.weight.shape == (*layer.output_size, layer.out_channels, *layer.kernel_size,
                                  layer.in_channels // layer.groups)
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, *_args(layer))
    assert layer.output_size == tuple(conv(torch.randn(1, layer.in_channels, *layer.input_size)).shape[-2:])
    tensors = (x, layer.weight) + ((layer.bias,) if layer.bias is not None else ())
    params = [t.detach().clone().requires_grad_() for t in tensors]
    expected = reference(params[0], params[1], params[2] if len(params) > 2 else None, *_args(layer))
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, params, grad)
    xi = x.clone().requires_grad_()
    out = layer(xi)
    torch.testing.assert_close(out, expected)
    got_grads = torch.autograd.grad(out, [xi] + list(layer.parameters()), grad)
    for name, got, want in zip(('input', 'weight', 'bias'), got_grads, expected_grads):
        torch.testing.assert_close(got, want, msg=name)


@pytest.mark.parametrize('geometry', [GEOMETRIES[0], GEOMETRIES[2]], ids=[IDS[0], IDS[2]])
def test_gradcheck_float64(geometry):
    b, cin, cout, size, kernel, stride, padding, dilation, groups, _ = geometry
    torch.manual_seed(1)
    layer, x = _layer_and_input((1, cin, cout, size, kernel, stride, padding, dilation, groups, True))
    inputs = (x.requires_grad_(), layer.weight.detach().clone().requires_grad_(),
              layer.bias.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(
        lambda x, w, bias: locally_connected2d(x, w, bias, stride, padding, dilation, groups), inputs)


def test_several_row_chunks_give_the_one_chunk_result(monkeypatch):
    """The torch backend's row chunks (r0 > 0) with groups and dilation, forward and both gradients."""
    from bioconv_timm.layers import locally_connected as layers
    torch.manual_seed(2)
    layer, x = _layer_and_input((3, 4, 8, (11, 9), (3, 2), (1, 2), (2, 1), (2, 3), 4, False))
    grad = torch.randn(3, 8, *layer.output_size, dtype=torch.float64)
    results = []
    for mib in (1e-6, 100.0):  # one output row a chunk, then the whole layer in one chunk
        monkeypatch.setenv(layers.CHUNK_ENV, repr(mib))
        xi = x.clone().requires_grad_()
        out = layer(xi)
        results.append((out, *torch.autograd.grad(out, (xi, layer.weight), grad)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(results[0][0], reference(x, layer.weight.detach(), None, *_args(layer)))


@pytest.mark.parametrize('conv', [
    nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1), groups=2),
    nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4),             # depthwise, dilated
    nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, bias=False),   # depthwise, channel multiplier 2
    nn.Conv2d(2, 3, (2, 3), padding=(1, 2), dilation=(1, 3)),        # dilated only
], ids=['g2-dilated', 'depthwise-dilated', 'depthwise-x2', 'dilated'])
def test_from_conv_computes_the_conv(conv):
    conv = conv.double()
    size = (7, 9)
    layer = LocallyConnected2d.from_conv(conv, size)
    assert (layer.groups, layer.dilation) == (conv.groups, conv.dilation)
    x = torch.randn(2, conv.in_channels, *size, dtype=torch.float64, requires_grad=True)
    expected = conv(x)
    out = layer(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(expected)
    gx_conv, gw_conv = torch.autograd.grad(expected, (x, conv.weight), grad)
    gx, gw = torch.autograd.grad(out, (x, layer.weight), grad)
    torch.testing.assert_close(gx, gx_conv, rtol=1e-12, atol=1e-12)
    # the conv's kernel gradient is the sum of the per-location ones
    torch.testing.assert_close(gw.sum(dim=(0, 1)).permute(0, 3, 1, 2), gw_conv, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('geometry', [GEOMETRIES[0], GEOMETRIES[1]], ids=[IDS[0], IDS[1]])
@pytest.mark.parametrize('dtype, backend', [(torch.float64, 'torch'), (torch.float32, '')])
def test_opcheck_with_groups_and_dilation(geometry, dtype, backend):
    torch.manual_seed(3)
    layer, x = _layer_and_input(geometry, dtype)
    weight, size, kernel = layer.weight.detach(), list(layer.input_size), list(layer.kernel_size)
    stride, padding, dilation, groups = list(layer.stride), list(layer.padding), list(layer.dilation), layer.groups
    grad = torch.randn(x.shape[0], layer.out_channels, *layer.output_size, dtype=dtype)
    with backends_used() as used:
        torch.library.opcheck(lc_forward, (x.requires_grad_(), weight.clone().requires_grad_(), stride, padding,
                                           dilation, groups, backend))
        torch.library.opcheck(lc_backward_input, (grad, weight, size, stride, padding, dilation, groups, backend))
        torch.library.opcheck(lc_backward_weight, (grad, x.detach(), kernel, stride, padding, dilation, groups,
                                                   backend))
    expected = 'native' if HAS_NATIVE and dtype == torch.float32 else 'torch'
    assert used == {(part, expected) for part in PARTS}


def test_ops_reject_inconsistent_groups_and_dilation():
    x = torch.randn(2, 4, 7, 7)
    weight = torch.randn(5, 5, 6, 3, 3, 2)  # groups 2: 2 input channels per group
    assert torch.ops.bioconv.lc_forward(x, weight, [1, 1], [0, 0], None, 2).shape == (2, 6, 5, 5)
    with pytest.raises(RuntimeError, match='input has 4 channels, the weight 2 per group x 3 groups'):
        torch.ops.bioconv.lc_forward(x, weight, [1, 1], [0, 0], None, 3)
    with pytest.raises(RuntimeError, match='input has 4 channels, the weight 2$'):
        torch.ops.bioconv.lc_forward(x, weight, [1, 1], [0, 0])
    with pytest.raises(RuntimeError, match=r'dilation \(2, 2\) gives a \(3, 3\) output, but the weight has \(5, 5\)'):
        torch.ops.bioconv.lc_forward(x, weight, [1, 1], [0, 0], [2, 2], 2)
    with pytest.raises(RuntimeError, match='not divisible by groups=4'):
        torch.ops.bioconv.lc_forward(x, torch.randn(5, 5, 6, 3, 3, 1), [1, 1], [0, 0], None, 4)
    with pytest.raises(RuntimeError, match='not divisible by groups=3'):
        torch.ops.bioconv.lc_backward_weight(torch.randn(2, 6, 5, 5), x, [3, 3], [1, 1], [0, 0], None, 3)


def test_layer_arguments_are_checked_and_shown():
    with pytest.raises(ValueError, match='in_channels=4 and out_channels=6 must both be divisible by groups=4'):
        LocallyConnected2d(4, 6, 3, 8, groups=4)
    with pytest.raises(ValueError, match='in_channels=6 and out_channels=4 must both be divisible by groups=3'):
        LocallyConnected2d(6, 4, 3, 8, groups=3)
    for bad in (0, -2, True, 1.5):
        with pytest.raises(ValueError, match=f'groups must be a positive int, got {bad!r}'):
            LocallyConnected2d(4, 4, 3, 8, groups=bad)
    for bad in (0, (1, 0), True):
        with pytest.raises(ValueError, match='dilation'):
            LocallyConnected2d(4, 4, 3, 8, dilation=bad)
    with pytest.raises(ValueError, match=r'dilation=\(3, 3\): the output would be empty'):
        LocallyConnected2d(4, 4, 3, 6, dilation=3)
    layer = LocallyConnected2d(4, 8, 3, (9, 8), stride=2, padding=2, dilation=2, groups=4, bias=True)
    assert repr(layer) == ('LocallyConnected2d(4, 8, kernel_size=(3, 3), input_size=(9, 8), output_size=(5, 4), '
                           'stride=(2, 2), padding=(2, 2), dilation=(2, 2), groups=4)')
    plain = repr(LocallyConnected2d(4, 8, 3, 8))
    assert 'dilation' not in plain and 'groups' not in plain
    # Kaiming normal over the true fan-out of a grouped layer, (Cout / groups) * kh * kw
    big = LocallyConnected2d(8, 16, 3, 10, padding=1, groups=8)
    assert abs(big.weight.std().item() - math.sqrt(2 / (2 * 9))) < 0.02
    with pytest.raises(ValueError, match=r'expects input \(B, 4, 9, 8\)'):
        layer(torch.randn(1, 2, 9, 8))


def test_output_size_with_dilation_matches_conv2d():
    for size in [(7, 7), (8, 9), (15, 4)]:
        for k, s, p, d in [(3, 1, 1, 2), (3, 2, 2, 2), (2, 1, 0, 3), (1, 2, 0, 4), ((3, 2), (2, 1), (1, 0), (2, 1))]:
            conv = nn.Conv2d(2, 2, k, s, p, d)
            try:
                expected = tuple(conv(torch.randn(1, 2, *size)).shape[-2:])
            except RuntimeError:  # the conv's output would be empty: the layer refuses it too
                with pytest.raises(ValueError, match='output would be empty'):
                    LocallyConnected2d(2, 2, k, size, s, p, d)
                continue
            assert LocallyConnected2d(2, 2, k, size, s, p, d).output_size == expected


def _mixed_model():
    """A dense LC layer, a depthwise one and a dilated one."""
    return nn.Sequential(LocallyConnected2d(8, 8, 3, 6, padding=1), nn.ReLU(),
                         LocallyConnected2d(8, 8, 3, 6, padding=1, groups=8, bias=True), nn.ReLU(),
                         LocallyConnected2d(8, 8, 3, 6, padding=2, dilation=2))


def test_automatic_backend_runs_grouped_and_dilated_layers_natively():
    model = _mixed_model()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    expected = 'native' if HAS_NATIVE else 'torch'
    for layer in (model[0], model[2], model[4]):
        with backends_used() as used:
            layer(x).sum().backward()
        assert used == {(part, expected) for part in PARTS}
        assert resolve_backend(x, layer.weight, 'auto') == expected
    with native.use_backend('torch'):
        assert resolve_backend(x, model[2].weight, '') == 'torch'
        with backends_used() as used:
            model[2](x).sum().backward()
        assert used == {(part, 'torch') for part in PARTS}


# (batch, Cin, Cout, (H, W), (kh, kw), stride, padding, dilation, groups): depthwise (their own kernels) at
# channel counts that are and are not a multiple of the vector width (16, 8, 4), with odd batches, strides,
# dilations and taps that fall entirely in the padding; a depthwise layer with a channel multiplier and
# grouped layers with 2 and 16 channels per group (the dense kernels per group, their vectorized and
# fallback paths).
NATIVE_GROUPED = [
    (3, 16, 16, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1), 16),
    (5, 24, 24, (9, 7), (7, 7), (2, 1), (3, 3), (1, 1), 24),
    (2, 5, 5, (10, 9), (3, 2), (1, 2), (4, 2), (3, 2), 5),
    (4, 3, 6, (7, 9), (3, 3), (2, 2), (1, 1), (1, 1), 3),
    (3, 4, 6, (7, 9), (3, 2), (2, 1), (1, 0), (2, 1), 2),
    (6, 32, 32, (6, 6), (3, 3), (1, 1), (2, 2), (2, 2), 2),
]


@needs_native
@pytest.mark.parametrize('geometry', NATIVE_GROUPED, ids=lambda g: (
    'b{}-c{}-o{}-{}x{}-k{}x{}-s{}x{}-p{}x{}-d{}x{}-g{}'.format(g[0], g[1], g[2], *g[3], *g[4], *g[5], *g[6], *g[7],
                                                               g[8])))
def test_native_grouped_kernels_match_the_reference(geometry):
    torch.manual_seed(7)
    out, grad_x, grad_w, _ = _native_run_matches_the_reference(*geometry)
    assert out.is_contiguous(memory_format=torch.channels_last) and grad_w.is_contiguous()


def _native_run_matches_the_reference(b, cin, cout, size, kernel, stride, padding, dilation, groups):
    """Runs a biased LC layer of this geometry forward and backward under the native backend, checks that
    every part ran natively and matches the float64 per-location reference; returns (out, *gradients)."""
    layer = LocallyConnected2d(cin, cout, kernel, size, stride, padding, dilation, groups, bias=True)
    x = torch.randn(b, cin, *size).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(b, cout, *layer.output_size)
    params = [t.detach().double().requires_grad_() for t in (x, layer.weight, layer.bias)]
    expected = reference(*params, stride, padding, dilation, groups)
    expected_grads = torch.autograd.grad(expected, params, grad.double())
    xi = x.clone().requires_grad_()
    with backends_used() as used, native.use_backend('native'):
        out = layer(xi)
        got_grads = torch.autograd.grad(out, [xi, layer.weight, layer.bias], grad)
    assert used == {(part, 'native') for part in PARTS}
    for name, got, want in zip(('output', 'input', 'weight', 'bias'), (out, *got_grads), (expected, *expected_grads)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item(), msg=name)
    return (out, *got_grads)


@needs_native
def test_native_depthwise_results_do_not_depend_on_the_thread_count():
    torch.manual_seed(8)
    layer = LocallyConnected2d(16, 16, 3, (9, 9), stride=2, padding=1, groups=16)
    x = torch.randn(5, 16, 9, 9, requires_grad=True)
    grad = torch.randn(5, 16, *layer.output_size)
    results, threads = [], torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            with native.use_backend('native'):
                out = layer(x)
                results.append((out, *torch.autograd.grad(out, (x, layer.weight), grad)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# (batch, Cin, Cout, (H, W), (kh, kw), stride, padding, dilation): Cin a multiple of 16 (the gather input
# gradient and the vectorized weight gradient), 3 and 5 (the weight gradient over output channels and the
# torch col2im fallback of the input gradient), odd batches, rectangular dilations, taps that fall entirely
# in the padding, and a stride-1 layer whose forward takes the batch in blocks (19 x 16 channels, 6 x 40).
NATIVE_DILATED = [
    (8, 16, 16, (8, 8), (3, 3), (1, 1), (2, 2), (2, 2)),
    (5, 3, 16, (9, 11), (3, 3), (1, 1), (1, 3), (1, 3)),
    (6, 32, 20, (9, 7), (3, 2), (2, 1), (1, 0), (2, 3)),
    (3, 5, 7, (10, 9), (2, 3), (1, 2), (0, 2), (3, 2)),
    (4, 16, 8, (5, 5), (3, 3), (1, 1), (4, 4), (3, 3)),
    (19, 16, 16, (6, 40), (3, 3), (1, 1), (2, 2), (2, 2)),
]


@needs_native
@pytest.mark.parametrize('geometry', NATIVE_DILATED, ids=lambda g: (
    'b{}-c{}-o{}-{}x{}-k{}x{}-s{}x{}-p{}x{}-d{}x{}'.format(g[0], g[1], g[2], *g[3], *g[4], *g[5], *g[6], *g[7])))
def test_native_dilated_kernels_match_the_reference(geometry):
    torch.manual_seed(6)
    _native_run_matches_the_reference(*geometry, groups=1)


def test_compiled_depthwise_module_matches_eager():
    torch.manual_seed(4)
    model = nn.Sequential(LocallyConnected2d(4, 4, 3, 5, padding=2, dilation=2, groups=4, bias=True), nn.ReLU(),
                          LocallyConnected2d(4, 2, 1, 5))
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True)
    x = torch.randn(2, 4, 5, 5)
    out_c = compiled(x)
    out_c.square().sum().backward()
    out_e = model(x)
    out_e.square().sum().backward()
    torch.testing.assert_close(out_c, out_e)
    for (name, p_c), p_e in zip(compiled.named_parameters(), model.parameters()):
        torch.testing.assert_close(p_c.grad, p_e.grad, msg=name)


def test_meta_device_shapes_fx_trace_and_export():
    layer = LocallyConnected2d(6, 4, (3, 2), (7, 9), (2, 1), (1, 0), (2, 1), 2, bias=True)
    x = torch.randn(2, 6, 7, 9)
    expected = layer(x)
    meta = LocallyConnected2d(6, 4, (3, 2), (7, 9), (2, 1), (1, 0), (2, 1), 2, bias=True, device='meta')
    out = meta(x.to('meta').requires_grad_())
    assert out.shape == expected.shape and out.stride() == expected.stride()
    out.sum().backward()
    assert meta.weight.grad.shape == meta.weight.shape == (3, 8, 4, 3, 2, 3)
    traced = torch.fx.symbolic_trace(nn.Sequential(layer))
    torch.testing.assert_close(traced(x), expected)
    with pytest.raises(ValueError, match=r'expects input \(B, 6, 7, 9\)'):
        traced(torch.randn(2, 3, 7, 9))
    program = torch.export.export(nn.Sequential(layer), (x,))
    torch.testing.assert_close(program.module()(x), expected)


def test_instant_sleep_on_grouped_layers():
    """Sharing averages over the location dims only, so it works whatever the last dim (Cin / groups) is."""
    torch.manual_seed(5)
    layer = LocallyConnected2d(6, 6, 3, (8, 7), padding=2, dilation=2, groups=3, bias=True).double()
    before = layer.weight.detach().clone()
    snr_before = weight_snr(layer)
    assert 0 < snr_before < float('inf')
    assert share_weights_(nn.Sequential(layer)) == 1
    torch.testing.assert_close(layer.weight.detach(), grid_means(before, (3, 3)))
    for a in range(3):
        for b in range(3):
            module = before[a::3, b::3]
            torch.testing.assert_close(layer.weight.detach()[a::3, b::3],
                                       module.mean(dim=(0, 1), keepdim=True).expand_as(module))
    assert weight_snr(layer) == float('inf')
    # sharing a depthwise layer made by from_conv keeps the conv's kernel at every location
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False).double()
    lc = LocallyConnected2d.from_conv(conv, (6, 6))
    share_weights_(lc)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(lc(x), conv(x))


def test_the_performance_docs_show_the_kernel_table():
    """Which backend runs which kind of layer is stated once, in ops.KERNELS; docs/performance.md shows its
    kernel_table() between markers, and every (backend, kind) has its three functions."""
    from pathlib import Path

    from bioconv_timm.layers.ops import KERNELS, KINDS, kernel_table
    assert set(KERNELS) == {(backend, kind) for backend in ('native', 'torch') for kind in KINDS}
    assert all(len(kernels) == 3 and all(map(callable, kernels)) for kernels in KERNELS.values())
    text = (Path(__file__).resolve().parents[1] / 'docs' / 'performance.md').read_text()
    shown = text.split('<!-- kernel_table() begin -->\n', 1)[1].split('<!-- kernel_table() end -->', 1)[0]
    assert shown == kernel_table(), 'paste bioconv_timm.layers.ops.kernel_table() between the markers'


def test_lc_kind_follows_nn_conv2d():
    from bioconv_timm.layers.ops import lc_kind
    assert lc_kind(8, 8, 1) == 'dense'
    assert lc_kind(8, 8, 8) == lc_kind(4, 8, 4) == 'depthwise'   # groups == Cin, channel multiplier 1 or 2
    assert lc_kind(8, 8, 4) == lc_kind(8, 4, 2) == 'grouped'
