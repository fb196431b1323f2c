"""Constructor arguments from the user's side (issue 23: mechanism 7 and defects M2, M3, L8, L9; issue 26 part 6):
the size limit checked before memory is taken (and never raised by a Hub config.json), the LC stem adapter refusing
what timm's conv adapter refuses and saying what it did, one-line messages that name a bad argument,
``feature_cfg={'feature_cls': 'fx'}``, and TorchScript ending in our message."""
import json
import logging

import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file

import bioconv_timm
from alloc_guard import BigAllocation, no_big_allocation
from bioconv_timm import LocallyConnected2d, MODEL_NAMES, to_locally_connected
from bioconv_timm.checks import DEFAULT_MAX_PARAMS, ModelArgError, ModelSizeError, allow_params
from bioconv_timm.errors import BioconvError
from bioconv_timm.models import MODEL_SPECS, TORCHSCRIPT_ERROR, bioresnet_num_params

# one registered name per family: the LC model (the large one)
FAMILY_NAMES = {spec.arch: name for name, spec in MODEL_SPECS.items()
                if name == f'lc_{spec.arch}'}
SMALL_IMG = {'resnet18_half': 64}  # families small enough to build on the CPU at this size in a test


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert '\n' not in message, message
    return message


# --- M3 / mechanism 7: the size is checked before memory is taken ------------------------------------------------

def test_lc_resnet20_at_4096_is_refused_before_allocating():
    """M3: today this builds 668.7G parameters on meta and tries to allocate them on the CPU."""
    with no_big_allocation(), pytest.raises(ModelSizeError) as info:
        timm.create_model('lc_resnet20', img_size=4096)
    message = _one_line(info)
    assert 'lc_resnet20' in message and 'img_size=(4096, 4096)' in message
    assert '668,672,723,114 parameters' in message and f'max_params={DEFAULT_MAX_PARAMS:,}' in message
    assert 'max_params=668672723114' in message and 'allow_params(668672723114)' in message
    with pytest.raises(ModelSizeError, match='668,672,723,114 parameters'):  # a meta build is checked too
        timm.create_model('lc_resnet20', img_size=4096, device='meta')
    assert isinstance(info.value, ValueError) and isinstance(info.value, BioconvError)


@pytest.mark.parametrize('arch', sorted(FAMILY_NAMES))
def test_every_family_refuses_an_oversized_build_before_allocating(arch):
    name = FAMILY_NAMES[arch]
    with no_big_allocation(), pytest.raises(ModelSizeError) as info:
        timm.create_model(name, img_size=4096)
    message = _one_line(info)
    assert message.startswith(f'{name} with img_size=(4096, 4096)') and 'max_params=1,000,000,000' in message
    img = SMALL_IMG.get(arch, 32)
    with no_big_allocation(), pytest.raises(ModelSizeError, match=f'{name} with .*in_chans=60000'):
        timm.create_model(name, in_chans=60_000, img_size=img)  # the stem alone: billions of parameters


def test_every_registered_model_fits_the_default_limit():
    sizes = {name: _n_params(timm.create_model(name, device='meta')) for name in MODEL_NAMES}
    assert max(sizes.values()) == sizes['lc_resnet18_half'] == 483_155_624  # 483.16M
    assert 2 * sizes['lc_resnet18_half'] < DEFAULT_MAX_PARAMS


@pytest.mark.parametrize('kwargs', [
    {}, dict(img_size=48, in_chans=1, num_classes=0), dict(img_size=(20, 28), global_pool='catavgmax'),
    dict(stem_stride=2, num_classes=7, layers=(1, 2, 1), channels=(8, 12, 16)), dict(layer_type='conv', stem_type='lc'),
])
@pytest.mark.parametrize('name', ['conv_resnet20', 'lc_resnet20', 'lc_resnet18_half', 'lc_resnet18_half_convstem'])
def test_the_paper_resnets_estimate_is_exact(name, kwargs):
    if 'half' in name and 'stem_stride' in kwargs:
        kwargs = {k: v for k, v in kwargs.items() if k != 'stem_stride'}
    model = timm.create_model(name, device='meta', **kwargs)
    spec = MODEL_SPECS[name]
    args = dict(spec.model_args(), num_classes=10 if 'resnet20' in name else 1000, in_chans=3, global_pool='avg')
    args.update(kwargs)
    img = args['img_size']
    args['img_size'] = (img, img) if isinstance(img, int) else tuple(img)
    args.pop('sleep_every')
    args.setdefault('stem_stride', 1)
    assert bioresnet_num_params(**args) == _n_params(model)


