import pytest
import timm
import torch

import bioconv_timm
from bioconv_timm import BioResNet, LocallyConnected2d, MODEL_NAMES, share_weights_
from bioconv_timm.models import BIORESNET_NAMES

RESNET20 = [n for n in BIORESNET_NAMES if 'resnet20' in n]
RESNET18 = [n for n in BIORESNET_NAMES if 'resnet18' in n]

EXPECTED_NAMES = {
    'conv_resnet20', 'lc_resnet20', 'lc_resnet20_ws1', 'lc_resnet20_ws10', 'lc_resnet20_ws100',
    'conv_resnet18_half', 'lc_resnet18_half', 'lc_resnet18_half_ws1', 'lc_resnet18_half_ws10',
    'lc_resnet18_half_ws100', 'lc_resnet18_half_convstem', 'lc_resnet18_half_convstem_ws1',
    'lc_resnet18_half_convstem_ws10', 'lc_resnet18_half_convstem_ws100',
}
# timm CNNs made LC (bioconv_timm.models.timm_cnns): conv_F, lc_F, lc_F_ws{1,10,100}
EXPECTED_TIMM_NAMES = {f'{kind}_{family}' for family in ('resnet18', 'convnext_atto', 'mobilenetv3_small_050')
                       for kind in ('conv', 'lc')} | {
    f'lc_{family}_ws{n}' for family in ('resnet18', 'convnext_atto', 'mobilenetv3_small_050') for n in (1, 10, 100)}


def test_all_names_registered_with_timm():
    assert set(BIORESNET_NAMES) == EXPECTED_NAMES
    assert set(MODEL_NAMES) == EXPECTED_NAMES | EXPECTED_TIMM_NAMES and len(MODEL_NAMES) == 29
    listed = set(timm.list_models('lc_*')) | set(timm.list_models('conv_*'))
    assert set(MODEL_NAMES) <= listed
    # registered tags, published or not; list_pretrained() names only published ones (none yet)
    assert 'lc_resnet18_half_ws10.in1k' in timm.list_models('lc_resnet18_half_ws10*', include_tags=True)
    assert 'lc_resnet18_half_ws10.in1k' not in timm.list_pretrained('lc_resnet18_half_ws10*')


def _lc_param_count(cin, cout, k, out_hw):
    return out_hw[0] * out_hw[1] * cin * cout * k * k


def test_resnet20_lc_parameter_count_matches_architecture():
    model = timm.create_model('lc_resnet20')
    # computed from the architecture: stem, 3 stages of 3 blocks, LC 1x1 shortcuts, BN, fc
    expected = _lc_param_count(3, 16, 3, (32, 32))
    expected += 6 * _lc_param_count(16, 16, 3, (32, 32))
    expected += _lc_param_count(16, 32, 3, (16, 16)) + 5 * _lc_param_count(32, 32, 3, (16, 16))
    expected += _lc_param_count(16, 32, 1, (16, 16))
    expected += _lc_param_count(32, 64, 3, (8, 8)) + 5 * _lc_param_count(64, 64, 3, (8, 8))
    expected += _lc_param_count(32, 64, 1, (8, 8))
    expected += 2 * (16 + 6 * 16 + 7 * 32 + 7 * 64)  # BN weight + bias
    expected += 64 * 10 + 10
    n = sum(p.numel() for p in model.parameters())
    assert n == expected
    assert 40.4e6 < n < 41.0e6  # the paper's "about 40.6M"
    conv = timm.create_model('conv_resnet20')
    assert 0.26e6 < sum(p.numel() for p in conv.parameters()) < 0.28e6


def test_resnet18_half_lc_parameter_count():
    with torch.device('meta'):
        model = timm.create_model('lc_resnet18_half')
        convstem = timm.create_model('lc_resnet18_half_convstem')
    n = sum(p.numel() for p in model.parameters())
    assert 480e6 < n < 486e6  # ~483M: most of them in the stem and layer1 (112x112 and 56x56 locations)
    stem_lc = 112 * 112 * 3 * 32 * 49
    assert n - sum(p.numel() for p in convstem.parameters()) == stem_lc - 3 * 32 * 49


