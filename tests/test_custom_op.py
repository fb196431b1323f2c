"""The LC layer as torch.library operators: opcheck, meta/FakeTensor shapes, torch.compile and torch.export."""
import contextlib
import copy

import pytest
import timm
import torch

import bioconv_timm  # noqa: F401  (registers the models)
from bioconv_timm.layers import native
from bioconv_timm.layers import LocallyConnected2d, lc_backward_input, lc_backward_weight, lc_forward
from test_native import PARTS, backends_used

BACKENDS = ['torch', pytest.param('native', marks=pytest.mark.skipif(not native.available(),
                                                                     reason='no native kernels on this machine'))]

# (batch, Cin, Cout, (H, W), (kh, kw), stride, padding, bias): square and rectangular inputs, kernels and
# strides, padding 0 and wider than half the kernel; Cin 3 and 5 take the native kernels' odd-channel paths.
GEOMETRIES = [
    (2, 3, 4, (6, 6), (3, 3), (1, 1), (1, 1), False),
    (3, 16, 8, (7, 5), (3, 2), (2, 1), (1, 0), True),
    (1, 5, 6, (5, 9), (1, 3), (1, 3), (0, 2), False),
    (2, 16, 16, (4, 4), (2, 2), (2, 2), (0, 0), True),
]
GEOMETRY_IDS = ['b{}-c{}-o{}-{}x{}-k{}x{}-s{}x{}-p{}x{}-bias{}'.format(
    g[0], g[1], g[2], *g[3], *g[4], *g[5], *g[6], int(g[7])) for g in GEOMETRIES]


def _layer_and_input(geometry, device='cpu', dtype=torch.float32):
    b, cin, cout, size, kernel, stride, padding, bias = geometry
    layer = LocallyConnected2d(cin, cout, kernel, size, stride, padding, bias=bias, device=device, dtype=dtype)
    return layer, torch.randn(b, cin, *size, device=device, dtype=dtype)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('geometry', GEOMETRIES, ids=GEOMETRY_IDS)
def test_opcheck_passes_on_the_three_ops(geometry, backend):
    torch.manual_seed(0)
    dtype = torch.float32 if backend == 'native' else torch.float64
    layer, x = _layer_and_input(geometry, dtype=dtype)
    weight, size = layer.weight.detach(), list(layer.input_size)
    stride, padding, kernel = list(layer.stride), list(layer.padding), list(layer.kernel_size)
    grad = torch.randn(x.shape[0], layer.out_channels, *layer.output_size, dtype=dtype)
    with backends_used() as used:
        # schema, autograd registration, FakeTensor kernel, and AOT dispatch with dynamic shapes, forward
        # and backward through the registered autograd formula
        torch.library.opcheck(lc_forward, (x.requires_grad_(), weight.requires_grad_(), stride, padding),
                              dict(backend=backend))
        # the backward ops have no derivative (DOUBLE_BACKWARD_ERROR): checked without requires_grad
        torch.library.opcheck(lc_backward_input, (grad, weight.detach(), size, stride, padding), dict(backend=backend))
        torch.library.opcheck(lc_backward_weight, (grad, x.detach(), kernel, stride, padding), dict(backend=backend))
    assert used == {(part, backend) for part in PARTS}


@pytest.mark.parametrize('geometry', GEOMETRIES, ids=GEOMETRY_IDS)
def test_meta_tensors_give_the_output_and_gradient_shapes(geometry):
    layer, x = _layer_and_input(geometry)
    expected = layer(x.requires_grad_())
    expected.sum().backward()
    meta_layer, meta_x = _layer_and_input(geometry, device='meta')
    out = meta_layer(meta_x.requires_grad_())
    assert out.device.type == 'meta' and out.shape == expected.shape and out.stride() == expected.stride()
    out.sum().backward()
    assert meta_x.grad.shape == x.grad.shape and meta_x.grad.stride() == x.grad.stride()
    for p, real in zip(meta_layer.parameters(), layer.parameters()):
        assert p.grad.device.type == 'meta' and p.grad.shape == real.grad.shape == p.shape