def test_the_limit_is_raised_deliberately_in_python():
    with pytest.raises(ModelSizeError, match=r'2,6\d\d,\d{3},\d{3} parameters'):
        timm.create_model('lc_resnet20', img_size=256, device='meta')
    big = timm.create_model('lc_resnet20', img_size=256, device='meta', max_params=3e9)  # one call
    with allow_params(3_000_000_000):  # every build in the block
        assert _n_params(timm.create_model('lc_resnet20', img_size=256, device='meta')) == _n_params(big)
        assert _n_params(timm.create_model('lc_resnet18', img_size=224, device='meta')) > 1.8e9
    with allow_params(1_000_000), pytest.raises(ModelSizeError, match='max_params=1,000,000'):  # or lowered
        timm.create_model('conv_resnet18', device='meta')
    with pytest.raises(ModelArgError, match=r"max_params='lots' is invalid: it takes a positive int"):
        timm.create_model('lc_resnet20', max_params='lots')


def _local_dir(tmp_path, name: str, model_args: dict) -> str:
    """A folder as `bioconv publish --dry-run` / timm's save_for_hf write it (config.json only: nothing is loaded)."""
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    cfg = {k: v for k, v in cfg.items() if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}
    (tmp_path / 'config.json').write_text(json.dumps(dict(
        architecture=name, num_classes=cfg['num_classes'], pretrained_cfg=cfg, model_args=model_args)))
    return f'local-dir:{tmp_path}'


def test_a_hub_config_cannot_make_create_model_allocate(tmp_path):
    """M3: a config.json's model_args {"img_size": 2048} tried 7.2 GB for one layer on the CPU."""
    source = _local_dir(tmp_path, 'lc_resnet20', {'img_size': 2048})
    with no_big_allocation(), pytest.raises(ModelSizeError) as info:
        timm.create_model(source)
    assert 'img_size=(2048, 2048)' in _one_line(info) and 'max_params=1,000,000,000' in str(info.value)


@pytest.mark.parametrize('name, img_size', [('lc_resnet20', 256), ('lc_resnet18', 224)])
def test_max_params_in_a_hub_config_is_never_obeyed(tmp_path, caplog, name, img_size):
    """M3: `max_params` in a Hub model_args lifted the 200M cap of the timm families."""
    source = _local_dir(tmp_path, name, {'img_size': img_size, 'max_params': 10 ** 13})
    with caplog.at_level(logging.WARNING), pytest.raises(ModelSizeError, match='max_params=1,000,000,000'):
        timm.create_model(source, device='meta')
    assert 'ignoring max_params=10000000000000' in caplog.text and 'config.json' in caplog.text
    # the user's own limit, in Python, still builds it
    with allow_params(3_000_000_000):
        assert _n_params(timm.create_model(source, device='meta')) > DEFAULT_MAX_PARAMS
    assert _n_params(timm.create_model(source, device='meta', max_params=3_000_000_000)) > DEFAULT_MAX_PARAMS


def test_to_locally_connected_and_the_layer_check_their_size_too():
    with no_big_allocation(), pytest.raises(ModelSizeError, match=r'LocallyConnected2d with input_size=\(4096, 4096\)'):
        LocallyConnected2d(3, 64, 3, 4096)
    model = timm.create_model('resnet18', device='meta')
    with pytest.raises(ModelSizeError, match=r'to_locally_connected with the converted model would have 1,8'):
        to_locally_connected(model, 224, verbose=False)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 20  # nothing converted


# --- M2 / L8: the LC stem adapter refuses what the conv adapter refuses, and says what it did ----------------

def _weights(tmp_path, name: str, **kwargs) -> str:
    path = tmp_path / f'{name}-{kwargs.get("in_chans", 3)}.safetensors'
    save_file(timm.create_model(name, **kwargs).state_dict(), str(path))
    return str(path)


@pytest.mark.parametrize('name, img_size', [('conv_resnet20', 32), ('lc_resnet20', 32),
                                            ('lc_mobilenetv3_small_050', 32)])
