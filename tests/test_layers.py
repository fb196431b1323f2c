from pathlib import Path

import pytest
import torch
import torch.nn as nn

from bioconv_timm import LocallyConnected2d, locally_connected2d
from conftest import reference_lc

# (cin, cout, kernel, stride, padding, (H, W))
GEOMETRIES = [
    (3, 5, 3, 1, 1, (8, 8)),
    (4, 6, 3, 2, 1, (9, 9)),      # stride 2 on an odd input
    (2, 3, 5, 2, 2, (11, 8)),     # rectangular
    (3, 4, 1, 2, 0, (7, 7)),      # 1x1 shortcut, stride 2, odd
    (3, 2, 7, 2, 3, (13, 10)),    # ResNet18 stem geometry
    (2, 2, 2, 1, 0, (6, 5)),      # even kernel
    (3, 4, (3, 5), (1, 2), (1, 2), (9, 12)),  # rectangular kernel, stride and padding
    (16, 8, 3, 1, 0, (5, 5)),     # no padding
]


@pytest.mark.parametrize('cin,cout,k,s,p,size', GEOMETRIES)
def test_lc_from_conv_equals_conv_forward_and_backward(cin, cout, k, s, p, size):
    conv = nn.Conv2d(cin, cout, k, s, p, bias=True).double()
    lc = LocallyConnected2d.from_conv(conv, size)
    assert lc.bias is not None
    x = torch.randn(3, cin, *size, dtype=torch.float64, requires_grad=True)
    y_conv, y_lc = conv(x), lc(x)
    assert y_lc.shape == y_conv.shape
    torch.testing.assert_close(y_lc, y_conv)
    grad = torch.randn_like(y_conv)
    gx_conv, gw_conv = torch.autograd.grad(y_conv, (x, conv.weight), grad)
    gx_lc, gw_lc = torch.autograd.grad(y_lc, (x, lc.weight), grad)
    torch.testing.assert_close(gx_lc, gx_conv)
    # the conv weight gradient is the sum of the per-location gradients
    torch.testing.assert_close(gw_lc.sum(dim=(0, 1)), gw_conv.permute(0, 2, 3, 1))


@pytest.mark.parametrize('cin,cout,k,s,p,size', GEOMETRIES)
def test_lc_matches_slow_reference(cin, cout, k, s, p, size):
    lc = LocallyConnected2d(cin, cout, k, size, stride=s, padding=p, bias=True).double()
    x = torch.randn(2, cin, *size, dtype=torch.float64, requires_grad=True)
    ref = reference_lc(x, lc.weight, lc.stride, lc.padding, lc.bias)
    out = lc(x)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (x, lc.weight, lc.bias), grad)
    actual = torch.autograd.grad(out, (x, lc.weight, lc.bias), grad)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


# The full finite-difference Jacobian costs one forward per input element: seconds for the two geometries with
# ~10^4 weights (3x3 at 8x8 locations, the 7x7 stem), whose gradients test_lc_matches_slow_reference already
# checks element for element. Those two get gradcheck's fast mode (random projections of the Jacobian: any
# gradient wrong across a location, row or column, not one lone element); the other three the full Jacobian.
@pytest.mark.parametrize('cin,cout,k,s,p,size,fast', [(*g, i in (0, 4)) for i, g in enumerate(GEOMETRIES[:5])])
def test_gradcheck_float64(cin, cout, k, s, p, size, fast):
    lc = LocallyConnected2d(cin, cout, k, size, stride=s, padding=p, bias=True).double()
    x = torch.randn(2, cin, *size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: locally_connected2d(a, w, b, lc.stride, lc.padding), (x, lc.weight, lc.bias), fast_mode=fast)


def test_large_input_uses_several_row_chunks():
    # 64 channels at 32x32 with B=16: patches are larger than one cache-sized chunk.
    conv = nn.Conv2d(64, 8, 3, 1, 1, bias=False)
    lc = LocallyConnected2d.from_conv(conv, (32, 32))
    x = torch.randn(16, 64, 32, 32, requires_grad=True)
    torch.testing.assert_close(lc(x), conv(x), atol=1e-4, rtol=1e-4)
    g = torch.randn(16, 8, 32, 32)
    torch.testing.assert_close(torch.autograd.grad(lc(x), x, g)[0], torch.autograd.grad(conv(x), x, g)[0],
                               atol=1e-4, rtol=1e-4)


