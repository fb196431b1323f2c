"""to_locally_connected: any model's Conv2d layers become LC layers that compute the same function."""
import contextlib
import io
import math
import re

import pytest
import timm
import torch
import torch.nn as nn
from timm.data import resolve_data_config
from timm.layers import Conv2dSame

from bioconv_timm import LocallyConnected2d, lc_layers, share_weights_, to_locally_connected, weight_snr
from bioconv_timm.convert import conv_input_sizes
from bioconv_timm.sleep import SleepHook


def _convs(model: nn.Module):
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.fixture(scope='module')
def resnet18_pair():
    """(timm resnet18 conv model, its LC conversion at 32x32, printed summary), float64, eval mode."""
    torch.manual_seed(0)
    conv = timm.create_model('resnet18', num_classes=10).double().eval()
    with torch.no_grad():  # non-trivial BN statistics and scales (timm zero-inits each block's last BN scale)
        for m in conv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    lc = timm.create_model('resnet18', num_classes=10).double().eval()
    lc.load_state_dict(conv.state_dict())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert to_locally_connected(lc, 32) is lc
    return conv, lc, out.getvalue()


def test_resnet18_converted_computes_the_same_and_counts_its_parameters(resnet18_pair):
    conv, lc, printed = resnet18_pair
    assert not _convs(lc) and len(dict(lc_layers(lc))) == len(_convs(conv)) == 20
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(lc(x), conv(x))
    before, after = (sum(p.numel() for p in m.parameters()) for m in (conv, lc))
    assert printed.splitlines()[0] == (f'to_locally_connected: {before / 1e6:,.2f}M -> {after / 1e6:,.2f}M '
                                       'parameters (20 convs -> LC, 0 kept convs)')
    assert lc.layer1[0].conv1.weight.shape == (8, 8, 64, 3, 3, 64)  # 32 -> stem /2 -> maxpool /2 -> 8x8
    assert lc.img_size == (32, 32) and lc.sleep_every is None


def test_gradients_flow_through_every_lc_layer(resnet18_pair):
    _, lc, _ = resnet18_pair
    lc.zero_grad(set_to_none=True)
    lc(torch.randn(2, 3, 32, 32, dtype=torch.float64)).square().sum().backward()
    for name, layer in lc_layers(lc):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, name
    lc.zero_grad(set_to_none=True)


def test_sharing_a_fresh_conversion_is_a_fixed_point(resnet18_pair):
    _, lc, _ = resnet18_pair
    layers = dict(lc_layers(lc))
    for name, layer in layers.items():  # every location holds the same kernel, bit for bit
        assert torch.equal(layer.weight, layer.weight[:1, :1].expand_as(layer.weight)), name
    before = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    assert share_weights_(lc) == 20
    for name, layer in layers.items():
        torch.testing.assert_close(layer.weight.detach(), before[name], rtol=1e-15, atol=0, msg=name)


def test_fx_symbolic_trace_of_a_converted_model(resnet18_pair):
    _, lc, _ = resnet18_pair
    graph = torch.fx.symbolic_trace(lc)
    assert any(node.op == 'call_function' and 'locally_connected2d' in str(node.target) for node in graph.graph.nodes)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), lc(x))


def test_meta_pass_leaves_the_model_bit_identical():
    model = timm.create_model('resnet18', num_classes=10).train()  # train mode: a real forward would move BN stats
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shapes = conv_input_sizes(model, 32)
    assert shapes['conv1'] == (1, 3, 32, 32) and shapes['layer1.0.conv1'] == (1, 64, 8, 8)
    assert shapes['layer4.0.downsample.0'] == (1, 256, 2, 2)
    assert model.training and all(not m._forward_pre_hooks for m in model.modules())
    after = model.state_dict()
    assert all(after[k].device.type == 'cpu' and torch.equal(after[k], v) for k, v in state.items())

    conv_params = {f'{name}.{key}' for name, conv in _convs(model).items() for key, _ in conv.named_parameters()}
    params = {name: p for name, p in model.named_parameters() if name not in conv_params}
    to_locally_connected(model, 32, verbose=False)
    converted = model.state_dict()
    for key in (k for k in state if 'bn' in k or 'downsample.1' in k or k.startswith('fc')):
        assert torch.equal(converted[key], state[key]), key  # running stats and num_batches_tracked included
    assert int(converted['bn1.num_batches_tracked']) == 0
    for name, param in model.named_parameters():
        if name not in conv_params:
            assert param is params[name], name  # not replaced, not copied


def test_keep_conv_keeps_the_stem_convolutional(capsys):
    model = timm.create_model('resnet18', num_classes=10)
    to_locally_connected(model, 32, keep_conv=['conv1'])
    assert type(model.conv1) is nn.Conv2d and isinstance(model.layer1[0].conv1, LocallyConnected2d)
    assert '(19 convs -> LC, 1 kept conv)' in capsys.readouterr().out

    model = timm.create_model('resnet18', num_classes=10)
    to_locally_connected(model, 32, keep_conv=('layer4.*', 'conv1'), verbose=False)
    assert set(_convs(model)) == {'conv1', 'layer4.0.conv1', 'layer4.0.conv2', 'layer4.0.downsample.0',
                                  'layer4.1.conv1', 'layer4.1.conv2'}
    with pytest.raises(ValueError, match=r"\['stem\.\*'\] match no nn.Conv2d"):
        to_locally_connected(timm.create_model('resnet18'), 32, keep_conv=['stem.*'])