@pytest.mark.parametrize('chans', [2, 7])
def test_a_stem_weight_with_other_input_channels_is_refused(tmp_path, name, img_size, chans):
    """M2: an LC stem weight with 2 or 7 channels loaded into in_chans=3 with no warning; conv stems are refused."""
    file = _weights(tmp_path, name, in_chans=chans, img_size=img_size)
    with pytest.raises(RuntimeError) as info:
        timm.create_model(name, pretrained=True, img_size=img_size, pretrained_cfg_overlay=dict(file=file))
    assert 'weight shape' in str(info.value) and 'is inconsistent with input_size[0]=3' in str(info.value)
    if name.startswith('lc_'):
        assert f'trained with {chans} channel(s)' in _one_line(info) and isinstance(info.value, BioconvError)
    # declared as what it is, the weight is adapted to the model's 3 channels
    model = timm.create_model(name, pretrained=True, img_size=img_size, in_chans=3,
                              pretrained_cfg_overlay=dict(file=file, input_size=(chans, img_size, img_size)))
    assert model.eval()(torch.randn(1, 3, img_size, img_size)).shape[-1] == (1000 if 'mobilenet' in name else 10)


@pytest.mark.parametrize('name, stem', [('lc_resnet20', 'conv1'), ('lc_mobilenetv3_small_050', 'conv_stem')])
def test_adapting_an_lc_stem_is_logged_as_what_happened(tmp_path, caplog, name, stem):
    """L8: timm logged 'Pretrained conv1 weights already match the model ... Loading unchanged' after we adapted them."""
    file = _weights(tmp_path, name, img_size=32)
    with caplog.at_level(logging.INFO):
        model = timm.create_model(name, pretrained=True, in_chans=1, img_size=32, pretrained_cfg_overlay=dict(file=file))
    assert model.get_submodule(stem).weight.shape[-1] == 1
    assert f'Adapted the pretrained LC stem {stem} from 3 to 1 input channel(s) (summed over channels)' in caplog.text
    assert 'already match' not in caplog.text and 'Loading unchanged' not in caplog.text


# --- L9: messages that say what is wrong ----------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, expected', [
    (dict(padding='same'), "LocallyConnected2d: padding='same' is invalid: it takes an int from 0"),
    (dict(stride=(1, 0)), 'LocallyConnected2d: stride=(1, 0) is invalid: it takes a positive int'),
    (dict(input_size='32'), "LocallyConnected2d: input_size='32' is invalid"),
    (dict(bias='yes'), "LocallyConnected2d: bias='yes' is invalid: it takes True or False"),
    (dict(in_channels=2.5), 'LocallyConnected2d: in_channels=2.5 is invalid: it takes a positive int'),
    (dict(dtype=torch.int64), 'LocallyConnected2d: dtype=torch.int64 is invalid: it takes a floating-point'),
])
def test_layer_arguments_are_named_with_their_value(kwargs, expected):
    args = dict(in_channels=3, out_channels=4, kernel_size=3, input_size=8)
    with pytest.raises(ModelArgError) as info:
        LocallyConnected2d(**{**args, **kwargs})
    assert _one_line(info).startswith(expected)
    if 'padding' in kwargs:
        assert "for 'same' at stride 1 pass padding=kernel_size // 2" in str(info.value)


@pytest.mark.parametrize('arch', sorted(FAMILY_NAMES))
@pytest.mark.parametrize('kwargs, expected', [
    (dict(img_size='32'), "img_size='32' is invalid: it takes a positive int"),
    (dict(num_classes=-3), 'num_classes=-3 is invalid: it takes an int from 0 to 10,000,000'),
    (dict(in_chans=0), 'in_chans=0 is invalid: it takes a positive int'),
    (dict(drop_rate=1.5), 'drop_rate=1.5 is invalid: it takes a finite number from 0.0 to 1.0'),
    (dict(features_only=True, out_indices=(9,)), 'out_indices=(9,) is invalid: it takes a list or tuple'),
    (dict(out_indices=(0,)), 'out_indices=(0,) is invalid: it takes a value only with features_only=True'),
    (dict(sleep_every=0), 'sleep_every=0 is invalid: it takes a positive int'),
    (dict(global_pool='mean'), "global_pool='mean' is invalid: it takes one of 'avg'"),
    (dict(device='gpu0'), "device='gpu0' is invalid"),
])
def test_create_model_names_the_bad_argument(arch, kwargs, expected):
    """L9: img_size="32" gave `can only concatenate str (not "int") to str`, out_indices=(9,) a bare IndexError,
    num_classes=-3 was accepted."""
    name = FAMILY_NAMES[arch]
    with pytest.raises(ModelArgError) as info:
        timm.create_model(name, **{'device': 'meta', **kwargs})
    assert _one_line(info).startswith(f'{name}: {expected}'), str(info.value)