def test_output_size_matches_conv_formula():
    for size in [(7, 7), (8, 9), (15, 4)]:
        for k, s, p in [(3, 1, 1), (3, 2, 1), (1, 2, 0), (5, 3, 2), (4, 2, 1)]:
            lc = LocallyConnected2d(2, 3, k, size, stride=s, padding=p)
            conv = nn.Conv2d(2, 3, k, s, p)
            assert lc(torch.randn(1, 2, *size)).shape == conv(torch.randn(1, 2, *size)).shape
            assert lc.output_size == tuple(conv(torch.randn(1, 2, *size)).shape[-2:])


def test_channels_last_input_gives_same_result():
    lc = LocallyConnected2d(4, 6, 3, (10, 10), stride=2, padding=1)
    x = torch.randn(3, 4, 10, 10)
    torch.testing.assert_close(lc(x.contiguous(memory_format=torch.channels_last)), lc(x))


def test_weight_layout_and_independent_init():
    lc = LocallyConnected2d(8, 16, 3, (6, 6), padding=1)
    assert lc.weight.shape == (6, 6, 16, 3, 3, 8)
    assert lc.bias is None
    # Kaiming normal, fan_out: std = sqrt(2 / (Cout k^2)), independent at each location
    assert abs(lc.weight.std().item() - (2 / (16 * 9)) ** 0.5) < 0.01
    assert not torch.allclose(lc.weight[0, 0], lc.weight[1, 1])


def test_wrong_input_size_names_expected_size():
    lc = LocallyConnected2d(3, 4, 3, (16, 16), padding=1)
    with pytest.raises(ValueError, match=r'\(B, 3, 16, 16\)'):
        lc(torch.randn(1, 3, 17, 16))
    with pytest.raises(ValueError, match='3, 16, 16'):
        lc(torch.randn(1, 2, 16, 16))


def test_bad_arguments():
    with pytest.raises(ValueError, match='output would be empty'):
        LocallyConnected2d(3, 4, 5, (3, 3))
    with pytest.raises(ValueError, match='stride'):
        LocallyConnected2d(3, 4, 3, (8, 8), stride=0)
    with pytest.raises(ValueError, match='pair'):
        LocallyConnected2d(3, 4, (3, 3, 3), (8, 8))
    with pytest.raises(ValueError, match='positive'):
        LocallyConnected2d(0, 4, 3, (8, 8))
    with pytest.raises(TypeError, match='nn.Conv2d'):
        LocallyConnected2d.from_conv(nn.Linear(3, 4), (8, 8))
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        LocallyConnected2d.from_conv(nn.Conv2d(4, 4, 3, padding=1, padding_mode='reflect'), (8, 8))


@pytest.mark.parametrize('dtype', [torch.bfloat16])
def test_autocast_cpu(dtype):
    conv = nn.Conv2d(4, 8, 3, 1, 1, bias=False)
    lc = LocallyConnected2d.from_conv(conv, (8, 8))
    x = torch.randn(2, 4, 8, 8)
    with torch.autocast('cpu', dtype=dtype):
        y = lc(x)
        y_conv = conv(x)
    assert y.dtype == y_conv.dtype == dtype
    torch.testing.assert_close(y.float(), y_conv.float(), atol=5e-2, rtol=5e-2)
    y.float().sum().backward()
    assert lc.weight.grad is not None and lc.weight.grad.dtype == torch.float32


def test_dtype_mismatch_without_autocast_is_clear():
    lc = LocallyConnected2d(2, 2, 3, (5, 5))
    with pytest.raises(TypeError, match='dtype'):
        lc(torch.randn(1, 2, 5, 5, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype):
    conv = nn.Conv2d(4, 8, 3, 2, 1, bias=False).cuda()
    lc = LocallyConnected2d.from_conv(conv, (9, 9))
    x = torch.randn(2, 4, 9, 9, device='cuda')
    with torch.autocast('cuda', dtype=dtype):
        y = lc(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), conv(x), atol=5e-2, rtol=5e-2)
    y.float().sum().backward()
    assert lc.weight.grad.dtype == torch.float32


