"""timm CNNs registered as conv / LC / LC-ws models (bioconv_timm.models.timm_cnns), used from the user's side:
create by name, train with sleep, compare, publish and reload, Brain-Score layers, `bioconv list`."""
import copy
import math

import pytest
import timm
import torch
import torch.nn as nn

import bioconv_timm  # noqa: F401  (registers the models)
from bioconv_timm import LocallyConnected2d, lc_layers, share_weights_, to_locally_connected
from bioconv_timm.convert import conv_input_sizes
from bioconv_timm.layers import conv_output_size
from bioconv_timm.models import TIMM_FAMILIES

FAMILIES = ('resnet18', 'convnext_atto', 'mobilenetv3_small_050')


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_lc_params(family: str, img_size: int) -> int:
    """timm's network with every conv's parameters replaced by one kernel (and bias) per output location."""
    base = timm.create_model(family, device='meta', **TIMM_FAMILIES[family].base_kwargs)
    sizes = conv_input_sizes(base, img_size, 3)
    total = _n_params(base)
    for name, conv in base.named_modules():
        if isinstance(conv, nn.Conv2d):
            h, w = sizes[name][-2:]
            locations = math.prod(conv_output_size(n, k, s, p, d) for n, k, s, p, d in
                                  zip((h, w), conv.kernel_size, conv.stride, conv.padding, conv.dilation))
            total += (locations - 1) * sum(p.numel() for p in conv.parameters())
    return total


@pytest.mark.parametrize('family', FAMILIES)
def test_each_family_registers_conv_lc_and_sleep_names_at_64px(family):
    conv = timm.create_model(f'conv_{family}', device='meta')
    base = timm.create_model(family, device='meta', **TIMM_FAMILIES[family].base_kwargs)
    assert _n_params(conv) == _n_params(base) and conv.pretrained_cfg['input_size'] == (3, 64, 64)
    expected = _expected_lc_params(family, 64)
    for suffix, sleep in (('', None), ('_ws1', 1), ('_ws10', 10), ('_ws100', 100)):
        model = timm.create_model(f'lc_{family}{suffix}', device='meta')
        assert _n_params(model) == expected and model.sleep_every == sleep
        assert not any(type(m) is nn.Conv2d for m in model.modules())  # every conv is LC
        assert model.pretrained_cfg['fixed_input_size'] and model.img_size == (64, 64)


def test_parameter_counts_at_64px():
    # what the docs and the closing note quote; from the formula above, not from the models' own counting
    counts = {f: _expected_lc_params(f, 64) for f in FAMILIES}
    assert round(counts['resnet18'] / 1e6, 1) == 148.6
    assert round(counts['convnext_atto'] / 1e6, 1) == 45.3
    assert round(counts['mobilenetv3_small_050'] / 1e6, 1) == 3.3


def test_every_location_draws_its_own_kernel_from_the_family_init():
    torch.manual_seed(0)
    resnet = timm.create_model('lc_resnet18', img_size=32)
    w = resnet.layer1[0].conv1.weight  # (8, 8, 64, 3, 3, 64), timm's kaiming_normal_(fan_out): std sqrt(2 / (64 * 9))
    assert not torch.equal(w[0, 0], w[0, 1])
    assert w.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.03)
    convnext = timm.create_model('lc_convnext_atto', img_size=32)
    dw = convnext.stages[0].blocks[0].conv_dw  # depthwise 7x7, ConvNeXt's trunc_normal_(std=0.02)
    assert dw.groups == dw.in_channels == 40 and dw.weight.std().item() == pytest.approx(0.02, rel=0.05)
    mnv3 = timm.create_model('lc_mobilenetv3_small_050', img_size=32)
    depthwise = [m for m in mnv3.modules() if isinstance(m, LocallyConnected2d) and m.groups > 1]
    assert depthwise
    for m in depthwise:  # timm's MobileNet init: normal(0, sqrt(2 / (k * k * Cout / groups)))
        k = m.kernel_size[0] * m.kernel_size[1]
        assert m.weight.std().item() == pytest.approx(math.sqrt(2 / k), rel=0.15)


