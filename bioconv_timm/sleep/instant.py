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

from ..layers import LocallyConnected2d
from ..sharding import gathered_lc_layers

__all__ = ['share_weights_', 'share_layer_', 'share_tensor_', 'grid_means', 'weight_snr', 'lc_layers']


def lc_layers(module: nn.Module) -> Iterator[tuple[str, LocallyConnected2d]]:
    """(name, layer) for every LocallyConnected2d inside ``module`` (itself included)."""
    for name, child in module.named_modules():
        if isinstance(child, LocallyConnected2d):
            yield name, child


def _module_view(values: torch.Tensor, period: tuple[int, int]) -> torch.Tensor:
    """(H, W, *rest) -> zero-padded (ceil(H/ph), ph, ceil(W/pw), pw, prod(rest)): module (a, b) is [:, a, :, b]."""
    h, w = values.shape[:2]
    ph, pw = period
    hb, wb = -(-h // ph), -(-w // pw)
    flat = values.reshape(h, w, -1)
    if hb * ph != h or wb * pw != w:
        padded = flat.new_zeros(hb * ph, wb * pw, flat.shape[-1])
        padded[:h, :w] = flat
        flat = padded
    return flat.view(hb, ph, wb, pw, -1)


def _module_counts(h: int, w: int, period: tuple[int, int], device=None) -> torch.Tensor:
    """(ph, pw) number of locations in each module of an (h, w) grid."""
    rows = torch.tensor([len(range(a, h, period[0])) for a in range(period[0])], dtype=torch.float64, device=device)
    cols = torch.tensor([len(range(b, w, period[1])) for b in range(period[1])], dtype=torch.float64, device=device)
    return rows[:, None] * cols[None, :]


def _module_means(values: torch.Tensor, period: tuple[int, int]) -> torch.Tensor:
    """(ph, pw, prod(rest)) mean of each module over its locations."""
    sums = _module_view(values, period).sum(dim=(0, 2))
    counts = _module_counts(values.shape[0], values.shape[1], period, values.device).clamp(min=1)
    return sums / counts.to(sums.dtype)[..., None]


def grid_means(values: torch.Tensor, period: tuple[int, int], spatial_dims: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Replace every entry by the mean over its module of locations.

    Args:
        values: tensor with two spatial (location) dims, e.g. an LC weight (out_h, out_w, ...).
        period: (ph, pw); location (y, x) belongs to module (y mod ph, x mod pw).
        spatial_dims: which dims of ``values`` index the output locations.
    Returns:
        A new tensor of the same shape where each module holds its mean.
    """
    moved = values.movedim(spatial_dims, (0, 1))
    h, w = moved.shape[:2]
    ph, pw = period
    means = _module_means(moved, period)  # (ph, pw, R)
    hb, wb = -(-h // ph), -(-w // pw)
    tiled = means[None, :, None].expand(hb, ph, wb, pw, means.shape[-1]).reshape(hb * ph, wb * pw, -1)
    shared = tiled[:h, :w].reshape(moved.shape)
    return shared.movedim((0, 1), spatial_dims).contiguous()


def share_tensor_(values: torch.Tensor, period: tuple[int, int]) -> None:
    """In place: every entry of an (H, W, ...) tensor becomes the mean of its module (``grid_means``
    without the copy). Used for LC weights and for optimizer moments shaped like them."""
    h, w = values.shape[:2]
    if h % period[0] == 0 and w % period[1] == 0 and values.is_contiguous():
        # one read and one write: view the locations as (H/ph, ph, W/pw, pw) and broadcast the means back
        view = values.view(h // period[0], period[0], w // period[1], period[1], -1)
        means = view.sum(dim=(0, 2)) / ((h // period[0]) * (w // period[1]))
        view.copy_(means[None, :, None].expand_as(view))
    else:
        # ragged modules: one strided view per module (still one read and one write in all)
        for a in range(min(period[0], h)):
            for b in range(min(period[1], w)):
                module = values[a::period[0], b::period[1]]
                module.copy_(module.mean(dim=(0, 1), keepdim=True).expand_as(module))


@torch.no_grad()
def share_layer_(layer: LocallyConnected2d) -> LocallyConnected2d:
    """Set one LC layer's weights (and per-location bias) to their k x k grid means, in place."""
    share_tensor_(layer.weight, layer.kernel_size)
    if layer.bias is not None:
        layer.bias.copy_(grid_means(layer.bias, layer.kernel_size, spatial_dims=(1, 2)))
    return layer


@torch.no_grad()
def share_weights_(module: nn.Module) -> int:
    """Instant sleep: share the weights of every LC layer in ``module`` in place.

    Every LC layer is shared, stem and 1x1 shortcuts included (as in the authors' code).
    Optimizer state is not touched. Returns the number of layers shared. On an FSDP-sharded model
    (:mod:`bioconv_timm.sharding`) each layer is gathered, shared and written back to the shards; call it
    on every rank.
    """
    count = 0
    for layer in gathered_lc_layers(module):
        share_layer_(layer)
        count += 1
    return count


@torch.no_grad()
def weight_snr(layer: LocallyConnected2d) -> float:
    """Signal-to-noise ratio of an LC layer's weights (paper eq. 6): mean weight squared over weight variance.

    The "neurons" of eq. 6 are the locations of one module (k x k grid); the signal of a weight
    coordinate j = (out, kernel offset, in) is its squared module mean, the noise its variance over the
    module's locations. Both are averaged over coordinates and modules before taking the ratio:
    SNR = mean_j(mean_i w_ij)^2 / mean_j var_i(w_ij). (Averaging the per-coordinate ratios instead, eq. 6
    read literally, is infinite as soon as one coordinate is exactly shared, which happens in deep nets
    to weights that get no gradient, e.g. where the receptive field only sees zero padding.)
    A perfectly shared layer has SNR = inf (-log SNR = -inf). Modules with a single location are skipped.
    """
    if not isinstance(layer, LocallyConnected2d):
        raise TypeError(f'weight_snr expects a LocallyConnected2d, got {type(layer).__name__}')
    weight = layer.weight.detach()
    h, w = weight.shape[:2]
    ph, pw = layer.kernel_size
    counts = _module_counts(h, w, layer.kernel_size, weight.device)  # (ph, pw)
    view = _module_view(weight, layer.kernel_size)  # (hb, ph, wb, pw, R), zero-padded
    # Shifted moments: deviations from each module's first location are exactly 0 for a shared
    # module, so sharing gives noise == 0 exactly, and float32 is accurate enough otherwise.
    deviations = view - view[:1, :, :1]
    hb, wb = view.shape[0], view.shape[2]
    if hb * ph != h or wb * pw != w:  # zero the padded locations
        rows = (torch.arange(hb * ph, device=weight.device) < h).view(hb, ph, 1, 1, 1)
        cols = (torch.arange(wb * pw, device=weight.device) < w).view(1, 1, wb, pw, 1)
        deviations = deviations * (rows & cols)
    n = counts.clamp(min=1).to(weight.dtype)[..., None]
    mean_dev = deviations.sum(dim=(0, 2)) / n  # (ph, pw, R)
    var = (deviations.square().sum(dim=(0, 2)) / n - mean_dev.square()).clamp(min=0)
    means = view[0, :, 0] + mean_dev
    valid = counts >= 2
    if not bool(valid.any()):
        return float('nan')
    signal = means.double().square()[valid].mean()
    noise = var.double()[valid].mean()
    if noise == 0:
        return float('inf') if signal > 0 else float('nan')
    return float(signal / noise)
