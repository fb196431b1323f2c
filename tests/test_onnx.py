"""ONNX export (issue 26 part 1): every family runs in a plain onnxruntime and matches eager PyTorch.

The LC layer's custom operator is replaced by standard operators while torch.onnx.export runs
(bioconv_timm.export.lc_forward_decomposition); these tests compare the decomposition with the operator in eager
mode, the exported files with eager PyTorch in onnxruntime (fp32, atol 1e-4) at a batch size other than the one
traced, and check export_onnx's refusals. About a minute on one core, most of it the per-family exports.
"""
import pytest
import timm
import torch
import torch.nn as nn

import bioconv_timm
from bioconv_timm.errors import UserRuntimeError, UserValueError
from bioconv_timm.layers import LocallyConnected2d, conv_output_size

onnx = pytest.importorskip('onnx', reason='the [dev] extra installs onnx, onnxscript and onnxruntime')
pytest.importorskip('onnxscript', reason='the [dev] extra installs onnx, onnxscript and onnxruntime')
pytest.importorskip('onnxruntime', reason='the [dev] extra installs onnx, onnxscript and onnxruntime')

from bioconv_timm import export  # noqa: E402
from bioconv_timm.export import OnnxExport, export_onnx, lc_decompositions, run_onnx  # noqa: E402

ATOL = 1e-4
# the operators a file may hold: standard ONNX (default domain) only, no custom library
STANDARD_DOMAINS = {'', 'ai.onnx'}

# (Cin, Cout, kernel, (H, W), stride, padding, dilation, groups): dense, rectangular, strided, dilated, grouped,
# depthwise (with a channel multiplier), pointwise with stride: every branch of the decomposition.
GEOMETRIES = [
    (3, 4, (3, 3), (6, 6), (1, 1), (1, 1), (1, 1), 1),
    (5, 6, (3, 2), (7, 5), (2, 1), (1, 0), (1, 1), 1),
    (4, 6, (2, 3), (9, 8), (1, 2), (2, 1), (2, 1), 2),
    (6, 6, (7, 7), (9, 9), (1, 1), (3, 3), (1, 1), 6),
    (4, 8, (3, 3), (8, 7), (2, 2), (1, 1), (1, 2), 4),
    (6, 5, (1, 1), (7, 6), (2, 2), (0, 0), (1, 1), 1),
]


def _layer(geometry, bias=False) -> LocallyConnected2d:
    cin, cout, kernel, size, stride, padding, dilation, groups = geometry
    return LocallyConnected2d(cin, cout, kernel, size, stride, padding, dilation, groups, bias=bias)


@pytest.mark.parametrize('geometry', GEOMETRIES, ids=lambda g: f'c{g[0]}-o{g[1]}-k{g[2]}-s{g[4]}-d{g[6]}-g{g[7]}')
def test_decomposition_equals_the_operator(geometry):
    # independent random kernels at every location: a decomposition that mixes up locations, taps or channels fails
    layer = _layer(geometry)
    x = torch.randn(3, geometry[0], *geometry[3])
    expected = torch.ops.bioconv.lc_forward(x, layer.weight, list(layer.stride), list(layer.padding),
                                            list(layer.dilation), layer.groups)
    got = export.lc_forward_decomposition(x, layer.weight, layer.stride, layer.padding, layer.dilation, layer.groups)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