def test_einsum_baseline_of_the_benchmark_computes_the_same_layer():
    from bioconv_timm.bench import LayerCase, UnfoldEinsumLC, bench_layers
    lc = LocallyConnected2d(3, 4, 3, (9, 9), stride=2, padding=1).double()
    baseline = UnfoldEinsumLC(lc)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(baseline(x), lc(x))
    case = LayerCase('resnet20', '4->4', 2, 4, 4, 8, stride=1)
    records = bench_layers([case], impls=('lc', 'einsum'), modes=('fwd+bwd',), repeats=1, memory='none')
    assert sorted(r['impl'] for r in records) == ['einsum', 'lc'] and all(r['median_ms'] > 0 for r in records)


def test_chunk_budget_per_device_and_override(monkeypatch):
    from types import SimpleNamespace

    from bioconv_timm.layers import locally_connected as layers
    monkeypatch.delenv(layers.CHUNK_ENV, raising=False)
    assert layers.chunk_bytes('cpu') == 4 * 2 ** 20
    # CUDA: large chunks (launch overhead), capped at 1/32 of the GPU's memory
    monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda d: SimpleNamespace(total_memory=80 * 2 ** 30))
    assert layers.chunk_bytes('cuda') == 2 ** 30
    monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda d: SimpleNamespace(total_memory=16 * 2 ** 30))
    assert layers.chunk_bytes(torch.device('cuda', 0)) == 2 ** 29
    monkeypatch.setenv(layers.CHUNK_ENV, '0.5')
    assert layers.chunk_bytes('cpu') == layers.chunk_bytes('cuda') == 2 ** 19
    for bad in ('0', '-3', 'lots'):
        monkeypatch.setenv(layers.CHUNK_ENV, bad)
        with pytest.raises(ValueError, match=f'{layers.CHUNK_ENV}.*{bad}'):
            layers.chunk_bytes('cpu')


def test_torch_backend_is_the_same_in_one_chunk_or_many(monkeypatch):
    from bioconv_timm.layers import locally_connected as layers, native, torch_backend
    torch.manual_seed(3)
    lc = LocallyConnected2d(4, 6, 3, (12, 10), stride=1, padding=1).double()
    x = torch.randn(5, 4, 12, 10, dtype=torch.float64)
    g = torch.randn(5, 6, 12, 10, dtype=torch.float64)
    per_row = 5 * 3 * 3 * 4 * 8 * 10  # bytes of one output row's patches
    results = []
    for mib in (per_row / 2 ** 20, 100.0):  # one row a chunk (12 chunks), then the whole layer in one
        monkeypatch.setenv(layers.CHUNK_ENV, repr(mib))
        assert len(torch_backend.row_chunks(12, 10, per_row // 10, layers.chunk_bytes('cpu'))) == (12 if mib < 1 else 1)
        xi = x.clone().requires_grad_()
        with native.use_backend('torch'):
            out = lc(xi)
            gx, gw = torch.autograd.grad(out, (xi, lc.weight), g)
        results.append((out, gx, gw))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(results[0][0], reference_lc(x, lc.weight.detach(), lc.stride, lc.padding, lc.bias))


def test_pyproject_torch_floor_has_the_autocast_api_the_layer_uses():
    # locally_connected2d calls torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype, both new in
    # torch 2.4: a floor below that lets pip keep a torch on which the first LC forward fails.
    tomllib = pytest.importorskip('tomllib')
    from packaging.requirements import Requirement
    project = tomllib.loads((Path(__file__).parents[1] / 'pyproject.toml').read_text())['project']
    requirements = {r.name: r.specifier for r in map(Requirement, project['dependencies'])}
    assert '2.3.1' not in requirements['torch'] and '2.4.0' in requirements['torch']
    assert '0.18.1' not in requirements['torchvision'] and '0.19.0' in requirements['torchvision']  # torch 2.4's
    assert callable(torch.get_autocast_dtype) and torch.is_autocast_enabled('cpu') is False
