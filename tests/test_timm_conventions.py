"""timm's model conventions, checked for every bioconv model from the user's side.

What timm's own model tests assert of each model (forward, backward, default cfgs, features_only with each
feature class, forward_intermediates, FX forward/backward), plus creation on the meta device / in other
dtypes and the pretrained listing. Models run at small input sizes (``img_size=8`` for the ResNet20
family, 32 for the ResNet18-half family); the default sizes are checked where that is cheap, and on the
meta device for the 224 px LC ResNet18-half. The ``_wsN`` (sleep) variants are their base network plus a
sleep period: the tests check that once, on the meta device, and run the forward-based checks per
architecture.
"""
import math

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import bioconv_timm
from bioconv_timm import LocallyConnected2d, MODEL_NAMES
from bioconv_timm import models as bio_models

CONV_MODELS = [n for n in MODEL_NAMES if n.startswith('conv_')]
BIORESNET_CONV_MODELS = [n for n in CONV_MODELS if bio_models.model_spec(n).is_bioresnet]
SLEEP_MODELS = [n for n in MODEL_NAMES if '_ws' in n]
ARCHS = [n for n in MODEL_NAMES if n not in SLEEP_MODELS]  # the 5 distinct networks
# every registered name.tag of this package (published or not)
TAGS = [t for name in MODEL_NAMES for t in timm.list_models(name + '.*', include_tags=True)]
FEATURE_CLASSES = ('list', 'hook', 'getter', 'fx')  # 'dict' is 'list' returning a dict


def _small(name: str) -> dict:
    """Smallest input size worth testing: every stage keeps at least 1x1 locations."""
    return dict(img_size=8 if 'resnet20' in name else 32)


def _create(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)  # same seed, same weights: lets different wrappers of one model be compared
    return timm.create_model(name, **{**_small(name), **kwargs})


def _input(model: torch.nn.Module, batch: int = 1) -> torch.Tensor:
    """A batch of the model's own cfg input size (as timm's tests size their inputs)."""
    return torch.randn(batch, *model.pretrained_cfg['input_size'])


def _fx_tracer_kwargs() -> dict:
    # timm's no-trace registries: LC layers are leaf modules (what timm's FX tests pass to torchvision)
    return dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())


def _fx_logits(model: torch.nn.Module) -> torch.nn.Module:
    """torchvision FX extractor returning the model's output node (in train and in eval mode)."""
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=_fx_tracer_kwargs())
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]],
                                    eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=_fx_tracer_kwargs())


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _structure(model: torch.nn.Module) -> list:
    return [(k, type(m).__name__) for k, m in model.named_modules()] + \
        [(k, tuple(t.shape), t.dtype) for k, t in model.state_dict().items()]


@pytest.mark.parametrize('name', SLEEP_MODELS)
def test_sleep_variants_are_their_base_network(name):
    base_name, period = name.rsplit('_ws', 1)
    for tag in timm.list_models(name + '.*', include_tags=True):
        model = timm.create_model(tag, device='meta')
        base = timm.create_model(base_name + '.' + tag.split('.')[1], device='meta')
        assert model.sleep_every == int(period) and base.sleep_every is None
        assert _structure(model) == _structure(base)
        cfg, base_cfg = dict(model.pretrained_cfg), dict(base.pretrained_cfg)
        assert cfg.pop('architecture') == name and cfg.pop('hf_hub_id') == f'bioconv-timm/{tag}'
        base_cfg.pop('architecture'), base_cfg.pop('hf_hub_id')
        assert cfg == base_cfg


# --- forward / backward ------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ARCHS)
def test_forward_backward_and_grad_checkpointing(name):
    model = _create(name, num_classes=42).train()
    x = _input(model, batch=2)
    out = model(x)
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing}'
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    # grad checkpointing changes neither the output nor the gradients
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    out_ckpt = model(x)
    torch.testing.assert_close(out_ckpt, out, rtol=1e-4, atol=1e-5)
    out_ckpt.mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)


# --- default cfgs ------------------------------------------------------------------------------------

def _check_cfg_names(model: torch.nn.Module, cfg: dict) -> None:
    keys = model.state_dict().keys()
    assert cfg['classifier'] + '.weight' in keys and cfg['first_conv'] + '.weight' in keys
    assert model.num_classes == cfg['num_classes'] and model.num_features > 0 and model.head_hidden_size > 0
    assert (model.in_chans, *model.img_size) == tuple(cfg['input_size'])