def test_ops_reject_a_weight_that_does_not_fit_the_input():
    x = torch.randn(2, 4, 8, 8)
    weight = torch.randn(8, 8, 3, 3, 3, 4)  # 8x8 locations: a 3x3 kernel at stride 2, padding 1 gives 4x4
    with pytest.raises(RuntimeError, match=r'gives a \(4, 4\) output, but the weight has \(8, 8\) locations'):
        torch.ops.bioconv.lc_forward(x, weight, [2, 2], [1, 1])
    with pytest.raises(RuntimeError, match='input has 4 channels, the weight 5'):
        bioconv_timm.locally_connected2d(x, torch.randn(8, 8, 3, 3, 3, 5), padding=1)
    with pytest.raises(RuntimeError, match='must match'):
        torch.ops.bioconv.lc_forward(x, weight.double(), [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r'output gradient of shape \(2, 3, 4, 4\), expected \(2, 3, 8, 8\)'):
        torch.ops.bioconv.lc_backward_input(torch.randn(2, 3, 4, 4), weight, [8, 8], [1, 1], [1, 1])


def _small_lc_resnet20():
    return timm.create_model('lc_resnet20', in_chans=1, img_size=16, num_classes=4, layers=(1, 1, 1))


def test_compiled_lc_resnet20_matches_eager_outputs_and_gradients():
    """The user's command: torch.compile(model, fullgraph=True) with the default (inductor) backend."""
    torch.manual_seed(0)
    model = _small_lc_resnet20()
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True)
    x = torch.randn(3, 1, 16, 16)
    with backends_used() as used:
        out_c = compiled(x)
        out_c.square().mean().backward()
    assert {backend for _, backend in used} == {'native' if native.available() else 'torch'}
    assert {part for part, _ in used} == set(PARTS)
    out_e = model(x)
    out_e.square().mean().backward()
    torch.testing.assert_close(out_c, out_e)
    for (name, p_c), p_e in zip(compiled.named_parameters(), model.parameters()):
        torch.testing.assert_close(p_c.grad, p_e.grad, msg=name)


def test_exported_lc_resnet20_matches_eager_at_any_batch_size(tmp_path):
    torch.manual_seed(1)
    model = _small_lc_resnet20().eval()
    x = torch.randn(2, 1, 16, 16)
    batch = torch.export.Dim('batch', min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    lc_layers = sum(isinstance(m, LocallyConnected2d) for m in model.modules())
    targets = [node.target for node in program.graph.nodes if node.op == 'call_function']
    assert targets.count(torch.ops.bioconv.lc_forward.default) == lc_layers
    torch.export.save(program, tmp_path / 'lc_resnet20.pt2')
    loaded = torch.export.load(tmp_path / 'lc_resnet20.pt2')
    with torch.no_grad():
        for b in (2, 5):
            xb = torch.randn(b, 1, 16, 16)
            expected = model(xb)
            torch.testing.assert_close(program.module()(xb), expected)
            torch.testing.assert_close(loaded.module()(xb), expected)


def test_compiled_layer_follows_the_backend_choice_and_autocast(monkeypatch):
    """What the graph bakes in and what it reads when it runs: use_backend recompiles (forward and backward
    follow it), BIOCONV_LC_BACKEND is read at run time, autocast runs the op in bf16. The aot_eager backend
    traces the same graphs as inductor without generating code."""
    monkeypatch.delenv('BIOCONV_LC_BACKEND', raising=False)
    torch.manual_seed(2)
    layer = LocallyConnected2d(8, 8, 3, 6, padding=1, bias=True)
    compiled = torch.compile(layer, fullgraph=True, backend='aot_eager')
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    default = 'native' if native.available() else 'torch'
    for choice, expected in ((None, default), ('torch', 'torch')):
        with backends_used() as used:
            with native.use_backend(choice) if choice else contextlib.nullcontext():
                out = compiled(x)
            out.sum().backward()  # outside the block
        assert used == {(part, expected) for part in PARTS}
        torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv('BIOCONV_LC_BACKEND', 'torch')
    with backends_used() as used:
        compiled(x).sum().backward()
    assert used == {(part, 'torch') for part in PARTS}
    monkeypatch.delenv('BIOCONV_LC_BACKEND')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = compiled(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), layer(x), atol=5e-2, rtol=5e-2)
    out.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_opcheck_and_compiled_layer_under_bf16_autocast():
    torch.manual_seed(3)
    layer, x = _layer_and_input(GEOMETRIES[1], device='cuda')
    weight = layer.weight.detach().clone().requires_grad_()
    torch.library.opcheck(lc_forward, (x.clone().requires_grad_(), weight, list(layer.stride), list(layer.padding)))
    compiled = torch.compile(layer, fullgraph=True)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        out = compiled(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), layer(x), atol=5e-2, rtol=5e-2)
    out.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and layer.weight.grad.device.type == 'cuda'