@pytest.mark.parametrize('family', ['convnext_atto', 'mobilenetv3_small_050'])
def test_sleep_shares_every_lc_layer_and_is_a_fixed_point(family):
    torch.manual_seed(0)
    model = timm.create_model(f'lc_{family}_ws10', img_size=32)
    share_weights_(model)
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    share_weights_(model)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, after[n], rtol=0, atol=1e-6, msg=n)
    for name, layer in lc_layers(model):
        kh, kw = layer.kernel_size
        w = layer.weight
        if w.shape[0] > kh:  # locations k apart in a row belong to the same module: equal after sleep
            torch.testing.assert_close(w[0], w[kh], msg=name)


@pytest.mark.parametrize('family', ['convnext_atto', 'mobilenetv3_small_050'])
def test_conv_model_converted_with_copied_kernels_computes_the_same(family):
    """float64: the registered conv model and its LC conversion (init='copy') agree on the same input."""
    torch.manual_seed(0)
    conv = timm.create_model(f'conv_{family}', img_size=32, num_classes=7).double().eval()
    with torch.no_grad():
        for m in conv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    lc = to_locally_connected(copy.deepcopy(conv), 32, verbose=False)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(lc(x), conv(x))


def test_wrong_input_size_and_too_large_resolution_say_what_to_do():
    model = timm.create_model('lc_convnext_atto', img_size=32)
    with pytest.raises(ValueError, match=r'expects input \(B, 3, 32, 32\).*img_size'):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r'lc_convnext_atto cannot take 24x24 inputs .*img_size=.*--img-size 32'):
        timm.create_model('lc_convnext_atto', img_size=24, in_chans=1)  # digits' size: too small for 4 stages
    with pytest.raises(ValueError, match=r'1,8\d\d,\d{3},\d{3} parameters.*max_params'):
        timm.create_model('lc_resnet18', img_size=224, device='meta')
    big = timm.create_model('lc_resnet18', img_size=224, device='meta', max_params=2_000_000_000)
    assert _n_params(big) == _expected_lc_params('resnet18', 224)


def test_pretrained_unpublished_refuses_and_a_weights_file_loads(tmp_path):
    from safetensors.torch import save_file
    with pytest.raises(RuntimeError, match='No pretrained weights are published for lc_mobilenetv3_small_050.in1k'):
        timm.create_model('lc_mobilenetv3_small_050', pretrained=True)
    torch.manual_seed(0)
    trained = timm.create_model('lc_mobilenetv3_small_050_ws10', img_size=32, num_classes=10).eval()
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    torch.manual_seed(1)
    # timm: a cfg's num_classes other than the model's drops the classifier, so the overlay states the file's
    loaded = timm.create_model('lc_mobilenetv3_small_050_ws10', img_size=32, num_classes=10, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))
    path.write_bytes(path.read_bytes()[:1000])  # truncated: a clear error, no random weights
    with pytest.raises(RuntimeError, match='truncated or corrupt'):
        timm.create_model('lc_mobilenetv3_small_050_ws10', img_size=32, num_classes=10, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path), num_classes=10))


def test_train_with_sleep_then_publish_and_reload(tmp_path):
    import csv

    from safetensors.torch import load_file

    from bioconv_timm.hub import publish
    from bioconv_timm.train import TrainConfig, train
    out = tmp_path / 'run'
    result = train(TrainConfig(model='lc_mobilenetv3_small_050_ws1', dataset='digits', epochs=1, train_subset=32,
                               eval_subset=32, batch_size=16, progress=False, output_dir=str(out)))
    assert 0 <= result.final['top1'] <= 100 and result.sleeps == 2
    with open(out / 'sleeps.csv') as f:
        assert len(list(csv.DictReader(f))) == 2  # 32 images / batch 16 = 2 steps, a sleep after each
    folder = tmp_path / 'pub'
    publish(out, 'test-org/lc_mobilenetv3_small_050_ws1-digits', dry_run_dir=folder)
    card = (folder / 'README.md').read_text()
    assert "timm's MobileNetV3-Small 0.5x" in card and 'at 24x24' in card and 'every 1 optimizer step' in card
    model = timm.create_model('lc_mobilenetv3_small_050_ws1', num_classes=10, in_chans=1, img_size=24)
    model.load_state_dict(load_file(folder / 'model.safetensors'))


