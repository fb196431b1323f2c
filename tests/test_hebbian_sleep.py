"""Hebbian sleep in deep networks (section 4.1): geometry of the generated patterns, convergence to
the instant sleep's grid means, the gamma floor, and the training integration."""
import copy

import pytest
import torch
import torch.nn.functional as F

from bioconv_timm import LocallyConnected2d, grid_means, share_layer_, weight_snr
from bioconv_timm.sleep.hebbian import (HebbianSleepConfig, _grid_slices, distance_to_grid_means,
                                        hebbian_share_layer_, hebbian_share_weights_, hebbian_sleep_curve)
from bioconv_timm.sleep import SLEEP_MODES, SleepHook

GEOMETRIES = [  # in, out, kernel, input size, stride, padding
    (4, 5, 3, 10, 1, 1),
    (4, 6, 3, 11, 2, 1),
    (4, 6, 1, 10, 2, 0),
    (3, 4, 5, 13, 2, 2),
    (2, 3, 3, 7, 1, 0),
]


@pytest.mark.parametrize('geometry', GEOMETRIES)
def test_grids_cover_every_module_offset_once_and_match_periodic_inputs(geometry):
    cin, cout, k, size, stride, pad = geometry
    layer = LocallyConnected2d(cin, cout, k, size, stride=stride, padding=pad)
    oh, ow = layer.output_size
    seen = torch.zeros(oh * ow, k * k, dtype=torch.long)
    (py, px) = (stride * k, stride * k)
    slices = _grid_slices(layer, 'cpu')
    grids = [(ga, gb) for ga in range(py) for gb in range(px)]
    active = iter(slices)
    for ga, gb in grids:
        # the input the layer below generates: grid (ga, gb) active on the padded input, period (py, px)
        x = torch.randn(cin)
        padded = torch.zeros(cin, size + 2 * pad, size + 2 * pad)
        padded[:, ga::py, gb::px] = x[:, None, None]
        patches = F.unfold(padded[None], k, stride=stride)[0]          # (cin*k*k, L)
        patches = patches.view(cin, k * k, oh * ow)
        driven = patches.abs().sum(0) > 0                              # (k*k, L): offsets that see input
        if not bool(driven.any()):
            continue
        loc, off, mod, n_modules = next(active)
        expected = torch.zeros_like(driven)
        expected[off, loc] = True
        assert torch.equal(driven, expected), (ga, gb)
        assert torch.allclose(patches[:, off, loc], x[:, None].expand(cin, len(loc)))
        # the module index groups locations with the same (y mod k, x mod k)
        ys, xs = loc // ow, loc % ow
        key = (ys % k) * k + xs % k
        for m in range(n_modules):
            assert len(set(key[mod == m].tolist())) == 1
        seen[loc, off] += 1
    assert next(active, None) is None
    # every (location, kernel offset) weight slice is trained by exactly one grid
    assert torch.equal(seen, torch.ones_like(seen))


def _perturbed_shared_layer(cin=6, cout=5, k=3, size=9, stride=1, pad=1, noise=0.5, seed=0):
    torch.manual_seed(seed)
    layer = LocallyConnected2d(cin, cout, k, size, stride=stride, padding=pad)
    share_layer_(layer)
    with torch.no_grad():
        layer.weight.add_(noise * layer.weight.std() * torch.randn_like(layer.weight))
    return layer


@pytest.mark.parametrize('stride,pad,k', [(1, 1, 3), (2, 1, 3), (2, 0, 1)])
def test_hebbian_sleep_moves_weights_to_grid_means_by_orders_of_magnitude(stride, pad, k):
    layer = _perturbed_shared_layer(stride=stride, pad=pad, k=k)
    start = layer.weight.detach().clone()
    target = grid_means(start, layer.kernel_size)
    hebbian_share_layer_(layer)
    dist = distance_to_grid_means(layer.weight, start, layer.kernel_size)
    assert dist < 3e-3  # from 1.0: the gamma = 1e-3 floor, not the start
    # anti-Hebbian updates sum to zero in a module: the means are exactly those of the instant sleep
    assert torch.allclose(grid_means(layer.weight.detach(), layer.kernel_size), target, atol=1e-6)
    assert weight_snr(layer) > 1e4