def test_max_params_refuses_before_converting(resnet18_pair):
    _, lc, _ = resnet18_pair
    expected = sum(p.numel() for p in lc.parameters())
    model = timm.create_model('resnet18', num_classes=10)
    with pytest.raises(ValueError) as info:
        to_locally_connected(model, 32, max_params=1_000_000)
    message = str(info.value)
    assert f'{expected:,} parameters' in message and 'max_params=1,000,000' in message
    assert 'keep_conv' in message and 'img_size' in message and '\n' not in message
    assert len(_convs(model)) == 20 and not hasattr(model, 'sleep_every')  # nothing changed


def _tiny(*extra: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), *extra)


@pytest.mark.parametrize('conv', [
    nn.Conv2d(4, 4, 3, padding=1, groups=4),                              # depthwise
    nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2, bias=False),      # grouped and dilated
    nn.Conv2d(4, 6, (3, 2), stride=(2, 1), dilation=(1, 2)),              # dilated, rectangular
], ids=['depthwise', 'grouped-dilated', 'dilated'])
def test_grouped_and_dilated_convs_are_converted(conv, capsys):
    model = _tiny(conv).double().eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
    with pytest.raises(ValueError) as info:  # the parameter estimate made from the shapes before converting
        to_locally_connected(model, 8, max_params=1)
    to_locally_connected(model, 8)
    layer = model[2]
    assert isinstance(layer, LocallyConnected2d)
    assert (layer.groups, layer.dilation, layer.stride) == (conv.groups, conv.dilation, conv.stride)
    assert layer.weight.shape[-1] == conv.in_channels // conv.groups
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert f'would have {sum(p.numel() for p in model.parameters()):,} parameters' in str(info.value)
    assert '(2 convs -> LC, 0 kept convs)' in capsys.readouterr().out


def test_timm_mobilenetv3_with_depthwise_convs_converts_and_computes_the_same(capsys):
    torch.manual_seed(1)
    conv = timm.create_model('mobilenetv3_small_050', num_classes=10).double().eval()
    lc = timm.create_model('mobilenetv3_small_050', num_classes=10).double().eval()
    lc.load_state_dict(conv.state_dict())
    to_locally_connected(lc, 32)
    assert not _convs(lc)
    depthwise = [layer for _, layer in lc_layers(lc) if layer.groups == layer.in_channels > 1]
    assert len(depthwise) == 11
    after = sum(p.numel() for p in lc.parameters())
    assert f'-> {after / 1e6:,.2f}M parameters (53 convs -> LC, 0 kept convs)' in capsys.readouterr().out
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(lc(x), conv(x))


@pytest.mark.parametrize('conv, reason', [
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode='reflect'), "padding_mode='reflect'"),
    (nn.Conv2d(4, 4, 3, padding='same'), "padding='same'"),
    (Conv2dSame(4, 4, 3, stride=2), 'padding depends on the input size at run time'),
])
def test_unsupported_convs_are_refused_or_kept(conv, reason, capsys):
    model = _tiny(conv).double().eval()
    with pytest.raises(ValueError) as info:
        to_locally_connected(model, 8)
    message = str(info.value)
    assert "'2'" in message and reason in message and '\n' not in message
    assert type(model[0]) is nn.Conv2d  # refused before replacing anything

    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
    to_locally_connected(model, 8, skip_unsupported=True)
    assert isinstance(model[0], LocallyConnected2d) and model[2] is conv
    printed = capsys.readouterr().out
    assert '(1 conv -> LC, 1 kept conv)' in printed
    assert 'not convertible yet: 2 (' in printed and reason in printed
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)

    kept = to_locally_connected(_tiny(conv).double(), 8, keep_conv=['2'], verbose=False)  # keep_conv also lets it pass
    assert kept[2] is conv


def test_a_conv_called_at_two_sizes_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x)[..., ::2, ::2])

    with pytest.raises(ValueError, match="'conv'.*one fixed"):
        to_locally_connected(Twice(), 8)


def test_pretrained_cfg_is_a_copy_with_a_fixed_input_size():
    shared = timm.create_model('resnet18').pretrained_cfg
    model = to_locally_connected(timm.create_model('resnet18', num_classes=10), (32, 24), verbose=False)
    assert model.pretrained_cfg['input_size'] == (3, 32, 24) and model.pretrained_cfg['fixed_input_size'] is True
    assert resolve_data_config(model=model)['input_size'] == (3, 32, 24)
    assert timm.create_model('resnet18').pretrained_cfg == shared and not shared.get('fixed_input_size')
    with pytest.raises(ValueError, match='fixed input size'):
        model(torch.randn(1, 3, 32, 32))


def test_sleep_every_and_the_sleep_hook_share_a_converted_model():
    def step(model, hook: bool):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        if hook:
            SleepHook(model, model.sleep_every).attach(optimizer)
        model(torch.randn(4, 2, 12, 12)).square().sum().backward()
        optimizer.step()
        return [weight_snr(layer) for _, layer in lc_layers(model)]

    def build():
        torch.manual_seed(0)
        return to_locally_connected(_tiny(nn.Conv2d(4, 3, 3, stride=2, padding=1)), 12, sleep_every=1,
                                    verbose=False)

    model = build()
    assert model.sleep_every == 1 and len(dict(lc_layers(model))) == 2
    assert all(math.isfinite(snr) for snr in step(build(), hook=False))  # a step alone breaks the sharing
    assert step(model, hook=True) == [math.inf, math.inf]  # slept after step 1: every module shared again
    with pytest.raises(ValueError, match='sleep_every'):
        to_locally_connected(_tiny(), 8, sleep_every=0)
    with pytest.raises(ValueError, match=re.escape('no conv is converted')):
        to_locally_connected(_tiny(), 8, keep_conv=['0'], sleep_every=10)