@pytest.mark.parametrize('tag', TAGS)
def test_default_cfg_describes_the_model(tag):
    """Every registered tag builds (on the meta device) at its cfg's input size and agrees with its cfg."""
    model = timm.create_model(tag, device='meta')
    cfg = model.pretrained_cfg
    _check_cfg_names(model, cfg)
    assert tuple(model.feature_size) == tuple(cfg['pool_size'])
    reduction = model.feature_info[-1]['reduction']
    assert tuple(math.ceil(s / reduction) for s in model.img_size) == tuple(cfg['pool_size'])
    assert cfg['fixed_input_size'] == model.fixed_input_size == tag.startswith('lc_')


@pytest.mark.parametrize('tag', [t for t in TAGS if t.split('.')[0] in ARCHS and not t.startswith('lc_resnet18')])
def test_default_cfg_forward(tag):
    """At the cfg's input size: unpooled features of pool_size, pre-logits, and the head removed
    (timm's default-cfg checks; the 224 px LC ResNet18-half is too large for them here)."""
    model = timm.create_model(tag).eval()
    cfg = model.pretrained_cfg
    x = _input(model)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, model.num_features, *cfg['pool_size'])
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre_logits)
        if isinstance(model, timm.models.MobileNetV3):
            return  # its 1x1 conv head follows the pool: without pooling it is not the features (timm skips it too)
        model.reset_classifier(0, '')  # no pooling either: the unpooled features
        assert model(x).shape == (1, model.num_features, *cfg['pool_size'])
        # the same from the constructor (at a small size: LC layers make a second default-size model slow)
        headless = _create(tag, num_classes=0, global_pool='').eval()
        assert headless(_input(headless)).shape == (1, headless.num_features, *headless.feature_size)


def test_reset_classifier_keeps_device_and_dtype():
    model = _create('lc_resnet20', dtype=torch.float64)
    model.reset_classifier(5)
    assert model.fc.weight.dtype == torch.float64
    assert model(_input(model).double()).shape == (1, 5)
    meta = timm.create_model('lc_resnet18_half', device='meta')
    meta.reset_classifier(7)
    assert meta.fc.weight.device.type == 'meta'


# --- features ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ARCHS)
def test_features_only_every_feature_class(name):
    """features_only with each timm feature class gives the stem + every stage, as feature_info says,
    and all of them the same tensors as forward_intermediates."""
    reference = _create(name).eval()
    x = _input(reference)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True)
    assert len(expected) == len(reference.feature_info) >= 4
    for feature_cls in FEATURE_CLASSES:  # MobileNetV3 too: its stages in `blocks` are flattened (the family's cfg)
        model = _create(name, features_only=True, feature_cls=feature_cls).eval()
        channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
        assert model.pretrained_cfg['input_size'] == reference.pretrained_cfg['input_size']
        with torch.no_grad():
            outs = model(x)
        if isinstance(outs, dict):
            outs = list(outs.values())
        assert len(outs) == len(expected) == len(channels), feature_cls
        for out, ref, c, r in zip(outs, expected, channels, reductions):
            assert out.shape == (1, c, *(math.ceil(s / r) for s in x.shape[-2:])), feature_cls
            torch.testing.assert_close(out, ref, rtol=0, atol=0, msg=feature_cls)


@pytest.mark.parametrize('name', ARCHS)
def test_forward_intermediates(name):
    model = _create(name).eval()
    x = _input(model)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        info = timm.models.FeatureInfo(model.feature_info, range(len(model.feature_info)))
        assert [t.shape[1] for t in intermediates] == info.channels()
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape for t in last_two] == [t.shape for t in intermediates[-2:]]
        model.set_grad_checkpointing(True)
        final_ckpt, _ = model.forward_intermediates(x)
        torch.testing.assert_close(final_ckpt, final, rtol=1e-4, atol=1e-5)


# --- FX --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ARCHS)
def test_fx_forward_backward(name):
    """torchvision's FX feature extractor (with timm's leaf modules) gives the eager output exactly and
    trains: every parameter gets a gradient."""
    model = _create(name).eval()
    x = _input(model)
    with torch.inference_mode():
        eager = model(x)
        traced = _fx_logits(model)
        fx_out = list(traced(x).values())
    assert len(fx_out) == 1 and torch.equal(fx_out[0], eager)

    model = _create(name, num_classes=42).train()
    traced = _fx_logits(model).train()
    out = list(traced(_input(model, batch=2)).values())[0]
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing and _n_params(traced) == _n_params(model)


@pytest.mark.parametrize('name', ['conv_resnet20', 'lc_resnet20_ws10', 'lc_resnet18_half_convstem'])
def test_fx_graph_keeps_the_input_check(name):
    """The input check is one node of the traced graph: a wrong input still raises the ValueError there."""
    model = _create(name).eval()
    traced = timm.models.create_feature_extractor(model, {'layer1': 'layer1', 'fc': 'logits'})
    c, h, w = model.pretrained_cfg['input_size']
    assert traced(torch.randn(1, c, h, w))['logits'].shape == (1, 1000 if 'resnet18' in name else 10)
    with pytest.raises(ValueError, match=rf'\(B, {c}, H, W\)'):
        traced(torch.randn(1, c + 1, h, w))
    if name.startswith('lc_'):
        with pytest.raises(ValueError, match=f'expects {h}x{w} inputs'):
            traced(torch.randn(1, c, h + 8, w + 8))


