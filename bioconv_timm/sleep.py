"""The instant sleep phase: dynamic weight sharing by averaging (paper section 4).

An LC layer with kernel (kh, kw) splits its output locations into kh x kw interleaved grids
("modules"): location (y, x) belongs to module (y mod kh, x mod kw). During sleep, lateral
connections make every neuron of a module see the same inputs, and anti-Hebbian plasticity drives
their weights to the module mean. In deep networks the paper applies the fixed point directly:
each module's weights (per output channel, input channel and kernel offset) become their mean.
A 1x1 layer has a single module, so sharing makes it fully convolutional.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn

from .layers import LocallyConnected2d

__all__ = ['share_weights_', 'share_layer_', 'grid_means', 'weight_snr', 'lc_layers']


def lc_layers(module: nn.Module) -> Iterator[tuple[str, LocallyConnected2d]]:
    """(name, layer) for every LocallyConnected2d inside ``module`` (itself included)."""
    for name, child in module.named_modules():
        if isinstance(child, LocallyConnected2d):
            yield name, child


def grid_means(values: torch.Tensor, period: tuple[int, int], spatial_dims: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Replace every entry by the mean over its module of locations.

    Args:
        values: tensor with two spatial (location) dims, e.g. an LC weight (out_h, out_w, ...).
        period: (ph, pw); location (y, x) belongs to module (y mod ph, x mod pw).
        spatial_dims: which dims of ``values`` index the output locations.
    Returns:
        A new tensor of the same shape where each module holds its mean.
    """
    dy, dx = spatial_dims
    moved = values.movedim((dy, dx), (0, 1))
    shared = torch.empty_like(moved)
    for a in range(period[0]):
        for b in range(period[1]):
            block = moved[a::period[0], b::period[1]]
            shared[a::period[0], b::period[1]] = block.mean(dim=(0, 1), keepdim=True)
    return shared.movedim((0, 1), (dy, dx))


@torch.no_grad()
def share_layer_(layer: LocallyConnected2d) -> LocallyConnected2d:
    """Set one LC layer's weights (and per-location bias) to their k x k grid means, in place."""
    layer.weight.copy_(grid_means(layer.weight, layer.kernel_size))
    if layer.bias is not None:
        layer.bias.copy_(grid_means(layer.bias, layer.kernel_size, spatial_dims=(1, 2)))
    return layer


@torch.no_grad()
def share_weights_(module: nn.Module) -> int:
    """Instant sleep: share the weights of every LC layer in ``module`` in place.

    Every LC layer is shared, stem and 1x1 shortcuts included (as in the authors' code).
    Optimizer state is not touched. Returns the number of layers shared.
    """
    count = 0
    for _, layer in lc_layers(module):
        share_layer_(layer)
        count += 1
    return count


@torch.no_grad()
def weight_snr(layer: LocallyConnected2d) -> float:
    """Signal-to-noise ratio of an LC layer's weights, paper eq. 6.

    For every module and every weight coordinate j = (out, offset, in), the "neurons" i are the
    module's locations: SNR_j = mean_i(w_ij)^2 / var_i(w_ij) (population variance). The layer's SNR
    is the average over modules and coordinates. A perfectly shared layer has SNR = inf
    (-log SNR = -inf); coordinates whose mean and variance are both 0 carry no signal and are skipped.
    """
    if not isinstance(layer, LocallyConnected2d):
        raise TypeError(f'weight_snr expects a LocallyConnected2d, got {type(layer).__name__}')
    weight = layer.weight.detach().double()
    ph, pw = layer.kernel_size
    ratios = []
    for a in range(ph):
        for b in range(pw):
            block = weight[a::ph, b::pw]
            if block.shape[0] * block.shape[1] < 2:
                continue  # a module with one location is trivially shared
            mean = block.mean(dim=(0, 1))
            var = block.var(dim=(0, 1), unbiased=False)
            ratios.append((mean.square() / var).flatten())
    ratio = torch.cat(ratios)
    ratio = ratio[~torch.isnan(ratio)]
    if ratio.numel() == 0:
        return float('nan')
    return float(ratio.mean())