class _Chain(nn.Module):
    """Every geometry of GEOMETRIES' kinds in one network, input (B, 3, 9, 7), with LC biases."""

    def __init__(self):
        super().__init__()
        size = (9, 7)
        specs = [(3, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1), (8, 8, (3, 3), (2, 1), (1, 1), (1, 1), 8),
                 (8, 12, (2, 3), (1, 1), (2, 1), (1, 2), 4), (12, 6, (1, 1), (2, 2), (0, 0), (1, 1), 1)]
        layers = []
        for cin, cout, kernel, stride, padding, dilation, groups in specs:
            layers += [LocallyConnected2d(cin, cout, kernel, size, stride, padding, dilation, groups, bias=True),
                       nn.ReLU()]
            size = tuple(conv_output_size(n, k, s, p, d) for n, k, s, p, d in zip(size, kernel, stride, padding,
                                                                                  dilation))
        self.body = nn.Sequential(*layers[:-1])
        self.pretrained_cfg = {'input_size': (3, 9, 7)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _nonstandard_ops(path) -> set:
    model = onnx.load(str(path), load_external_data=False)
    return {f'{n.domain}::{n.op_type}' for n in model.graph.node if n.domain not in STANDARD_DOMAINS}


def _assert_matches_eager(path, model: nn.Module, shape, batches):
    session = export.onnx_session(path, threads=1)
    for batch in batches:
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            expected = model(x)
        (got,) = run_onnx(session, x)
        assert got.shape == expected.shape, batch
        torch.testing.assert_close(got, expected, rtol=0, atol=ATOL, msg=lambda m: f'batch {batch}: {m}')


def test_plain_torch_onnx_export_of_lc_layers_runs_in_onnxruntime(tmp_path):
    # the call the issue names, without the helper: the LC op comes out as standard operators
    model = _Chain().eval()
    program = torch.onnx.export(model, (torch.randn(2, 3, 9, 7),), dynamo=True,
                                dynamic_shapes=({0: torch.export.Dim('batch')},))
    program.save(tmp_path / 'chain.onnx')
    assert _nonstandard_ops(tmp_path / 'chain.onnx') == set()
    assert 'MatMul' in {n.op_type for n in program.model_proto.graph.node}
    _assert_matches_eager(tmp_path / 'chain.onnx', model, (3, 9, 7), batches=(1, 5))


def test_an_exported_program_is_made_exportable_by_the_decomposition_table(tmp_path):
    model = _Chain().eval()
    program = torch.export.export(model, (torch.randn(2, 3, 9, 7),),
                                  dynamic_shapes=({0: torch.export.Dim('batch')},))
    assert any('lc_forward' in str(n.target) for n in program.graph.nodes)  # the custom op is in it
    onnx_program = torch.onnx.export(program.run_decompositions(lc_decompositions()), dynamo=True)
    onnx_program.save(tmp_path / 'from_ep.onnx')
    assert _nonstandard_ops(tmp_path / 'from_ep.onnx') == set()
    _assert_matches_eager(tmp_path / 'from_ep.onnx', model, (3, 9, 7), batches=(3,))


# One model per family at a small input size (the registered sizes: 32 for ResNet20, 224 for ResNet18-half at 483M
# parameters, 64 for the timm CNNs). ResNet20's LC model is a sleep model (_ws10): the same network.
FAMILIES = [
    ('lc_resnet20_ws10', 16),
    ('conv_resnet20', 16),
    ('lc_resnet18_half', 32),
    ('lc_resnet18_half_convstem', 32),
    ('lc_resnet18', 32),
    ('lc_convnext_atto', 32),
    ('lc_mobilenetv3_small_050', 32),
]


@pytest.mark.parametrize('name,img_size', FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_exports_and_matches_eager_at_another_batch_size(tmp_path, name, img_size):
    model = timm.create_model(name, img_size=img_size).eval()
    if name == 'conv_resnet20':  # by name: export_onnx builds the same model (same seed)
        torch.manual_seed(0)
        result = export_onnx(name, tmp_path / f'{name}.onnx', img_size=img_size, batch_size=2, verify=False)
    else:
        result = export_onnx(model, tmp_path / f'{name}.onnx', batch_size=2, verify=False)
    assert isinstance(result, OnnxExport) and result.path.is_file() and result.data_path is None
    assert result.input_shape == (2, 3, img_size, img_size) and result.dynamic_batch
    assert result.num_bytes == result.path.stat().st_size
    assert _nonstandard_ops(result.path) == set()
    _assert_matches_eager(result.path, model, (3, img_size, img_size), batches=(3, 1))


@pytest.fixture
def chain():
    return _Chain()


def test_export_onnx_checks_itself_and_catches_a_wrong_translation(tmp_path, chain, monkeypatch):
    result = export_onnx(chain.eval(), tmp_path / 'ok.onnx', batch_size=1)
    assert result.checked_batches == (1, 2) and result.max_abs_diff < ATOL
    assert result.input_shape == (2, 3, 9, 7)  # a dynamic batch is traced at 2 at least

    good = export.lc_forward_decomposition

    def mirrored(x, weight, *args, **kwargs):  # every location's kernel flipped left-right: wrong, same shapes
        return good(x, weight.flip(4), *args, **kwargs)

    monkeypatch.setattr('bioconv_timm.layers.lc_decomposition.lc_forward_decomposition', mirrored)
    with pytest.raises(UserRuntimeError, match=r'disagrees with eager PyTorch at batch 1: max \|onnxruntime - eager'):
        export_onnx(chain, tmp_path / 'wrong.onnx', batch_size=1)
    assert (tmp_path / 'wrong.onnx').is_file()  # kept for inspection


def test_a_fixed_batch_file_takes_only_its_batch(tmp_path, chain):
    result = export_onnx(chain.eval(), tmp_path / 'fixed.onnx', batch_size=3, dynamic_batch=False)
    assert result.checked_batches == (3,) and result.input_shape == (3, 3, 9, 7)
    _assert_matches_eager(result.path, chain, (3, 9, 7), batches=(3,))
    with pytest.raises(Exception, match='(?i)dimension|shape'):
        run_onnx(result.path, torch.randn(2, 3, 9, 7))


def test_a_model_in_training_mode_is_exported_in_eval_mode_and_put_back(tmp_path, chain):
    model = nn.Sequential(chain, nn.BatchNorm2d(6), nn.Dropout(0.5), nn.BatchNorm2d(6))
    model.pretrained_cfg = chain.pretrained_cfg
    model.train()
    model[3].eval()  # a frozen BatchNorm stays frozen
    with torch.no_grad():  # the file must use these running statistics, not the batch's
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    with pytest.warns(UserWarning, match='exported in eval mode.*sleep phase'):
        result = export_onnx(model, tmp_path / 'train.onnx', verify=False)
    assert [m.training for m in model] == [True, True, True, False] and model.training
    _assert_matches_eager(result.path, model.eval(), (3, 9, 7), batches=(4,))


@pytest.mark.parametrize('kwargs,match', [
    (dict(batch_size=0), r'batch_size=0 is invalid'),
    (dict(opset=17), r'opset=17 is invalid.*opset 18'),
    (dict(img_size=(9, 8)), r'one kernel per location.*img_size=\(9, 8\)'),
    (dict(model_kwargs={'num_classes': 3}), r'model_kwargs are timm.create_model arguments'),
])
def test_export_onnx_refuses_bad_arguments(tmp_path, chain, kwargs, match):
    with pytest.raises(UserValueError, match=match):
        export_onnx(chain, tmp_path / 'x.onnx', **kwargs)
    assert not (tmp_path / 'x.onnx').exists()


def test_export_onnx_refuses_what_it_cannot_export(tmp_path, chain):
    with pytest.raises(UserValueError, match=r"unknown model 'lc_resnet2O'.*did you mean lc_resnet20"):
        export_onnx('lc_resnet2O', tmp_path / 'x.onnx')
    with pytest.raises(UserValueError, match='is a folder'):
        export_onnx(chain, tmp_path)
    with pytest.raises(UserValueError, match='meta device'):
        export_onnx('lc_resnet20', tmp_path / 'x.onnx', model_kwargs={'device': 'meta'})
    with pytest.raises(UserValueError, match='bfloat16 tensors.*model.float'):
        export_onnx(_Chain().to(torch.bfloat16), tmp_path / 'x.onnx')
    plain = nn.Sequential(LocallyConnected2d(3, 4, 3, (8, 8)))
    with pytest.raises(UserValueError, match='cannot tell which input size'):
        export_onnx(plain, tmp_path / 'x.onnx')
    assert not (tmp_path / 'x.onnx').exists()
    assert all(name in bioconv_timm.MODEL_NAMES for name, _ in FAMILIES)


def test_the_layer_still_runs_its_operator_outside_an_export():
    # the decomposition is taken only while torch.onnx.export runs: torch.export keeps the one-node operator
    layer = _layer(GEOMETRIES[0])
    program = torch.export.export(layer, (torch.randn(2, 3, 6, 6),))
    assert any('lc_forward' in str(n.target) for n in program.graph.nodes)
    assert not torch.onnx.is_in_onnx_export()