@pytest.mark.parametrize('name', BIORESNET_CONV_MODELS)  # the timm families' conv models are timm's own
def test_plain_symbolic_trace_of_conv_models(name):
    model = _create(name).eval()
    graph = torch.fx.symbolic_trace(model)
    x = _input(model)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        graph(torch.randn(1, 1, *x.shape[-2:]))


def test_plain_symbolic_trace_of_lc_models():
    """No leaf list: the LC input check and op are FX-wrapped calls, and the eager check still raises."""
    model = _create('lc_resnet20').eval()
    graph = torch.fx.symbolic_trace(model)
    x = _input(model)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))
    wrong = list(x.shape)
    wrong[-1] += 4
    with pytest.raises(ValueError):
        graph(torch.randn(wrong))
    # and torchvision's feature extraction needs no leaf list either
    from torchvision.models.feature_extraction import create_feature_extractor
    features = create_feature_extractor(model, return_nodes=['layer3'])
    with torch.no_grad():
        assert torch.equal(features(x)['layer3'], model.forward_features(x))


def test_symbolic_trace_with_lc_leaves():
    model = _create('lc_resnet20_ws1').eval()
    tracer = torch.fx.Tracer()
    tracer.is_leaf_module = lambda m, qualname: (  # the default rule plus timm's registered no-trace modules
        timm.models.is_notrace_module(type(m)) or torch.fx.Tracer.is_leaf_module(tracer, m, qualname))
    graph = torch.fx.GraphModule(model, tracer.trace(model))
    lc_nodes = [n.target for n in graph.graph.nodes if n.op == 'call_module'
                and isinstance(graph.get_submodule(n.target), LocallyConnected2d)]
    assert len(lc_nodes) == len(list(bioconv_timm.lc_layers(model))) == 21
    x = _input(model)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))


# --- input checks and TorchScript --------------------------------------------------------------------

def test_eager_input_checks_still_raise():
    lc = _create('lc_resnet20')
    assert lc(torch.randn(1, 3, 8, 8)).shape == (1, 10)
    with pytest.raises(ValueError, match='expects 8x8 inputs, got 24x24'):
        lc(torch.randn(1, 3, 24, 24))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\), got \(3, 8, 8\)'):
        lc(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match='expects 8x8'):
        lc.check_input(torch.randn(1, 3, 12, 8))
    conv = _create('conv_resnet20')
    assert conv(torch.randn(1, 3, 24, 24)).shape == (1, 10)  # a conv net takes any size
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        conv(torch.randn(1, 2, 8, 8))


@pytest.mark.parametrize('name', ['conv_resnet20', 'lc_resnet20'])
def test_torchscript_fails_with_a_clear_message(name):
    with pytest.raises(RuntimeError) as info:
        torch.jit.script(_create(name))
    assert str(info.value) == bio_models.TORCHSCRIPT_ERROR
    assert 'deprecated' in str(info.value) and 'torch.fx' in str(info.value)


# --- creation on the meta device, other dtypes --------------------------------------------------------

def _tensors(model: torch.nn.Module):
    return list(model.parameters()) + list(model.buffers())