def test_already_shared_layer_is_unchanged():
    torch.manual_seed(1)
    layer = LocallyConnected2d(6, 5, 3, 9, stride=1, padding=1, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    share_layer_(layer)
    before = copy.deepcopy(layer.state_dict())
    hebbian_share_layer_(layer, HebbianSleepConfig(iterations=30))
    for name, value in layer.state_dict().items():
        assert torch.allclose(value, before[name], atol=1e-6, rtol=0), name


@pytest.mark.parametrize('gamma', [0.1, 0.01])
def test_fixed_point_is_the_gamma_floor(gamma):
    """Eq. 5 with whitened inputs (C = I): w* - mean = gamma / (1 + gamma) (w_init - mean)."""
    layer = _perturbed_shared_layer(cin=4, cout=3, size=9)
    start = layer.weight.detach().clone()
    config = HebbianSleepConfig(iterations=60, gamma=gamma, patterns=4000)
    hebbian_share_layer_(layer, config)
    dist = distance_to_grid_means(layer.weight, start, layer.kernel_size)
    assert dist == pytest.approx(gamma / (1 + gamma), rel=0.08)
    # and the deviation points the way eq. 5 says: a scaled copy of the initial deviation
    dev0 = start - grid_means(start, layer.kernel_size)
    dev = layer.weight.detach() - grid_means(start, layer.kernel_size)
    cos = F.cosine_similarity(dev.flatten(), dev0.flatten(), dim=0)
    assert cos > 0.99


def test_bias_is_shared_too():
    torch.manual_seed(2)
    layer = LocallyConnected2d(3, 4, 3, 8, padding=1, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    start = layer.bias.detach().clone()
    hebbian_share_layer_(layer)
    shared = grid_means(start, layer.kernel_size, spatial_dims=(1, 2))
    rel = (layer.bias.detach() - shared).norm() / (start - shared).norm()
    assert rel < 3e-3


def test_curve_decreases_and_model_sleep_is_deterministic():
    layer = _perturbed_shared_layer()
    rows = hebbian_sleep_curve(layer, [0, 2, 5, 20])
    dists = [r['rel_distance'] for r in rows]
    assert dists[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(dists, dists[1:]))
    assert [r['iterations'] for r in rows] == [0, 2, 5, 20]

    import timm
    import bioconv_timm  # noqa: F401
    model = timm.create_model('lc_resnet20', layers=(1, 1, 1), img_size=12, num_classes=3)
    twin = copy.deepcopy(model)
    assert hebbian_share_weights_(model, HebbianSleepConfig(iterations=3)) == \
        hebbian_share_weights_(twin, HebbianSleepConfig(iterations=3)) > 0
    for (n, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), n


def test_sleep_hook_hebbian_mode_does_not_touch_the_training_rng():
    import timm
    import bioconv_timm  # noqa: F401
    assert 'hebbian' in SLEEP_MODES
    model = timm.create_model('lc_resnet20', layers=(1, 1, 1), img_size=12, num_classes=3)
    hook = SleepHook(model, every=1, mode='hebbian')
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    start = next(model.parameters()).detach().clone()
    assert hook.step()
    assert torch.equal(torch.rand(3), expected)
    assert hook.sleeps == 1
    assert not torch.equal(next(model.parameters()).detach(), start)


def test_config_validation():
    with pytest.raises(ValueError, match='iterations'):
        HebbianSleepConfig(lr=0)
    with pytest.raises(ValueError, match='patterns'):
        HebbianSleepConfig(patterns=0)
    with pytest.raises(TypeError, match='LocallyConnected2d'):
        hebbian_share_layer_(torch.nn.Conv2d(1, 1, 3))