def test_unknown_arguments_are_named():
    with pytest.raises(ModelArgError, match=r'lc_resnet20: unknown argument widht=64; it takes .*channels'):
        timm.create_model('lc_resnet20', widht=64)
    with pytest.raises(ModelArgError, match=r"lc_resnet18: unknown argument widht=64: timm's resnet18 does not"):
        timm.create_model('lc_resnet18', widht=64, device='meta')


def test_to_locally_connected_names_the_bad_argument():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    for kwargs, expected in [
        (dict(img_size=0), 'to_locally_connected: img_size=0 is invalid'),
        (dict(img_size=8, in_chans='3'), "to_locally_connected: in_chans='3' is invalid"),
        (dict(img_size=8, keep_conv=3), 'to_locally_connected: keep_conv=3 is invalid'),
        (dict(img_size=8, sleep_every=-1), 'to_locally_connected: sleep_every=-1 is invalid'),
        (dict(img_size=8, init='kaiming'), "to_locally_connected: init='kaiming' is invalid"),
        (dict(img_size=8, max_params=0), 'to_locally_connected: max_params=0 is invalid'),
    ]:
        with pytest.raises(ModelArgError) as info:
            to_locally_connected(model, **kwargs)
        assert _one_line(info).startswith(expected), info.value
    assert isinstance(model[0], nn.Conv2d)


# --- issue 26 part 6: feature_cfg and TorchScript -------------------------------------------------------------------

@pytest.mark.parametrize('arch', sorted(FAMILY_NAMES))
def test_feature_cfg_with_the_fx_feature_class(arch):
    """`got multiple values for keyword argument 'feature_cfg'` on every bioconv model; timm's resnet18 takes it."""
    name = FAMILY_NAMES[arch]
    img = SMALL_IMG.get(arch, 32)
    kwargs = dict(features_only=True, img_size=img)
    fx = timm.create_model(name, feature_cfg={'feature_cls': 'fx', 'out_indices': (1, 2)}, **kwargs)
    assert type(fx).__name__ == 'FeatureGraphNet'
    hooks = timm.create_model(name, out_indices=(1, 2), **kwargs)  # the default feature class
    x = torch.randn(1, 3, img, img)
    with torch.no_grad():
        assert [t.shape for t in fx.eval()(x)] == [t.shape for t in hooks.eval()(x)]
    assert fx.feature_info.channels() == hooks.feature_info.channels()


@pytest.mark.parametrize('name', sorted(n for n in MODEL_NAMES if n in FAMILY_NAMES.values()))
@pytest.mark.parametrize('features_only', [False, True])
def test_scripting_any_lc_model_ends_in_our_message(name, features_only):
    """`Can't redefine method: __num_locations_getter` (or another torch.jit error) for most LC models."""
    img = 64 if 'half' in name else 32
    model = timm.create_model(name, img_size=img, features_only=features_only)
    for _ in range(2):  # a second try failed differently once the first had half-compiled the class
        with pytest.raises(RuntimeError) as info:
            torch.jit.script(model)
        assert str(info.value) == TORCHSCRIPT_ERROR
    with pytest.raises(RuntimeError, match='do not support TorchScript'):
        torch.jit.script(LocallyConnected2d(2, 2, 3, 5))


def test_big_allocation_tripwire_works():
    """The guard the tests above rely on does trip (so a missing size check fails them instead of allocating)."""
    with no_big_allocation(), pytest.raises(BigAllocation):
        torch.empty(2_000_000)
    with no_big_allocation():
        torch.empty(2_000_000, device='meta')


@pytest.mark.parametrize('name', ['conv_resnet20', 'conv_resnet18_half', 'lc_resnet20', 'lc_resnet18_half_convstem',
                                  'lc_convnext_atto'])
def test_fx_then_torchscript(name):
    """timm's FX-then-script path: a traced conv ResNet scripts (as timm's own conv models do) and computes what the
    traced one does; one holding an LC layer ends in our message (before: `Unknown type name '_torch_Tensor_'`)."""
    img = 64 if 'half' in name else 32
    traced = timm.create_model(name, features_only=True, feature_cls='fx', img_size=img).eval()
    if name.startswith('conv_'):
        scripted = torch.jit.script(traced)
        x = torch.randn(2, 3, img, img)
        with torch.no_grad():
            for a, b in zip(scripted(x), traced(x)):
                torch.testing.assert_close(a, b)
        with pytest.raises(Exception, match=r'expected input \(B, 3, H, W\), got \(2, 4'):  # the check is still there
            scripted(torch.randn(2, 4, img, img))
    else:
        with pytest.raises(RuntimeError) as info:
            torch.jit.script(traced)
        assert str(info.value) == TORCHSCRIPT_ERROR