def test_meta_device_creation_allocates_nothing():
    model = timm.create_model('lc_resnet18_half', device='meta')
    assert all(t.device.type == 'meta' for t in _tensors(model))
    assert 480e6 < _n_params(model) < 486e6
    assert model.pretrained_cfg['input_size'] == (3, 224, 224)
    half = timm.create_model('lc_resnet18_half_convstem_ws10', device='meta', dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and half.sleep_every == 10
    with torch.device('meta'):  # the default device builds there directly too
        assert all(t.device.type == 'meta' for t in _tensors(timm.create_model('lc_resnet18_half_ws1')))
    with torch.device('cpu'):
        assert all(t.device.type == 'cpu' for t in _tensors(timm.create_model('lc_resnet20', img_size=8)))


@pytest.mark.parametrize('name', ['conv_resnet20', 'lc_resnet20_ws10', 'lc_resnet18_half_convstem'])
def test_to_empty_then_init_weights_equals_normal_creation(name):
    """Meta -> to_empty -> init_weights draws exactly the weights normal creation draws from the same seed."""
    reference = _create(name, seed=3)
    model = _create(name, device='meta')
    model.to_empty(device='cpu')
    torch.manual_seed(3)
    model.init_weights()
    ref_state, state = reference.state_dict(), model.state_dict()
    assert ref_state.keys() == state.keys()
    for key in ref_state:
        assert torch.equal(state[key], ref_state[key]), key
    x = _input(model, batch=2)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_init_weights_statistics():
    """After to_empty (garbage memory), init_weights gives the paper's init: Kaiming normal (fan_out, ReLU
    gain) drawn independently at every LC location, BN at weight 1 / bias 0 with fresh running stats."""
    model = timm.create_model('lc_resnet20', img_size=16, device='meta')
    model.to_empty(device='cpu')
    for t in _tensors(model):
        if t.is_floating_point():
            t.data.fill_(float('nan'))
    model.init_weights()
    assert all(torch.isfinite(t).all() for t in _tensors(model) if t.is_floating_point())
    lc = model.layer1[0].conv1  # (16, 16, 16, 3, 3, 16): 256 locations of 2304 weights
    w = lc.weight
    expected_std = math.sqrt(2.0 / (lc.out_channels * 9))
    assert abs(w.std().item() / expected_std - 1) < 0.01 and abs(w.mean().item()) < 0.01 * expected_std
    per_location_std = w.flatten(2).std(dim=2)
    assert (per_location_std / expected_std - 1).abs().max() < 0.1  # every location is Kaiming normal itself
    assert not torch.equal(w[0, 0], w[0, 1])  # independent kernels, not shared
    bn = model.layer1[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var)) and bn.num_batches_tracked.item() == 0
    assert model(torch.randn(2, 3, 16, 16)).isfinite().all()


@pytest.mark.parametrize('dtype', [torch.float64, torch.bfloat16])
@pytest.mark.parametrize('name', ['conv_resnet20', 'lc_resnet20_ws10'])
def test_dtype_creation_and_forward(name, dtype):
    model = _create(name, dtype=dtype).eval()
    assert {t.dtype for t in _tensors(model) if t.is_floating_point()} == {dtype}
    fp32 = _create(name).eval()
    model.load_state_dict(fp32.state_dict())  # the same weights, cast
    x = _input(fp32, batch=2)
    with torch.no_grad():
        out = model(x.to(dtype))
        ref = fp32(x)
    assert out.dtype == dtype
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float64 else dict(rtol=0.1, atol=0.1)
    torch.testing.assert_close(out.float(), ref, **tol)

    # and from the meta device: same dtype after to_empty, the same weights as above from the same seed
    lazy = _create(name, device='meta', dtype=dtype)
    lazy.to_empty(device='cpu')
    torch.manual_seed(0)
    lazy.init_weights()
    direct = _create(name, seed=0, dtype=dtype)
    for (key, t), ref_t in zip(lazy.state_dict().items(), direct.state_dict().values()):
        assert t.dtype == ref_t.dtype and torch.equal(t, ref_t), key


# --- pretrained listing ------------------------------------------------------------------------------

def test_pretrained_listing_names_only_published_tags():
    assert not bio_models.PUBLISHED_TAGS  # nothing is on the Hub yet
    listed = set(timm.list_pretrained('*resnet*')) | set(timm.list_models(pretrained=True))
    assert not listed & set(TAGS), 'unpublished bioconv tags are listed as pretrained'
    assert not any(timm.models.is_model_pretrained(t) for t in TAGS)
    # all registered all the same: a default tag per model plus the 5 .digits tags
    assert len(TAGS) == len(MODEL_NAMES) + 5
    assert {timm.models.get_pretrained_cfg(n).tag for n in MODEL_NAMES} == {'cifar10', 'in1k'}


def test_published_tag_counts_as_having_weights(monkeypatch):
    """What timm's registry reads when the models register: a tag has weights once it is published."""
    cfg = timm.models.get_pretrained_cfg('lc_resnet20_ws10.digits')
    assert cfg.hf_hub_id == 'bioconv-timm/lc_resnet20_ws10.digits' and not cfg.has_weights
    monkeypatch.setattr(bio_models.registry, 'PUBLISHED_TAGS', {'lc_resnet20_ws10.digits'})
    assert cfg.has_weights
    assert not timm.models.get_pretrained_cfg('lc_resnet20_ws10').has_weights  # .cifar10 still unpublished


def test_unpublished_tag_builds_by_name():
    model = timm.create_model('lc_resnet20_ws10.digits')
    assert (model.in_chans, *model.img_size, model.num_classes) == (1, 24, 24, 10)
    assert model.pretrained_cfg['tag'] == 'digits' and model.sleep_every == 10
    assert model(torch.randn(2, 1, 24, 24)).shape == (2, 10)
    with pytest.raises(RuntimeError, match='No pretrained weights are published for lc_resnet20_ws10.digits'):
        timm.create_model('lc_resnet20_ws10.digits', pretrained=True)