@pytest.mark.parametrize('name', RESNET20)
def test_resnet20_forward_backward_features(name):
    model = timm.create_model(name)
    assert isinstance(model, BioResNet)
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 10)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    expected_sleep = int(name.split('_ws')[1]) if '_ws' in name else None
    assert model.sleep_every == expected_sleep
    cfg = model.pretrained_cfg
    assert cfg['input_size'] == (3, 32, 32) and cfg['first_conv'] == 'conv1' and cfg['classifier'] == 'fc'
    assert cfg.get('fixed_input_size', False) == name.startswith('lc_')
    assert cfg['paper_ids'] == 'arXiv:2106.13031'

    feats = timm.create_model(name, features_only=True)
    outs = feats(x)
    assert [o.shape[1] for o in outs] == [16, 16, 32, 64]
    assert [o.shape[-1] for o in outs] == [32, 32, 16, 8]
    assert feats.feature_info.reduction() == [1, 1, 2, 4]

    headless = timm.create_model(name, num_classes=0)
    assert headless(x).shape == (2, 64)
    final, inter = headless.forward_intermediates(x)
    assert final.shape == (2, 64, 8, 8) and len(inter) == 4
    assert headless.forward_head(final, pre_logits=True).shape == (2, 64)


# the three 0.5x ResNet18 networks; the _wsN names build one of them (test_resnet18_half_names_build_their_network)
RESNET18_NETWORKS = ['conv_resnet18_half', 'lc_resnet18_half', 'lc_resnet18_half_convstem']


@pytest.mark.parametrize('name', RESNET18_NETWORKS)
def test_resnet18_half_forward_backward(name):
    model = timm.create_model(name)
    x = torch.randn(1, 3, 224, 224)
    y = model(x)
    assert y.shape == (1, 1000)
    y.sum().backward()
    assert model.conv1.weight.grad is not None
    assert isinstance(model.conv1, LocallyConnected2d) == ('convstem' not in name and name.startswith('lc_'))
    assert model.pretrained_cfg['input_size'] == (3, 224, 224)


@pytest.mark.parametrize('name', RESNET18)
def test_resnet18_half_names_build_their_network(name):
    """Every 0.5x ResNet18 name (on the meta device: no 483M weights to fill) is the network its name says,
    module for module (each layer's repr: types, sizes, strides, paddings) and weight for weight, with its
    sleep period; the forward and backward of each network are run above."""
    model = timm.create_model(name, device='meta')
    network, _, period = name.partition('_ws')
    assert network in RESNET18_NETWORKS
    base = timm.create_model(network, device='meta')
    assert str(model) == str(base)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    assert model.sleep_every == (int(period) if period else None)
    assert isinstance(model.conv1, LocallyConnected2d) == ('convstem' not in name and name.startswith('lc_'))
    assert model.pretrained_cfg['input_size'] == (3, 224, 224)


def test_resnet18_half_features_only():
    model = timm.create_model('conv_resnet18_half', features_only=True)
    outs = model(torch.randn(1, 3, 224, 224))
    assert [o.shape[1:] for o in outs] == [(32, 112, 112), (32, 56, 56), (64, 28, 28), (128, 14, 14), (256, 7, 7)]


def test_timm_interface_head_and_classifier():
    model = timm.create_model('lc_resnet20_ws10', num_classes=5, in_chans=1, drop_rate=0.1, global_pool='max')
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 5)
    assert model.get_classifier().out_features == 5
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    inter = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape[1] for t in inter] == [32, 64]


def test_img_size_for_tinyimagenet():
    model = timm.create_model('lc_resnet20', img_size=48, num_classes=200)
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 200)
    assert model.pretrained_cfg['input_size'] == (3, 48, 48)
    assert model.layer3[0].conv1.input_size == (24, 24)


def test_wrong_input_size_raises_value_error_with_expected_size():
    model = timm.create_model('lc_resnet20')
    with pytest.raises(ValueError, match='32x32'):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        model(torch.randn(1, 1, 32, 32))
    # a conv net is not size-bound
    assert timm.create_model('conv_resnet20')(torch.randn(1, 3, 40, 40)).shape == (1, 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match='layer_type'):
        BioResNet(layer_type='dense')
    with pytest.raises(ValueError, match='sleep_every'):
        BioResNet(layer_type='conv', sleep_every=10)
    with pytest.raises(ValueError, match='sleep_every'):
        BioResNet(layer_type='lc', sleep_every=0)
    with pytest.raises(ValueError, match='too small'):
        timm.create_model('lc_resnet20', img_size=2)
    with pytest.raises(ValueError, match='stem_stride'):
        timm.create_model('lc_resnet20', stem_stride=3)
    with pytest.raises(ValueError, match='stem_stride'):
        timm.create_model('conv_resnet18_half', stem_stride=2)


def test_stem_stride_two_halves_every_stage():
    model = timm.create_model('lc_resnet20', img_size=28, in_chans=1, layers=(1, 1, 1), stem_stride=2)
    assert model.conv1.output_size == (14, 14)
    assert [f['reduction'] for f in model.feature_info] == [2, 2, 4, 8]
    feats = model.forward_intermediates(torch.randn(2, 1, 28, 28), intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in feats] == [(14, 14), (14, 14), (7, 7), (4, 4)]  # stem, 3 stages