def test_compare_runs_a_timm_family(tmp_path):
    from bioconv_timm.train.compare import DEFAULT_CELLS, CompareConfig, compare
    cells = tuple(c for c in DEFAULT_CELLS if c.label in ('conv', 'LC', 'LC - ws(1)'))
    rows = compare(CompareConfig(dataset='digits', arch='convnext_atto', img_size=32, epochs=1, train_subset=32,
                                 eval_subset=32, batch_size=16, cells=cells, output_dir=str(tmp_path), progress=False))
    assert [r['label'] for r in rows] == ['conv', 'LC', 'LC - ws(1)']
    assert all(r['top1'] is not None for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ['conv-seed0', 'lc-seed0', 'lc_ws1-seed0']


def test_brainscore_layers_and_plugin_files():
    from bioconv_timm.brainscore import candidate_layers
    from bioconv_timm.brainscore.plugin import plugin_files
    assert candidate_layers('lc_convnext_atto_ws10') == ['stages.0', 'stages.1', 'stages.2', 'stages.3',
                                                        'head.global_pool']
    assert candidate_layers('lc_resnet18') == ['act1', 'layer1', 'layer2', 'layer3', 'layer4', 'global_pool']
    files = plugin_files('lc_mobilenetv3_small_050_ws10')
    model_py = files['model.py']
    assert "BEHAVIORAL_READOUT_LAYER = 'global_pool'" in model_py and "'blocks.5'," in model_py
    assert 'bioconv-timm/lc_mobilenetv3_small_050_ws10.in1k' in model_py


def test_bioconv_list_shows_the_timm_families(capsys):
    from bioconv_timm.cli import main
    assert main(['list', '--filter', '*convnext_atto*']) == 0
    out = capsys.readouterr().out
    assert 'lc_convnext_atto_ws100' in out and '45.29M' in out and 'timm convnext_atto' in out
    assert 'resnet20' not in out


def test_bioconv_train_says_which_img_size_a_family_needs(tmp_path, capsys):
    from bioconv_timm.cli import main
    code = main(['train', '--model', 'lc_convnext_atto', '--dataset', 'digits', '--epochs', '1',
                 '--output-dir', str(tmp_path / 'run'), '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2 and 'Traceback' not in err
    assert 'lc_convnext_atto cannot take 24x24 inputs' in err and '--img-size 32' in err


@pytest.mark.parametrize('name, out_indices', [('lc_convnext_atto_ws10', None), ('lc_mobilenetv3_small_050', (1, 3)),
                                               ('conv_resnet18', (0, 4))])
def test_features_only_loads_pretrained_weights_from_a_file(tmp_path, name, out_indices):
    """timm's builder serves the families: pretrained=True with features_only=True loads the file into the network
    before timm's feature wrapper takes its stages (the classifier of the file is dropped)."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    trained = timm.create_model(name, img_size=32, num_classes=10).eval()
    with torch.no_grad():  # trained-looking statistics, so that a wrapper left at its init would differ
        for m in trained.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    torch.manual_seed(1)
    extra = {} if out_indices is None else dict(out_indices=out_indices)
    features = timm.create_model(name, img_size=32, pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=dict(file=str(path), num_classes=10), **extra).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = trained.forward_intermediates(x, indices=out_indices, intermediates_only=True)
        outs = features(x)
    assert len(outs) == len(expected) == len(features.feature_info.channels())
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert features.pretrained_cfg['input_size'] == (3, 32, 32)
