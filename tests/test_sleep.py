import math

import pytest
import torch
import torch.nn as nn

from bioconv_timm import LocallyConnected2d, grid_means, share_layer_, share_weights_, weight_snr


def grid_means_by_index(weight: torch.Tensor, period) -> torch.Tensor:
    """Independent computation: label each location with its module id, average with index_add."""
    out_h, out_w = weight.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(out_h), torch.arange(out_w), indexing='ij')
    module_id = ((ys % period[0]) * period[1] + (xs % period[1])).flatten()
    flat = weight.reshape(out_h * out_w, -1)
    n_modules = period[0] * period[1]
    sums = torch.zeros(n_modules, flat.shape[1], dtype=flat.dtype).index_add_(0, module_id, flat)
    counts = torch.bincount(module_id, minlength=n_modules).clamp(min=1).to(flat.dtype)
    return (sums / counts[:, None])[module_id].reshape(weight.shape)


@pytest.mark.parametrize('k,size,stride', [(3, (9, 9), 1), (3, (10, 7), 2), (5, (12, 12), 1), (1, (6, 6), 2), (2, (7, 7), 1)])
def test_sharing_equals_grid_means_computed_independently(k, size, stride):
    layer = LocallyConnected2d(3, 4, k, size, stride=stride, padding=k // 2).double()
    expected = grid_means_by_index(layer.weight.detach().clone(), layer.kernel_size)
    assert share_weights_(layer) == 1
    torch.testing.assert_close(layer.weight.detach(), expected)
    # a location and its neighbour one period away hold the same kernel
    if layer.output_size[0] > k:
        torch.testing.assert_close(layer.weight[0, 0], layer.weight[k, 0])


def test_sharing_perturbed_conv_gives_back_grid_means():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    layer = LocallyConnected2d.from_conv(conv, (12, 12))
    noise = 0.1 * torch.randn_like(layer.weight)
    with torch.no_grad():
        layer.weight.add_(noise)
    expected = grid_means_by_index(layer.weight.detach().clone(), (3, 3))
    share_weights_(layer)
    torch.testing.assert_close(layer.weight.detach(), expected)
    # 12 is a multiple of 3: every module has 16 locations; the perturbation averages out mostly
    assert (layer.weight - conv.weight.permute(0, 2, 3, 1)).abs().max() < 0.2


def test_sharing_is_idempotent_and_in_place():
    layer = LocallyConnected2d(2, 3, 3, (8, 8), padding=1, bias=True)
    ptr = layer.weight.data_ptr()
    share_weights_(layer)
    once_w, once_b = layer.weight.detach().clone(), layer.bias.detach().clone()
    share_weights_(layer)
    assert layer.weight.data_ptr() == ptr
    torch.testing.assert_close(layer.weight.detach(), once_w, rtol=0, atol=1e-7)
    torch.testing.assert_close(layer.bias.detach(), once_b, rtol=0, atol=1e-7)


def test_one_by_one_layer_becomes_fully_convolutional():
    layer = LocallyConnected2d(5, 7, 1, (6, 6), stride=2)
    share_weights_(layer)
    kernel = layer.weight[0, 0]
    assert torch.equal(layer.weight, kernel.expand_as(layer.weight))
    conv = nn.Conv2d(5, 7, 1, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(kernel.permute(0, 3, 1, 2))
    x = torch.randn(2, 5, 6, 6)
    torch.testing.assert_close(layer(x), conv(x))


def test_shared_lc_from_conv_equals_conv():
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    layer = LocallyConnected2d.from_conv(conv, (11, 11))
    share_weights_(layer)
    x = torch.randn(2, 3, 11, 11)
    torch.testing.assert_close(layer(x), conv(x))


def test_share_weights_counts_layers_and_leaves_other_modules_alone():
    net = nn.Sequential(
        LocallyConnected2d(3, 4, 3, (8, 8), padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), LocallyConnected2d(4, 2, 1, (8, 8)))
    conv_before = net[3].weight.detach().clone()
    assert share_weights_(net) == 2
    assert torch.equal(net[3].weight, conv_before)
    assert share_weights_(nn.Linear(2, 2)) == 0


def test_grid_means_other_spatial_dims():
    bias = torch.randn(4, 6, 6)
    shared = grid_means(bias, (3, 3), spatial_dims=(1, 2))
    torch.testing.assert_close(shared.movedim(0, -1), grid_means_by_index(bias.movedim(0, -1), (3, 3)))


def test_weight_snr_is_mean_signal_over_mean_noise_and_infinite_after_sharing():
    layer = LocallyConnected2d(2, 3, 3, (7, 7), padding=1)  # 7 = 3 + 3 + 1: modules of 9, 6 and 4 locations
    w = layer.weight.detach().double()
    signal, noise = [], []
    for a in range(3):
        for b in range(3):
            block = w[a::3, b::3].reshape(-1, *w.shape[2:])
            mean = block.mean(0)
            signal.append((mean ** 2).flatten())
            noise.append(((block - mean) ** 2).mean(0).flatten())
    expected = (torch.cat(signal).mean() / torch.cat(noise).mean()).item()
    assert math.isclose(weight_snr(layer), expected, rel_tol=1e-5)  # float32 moments
    assert expected < 1.0  # independent init: more noise than signal
    share_weights_(layer)
    assert weight_snr(layer) == math.inf


def test_weight_snr_grows_as_perturbation_shrinks():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    snrs = []
    for eps in (1.0, 0.1, 0.01):
        layer = LocallyConnected2d.from_conv(conv, (9, 9))
        with torch.no_grad():
            layer.weight.add_(eps * torch.randn_like(layer.weight))
        snrs.append(weight_snr(layer))
    assert snrs[0] < snrs[1] < snrs[2]
    # SNR ~ mean^2 / eps^2: two decades of noise give ~four decades of SNR
    assert 1e3 < snrs[2] / snrs[1] * snrs[1] / snrs[0] < 1e5


def test_weight_snr_rejects_non_lc():
    with pytest.raises(TypeError):
        weight_snr(nn.Conv2d(1, 1, 3))


def test_bias_is_shared_over_its_own_module_grid():
    """share_weights_ on a layer with bias, uneven grid (7x5 outputs, 3x3 kernel): each bias location
    becomes the mean of its module, computed here location by location."""
    layer = LocallyConnected2d(2, 3, 3, (7, 5), padding=1, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    before = layer.bias.detach().clone()  # (Cout, H, W)
    share_weights_(layer)
    kh, kw = layer.kernel_size
    for i in range(7):
        for j in range(5):
            members = [(a, b) for a in range(7) for b in range(5) if a % kh == i % kh and b % kw == j % kw]
            expected = torch.stack([before[:, a, b] for a, b in members]).mean(0)
            torch.testing.assert_close(layer.bias[:, i, j], expected, rtol=1e-6, atol=1e-7)