def test_pretrained_without_published_weights_fails_clearly():
    with pytest.raises(RuntimeError, match='No pretrained weights are published'):
        timm.create_model('lc_resnet20_ws10', pretrained=True)


def test_pretrained_from_local_file_loads_weights(tmp_path):
    from safetensors.torch import save_file
    source = timm.create_model('lc_resnet20_ws10')
    path = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), str(path))
    loaded = timm.create_model('lc_resnet20_ws10', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), source.eval()(x))


def test_share_weights_on_model_shares_every_lc_layer():
    model = timm.create_model('lc_resnet20_ws1')
    n_lc = sum(isinstance(m, LocallyConnected2d) for m in model.modules())
    assert n_lc == 1 + 18 + 2  # stem, 18 block convs, 2 projection shortcuts
    assert share_weights_(model) == n_lc
    assert share_weights_(timm.create_model('conv_resnet20')) == 0
    # after sharing, every layer's kernels repeat with the layer's kernel period
    for layer in model.modules():
        if isinstance(layer, LocallyConnected2d):
            kh, kw = layer.kernel_size
            w = layer.weight
            assert torch.equal(w[kh:], w[:-kh]) and torch.equal(w[:, kw:], w[:, :-kw])


def test_adapted_lc_stem_matches_source_only_for_channel_multiples():
    """What adapt_lc_in_chans' docstring states: a gray image repeated in_chans times gives the source
    model's output on the gray image repeated Cin times exactly when in_chans is 1 or a multiple of Cin."""
    from bioconv_timm.models import adapt_lc_in_chans
    torch.manual_seed(0)
    weight = torch.randn(4, 4, 5, 3, 3, 3)  # Cin = 3
    gray = torch.randn(4, 4, 3, 3)          # a patch per location, one channel
    def response(w):  # every input channel holds the gray patch: the channels' weights are summed
        return torch.einsum('hwoklc,hwkl->hwo', w, gray)
    source = response(weight)
    for in_chans in (1, 3, 6, 9):
        torch.testing.assert_close(response(adapt_lc_in_chans(weight, in_chans)), source, rtol=1e-5, atol=1e-5)
    for in_chans in (2, 4, 5):
        assert not torch.allclose(response(adapt_lc_in_chans(weight, in_chans)), source, atol=1e-3)


def test_model_table_builds_no_model(monkeypatch):
    """`bioconv list` reads the registry: no model class (ours or timm's) is instantiated for the table."""
    from bioconv_timm.models import model_table

    def refuse(self, *args, **kwargs):
        raise AssertionError(f'model_table built a {type(self).__name__}')

    for cls in (BioResNet, LocallyConnected2d, timm.models.ResNet, timm.models.ConvNeXt, timm.models.MobileNetV3):
        monkeypatch.setattr(cls, '__init__', refuse)
    monkeypatch.setattr(timm, 'create_model', refuse)
    rows = {row['name']: row for row in model_table()}
    assert set(rows) == set(MODEL_NAMES)
    assert round(rows['lc_convnext_atto_ws100']['params'] / 1e6, 2) == 45.29  # the README's number
    assert round(rows['lc_resnet20']['params'] / 1e6, 2) == 40.81


def test_model_table_agrees_with_the_built_models():
    """The registry's table (input size, parameter count, sleep period, layer types) describes the model each
    entrypoint builds: the specs and the entrypoints' model_args cannot drift apart."""
    from bioconv_timm.models import MODEL_SPECS, model_table
    for row in model_table():
        name, spec = row['name'], MODEL_SPECS[row['name']]
        model = timm.create_model(name, device='meta')
        assert row['params'] == sum(p.numel() for p in model.parameters()), name
        assert row['input_size'] == 'x'.join(map(str, model.pretrained_cfg['input_size'])), name
        assert row['sleep_every'] == model.sleep_every, name
        assert model.fixed_input_size == (spec.layer_type == 'lc'), name
        if spec.is_bioresnet:
            assert (model.layer_type, model.stem_type) == (spec.layer_type, spec.stem_type), name


def test_sleep_every_is_read_from_the_spec_without_building():
    from bioconv_timm.models import default_sleep_every, model_spec
    assert model_spec('lc_convnext_atto_ws10').sleep_every == 10
    assert model_spec('lc_resnet20.digits').sleep_every is None
    assert default_sleep_every('lc_resnet20_ws100') == 100
    assert default_sleep_every('lc_resnet20_ws100', dict(sleep_every=3)) == 3  # a model_kwargs override wins
    assert default_sleep_every('conv_resnet18') is None
