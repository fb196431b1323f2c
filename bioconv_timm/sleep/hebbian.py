"""Hebbian sleep in deep networks (paper section 4.1): weight sharing by anti-Hebbian dynamics.

The instant sleep (:mod:`bioconv_timm.sleep`) sets every module of an LC layer to its mean. Here the
same result is reached by the dynamics of eq. 4, run on each LC layer in turn:

* Input patterns. The layer below (its lateral connections) generates inputs that repeat with the
  layer's period ``P = stride * kernel`` along each axis, so every output location of one module
  (``y mod kh, x mod kw``) sees the same patch. As in Fig. 3B one of the ``Py x Px`` input grids is
  active at a time: grid ``(ga, gb)`` drives, for each presentation, one random ``Cin``-dim vector
  ``x ~ N(0, 1)`` at the input positions ``(ga mod Py, gb mod Px)`` and silence elsewhere. A module
  (a, b) then sees ``x`` at the single kernel offset ``((ga - a*s) mod Py, (gb - b*s) mod Px)`` (when it
  falls inside the kernel), so each grid exercises one ``Cin``-dim slice of every module's weights
  and cycling through all grids covers every (module, offset) pair exactly once. The pattern is
  defined on the padded input, so border neurons are equalized too (the instant sleep also shares
  the weights that only ever see zero padding).
* Plasticity (eq. 4, batched over ``patterns`` presentations of the active grid)::

      z_i = w_i . x,   dw_i = -lr [ mean_b (z_i - mean_{j in module} z_j) x + gamma (w_i - w_i_init) ]

  with optional momentum (``m <- momentum m + dw``). ``w_init`` are the weights at the start of the
  sleep. The update sums to zero over a module, so module means never move: the target is exactly the
  instant sleep's grid mean, and the fixed point of each slice is eq. 5 with ``C = I``:
  ``w* - mean = gamma / (1 + gamma) (w_init - mean)`` (the gamma floor).
* Bias (when the layer has one): a constant input of 1, the same rule.
* Layers are slept one after the other (layer l's repeated patterns feed layer l + 1), each for
  ``iterations`` updates per active grid.

Random patterns come from a private generator seeded by ``seed``, so a sleep is deterministic,
identical on every DDP rank, and does not consume the training RNG (resumes stay exact).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..layers import LocallyConnected2d
from .instant import grid_means, weight_snr
from ..sharding import gathered_lc_layers

__all__ = ['HebbianSleepConfig', 'hebbian_share_layer_', 'hebbian_share_weights_', 'distance_to_grid_means',
           'hebbian_sleep_curve']


@dataclass(frozen=True)
class HebbianSleepConfig:
    """Settings of the Hebbian sleep (defaults reach the gamma floor on ResNet20 LC layers)."""
    iterations: int = 20      # updates per active input grid
    lr: float = 0.5
    momentum: float = 0.0
    gamma: float = 1e-3       # anchoring to the weights at the start of sleep (eq. 4)
    patterns: Optional[int] = None  # presentations per update; default max(16, 2 * in_channels)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or not 0 <= self.momentum < 1 or self.gamma < 0:
            raise ValueError(f'invalid HebbianSleepConfig {self}: need iterations >= 0, lr > 0, '
                             '0 <= momentum < 1, gamma >= 0')
        if self.patterns is not None and self.patterns < 1:
            raise ValueError(f'patterns must be >= 1, got {self.patterns}')


def _active_pairs(grid: int, period: int, kernel: int, stride: int, out_len: int) -> List[Tuple[int, int]]:
    """(module index a, kernel offset u) along one axis for the active input grid position ``grid``."""
    pairs = []
    for a in range(min(kernel, out_len)):
        u = (grid - a * stride) % period
        if u < kernel:
            pairs.append((a, u))
    return pairs


def _grid_slices(layer: LocallyConnected2d, device) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """For each input grid with active inputs: (location index, kernel-offset index, module index, #modules).

    Locations are flat over (out_h, out_w); offsets flat over (kh, kw); modules are numbered 0..M-1
    among the modules that grid drives.
    """
    return [(loc.to(device), off.to(device), mod.to(device), n)
            for loc, off, mod, n in _grid_index(layer.output_size, layer.kernel_size, layer.stride)]


@functools.lru_cache(maxsize=64)
def _grid_index(output_size: Tuple[int, int], kernel: Tuple[int, int], stride: Tuple[int, int]):
    """The CPU index tensors of :func:`_grid_slices`; they depend on the geometry only, so every sleep of
    a training run reuses them."""
    (oh, ow), (kh, kw), (sh, sw) = output_size, kernel, stride
    py, px = sh * kh, sw * kw
    out = []
    for ga in range(py):
        rows = _active_pairs(ga, py, kh, sh, oh)
        if not rows:
            continue
        for gb in range(px):
            cols = _active_pairs(gb, px, kw, sw, ow)
            if not cols:
                continue
            locs, offs, mods = [], [], []
            for m, ((a, u), (b, v)) in enumerate((r, c) for r in rows for c in cols):
                ys = torch.arange(a, oh, kh)
                xs = torch.arange(b, ow, kw)
                loc = (ys[:, None] * ow + xs[None, :]).reshape(-1)
                locs.append(loc)
                offs.append(torch.full_like(loc, u * kw + v))
                mods.append(torch.full_like(loc, m))
            out.append((torch.cat(locs), torch.cat(offs), torch.cat(mods), len(rows) * len(cols)))
    return tuple(out)


def _module_centered(z: torch.Tensor, module: torch.Tensor, n_modules: int) -> torch.Tensor:
    """z (n, ...) minus the mean of z over the rows of the same module."""
    sums = z.new_zeros((n_modules,) + z.shape[1:]).index_add_(0, module, z)
    counts = torch.bincount(module, minlength=n_modules).to(z.dtype).view(-1, *([1] * (z.dim() - 1)))
    return z - (sums / counts)[module]


def _relax(w: torch.Tensor, module: torch.Tensor, n_modules: int, config: HebbianSleepConfig,
           draw) -> torch.Tensor:
    """Eq. 4 on a slice w (n, Cout, Cin) whose rows of one module all see the same inputs draw() -> (B, Cin)."""
    w_init = w.clone()
    mom = torch.zeros_like(w) if config.momentum else None
    for _ in range(config.iterations):
        x = draw()                                          # (B, Cin)
        z = torch.einsum('noc,bc->nob', w, x)               # responses of every neuron to every pattern
        r = _module_centered(z, module, n_modules)          # lateral inhibition: z_i - mean_module z
        grad = torch.einsum('nob,bc->noc', r, x) / x.shape[0]
        if config.gamma:
            grad = grad + config.gamma * (w - w_init)
        if mom is not None:
            grad = mom.mul_(config.momentum).add_(grad)
        w = w - config.lr * grad
    return w


@torch.no_grad()
def hebbian_share_layer_(layer: LocallyConnected2d, config: HebbianSleepConfig = HebbianSleepConfig()) -> LocallyConnected2d:
    """Run the Hebbian sleep on one LC layer in place (see the module docstring). Returns the layer."""
    if not isinstance(layer, LocallyConnected2d):
        raise TypeError(f'hebbian_share_layer_ expects a LocallyConnected2d, got {type(layer).__name__}')
    weight = layer.weight
    oh, ow, cout, kh, kw, cin = weight.shape
    work = weight.detach().float().reshape(oh * ow, cout, kh * kw, cin)
    device = weight.device
    gen = torch.Generator(device=device).manual_seed(config.seed)
    batch = config.patterns or max(16, 2 * cin)

    def draw_x():
        return torch.randn(batch, cin, generator=gen, device=device)

    for loc, off, mod, n_modules in _grid_slices(layer, device):
        w = work[loc, :, off, :]                            # (n, Cout, Cin): the slice this grid drives
        work[loc, :, off, :] = _relax(w, mod, n_modules, config, draw_x)
    weight.copy_(work.reshape(weight.shape).to(weight.dtype))

    if layer.bias is not None:  # a constant input of 1 seen by every neuron
        ones = torch.ones(batch, 1, device=device)
        bias = layer.bias.detach().float()                  # (Cout, oh, ow)
        ys, xs = torch.meshgrid(torch.arange(oh, device=device), torch.arange(ow, device=device), indexing='ij')
        module = ((ys % kh) * kw + xs % kw).reshape(-1)
        b = bias.permute(1, 2, 0).reshape(oh * ow, cout, 1)
        b = _relax(b, module, kh * kw, config, lambda: ones)
        layer.bias.copy_(b.reshape(oh, ow, cout).permute(2, 0, 1).to(layer.bias.dtype))
    return layer


@torch.no_grad()
def hebbian_share_weights_(module: nn.Module, config: HebbianSleepConfig = HebbianSleepConfig()) -> int:
    """Hebbian sleep of every LC layer in ``module``, layer after layer, in place. Returns the count."""
    count = 0
    for i, layer in enumerate(gathered_lc_layers(module)):  # FSDP: one gathered layer at a time
        hebbian_share_layer_(layer, replace(config, seed=config.seed + i))
        count += 1
    return count


@torch.no_grad()
def distance_to_grid_means(weight: torch.Tensor, target: torch.Tensor, period: Tuple[int, int]) -> float:
    """||weight - grid_means(target)|| / ||target - grid_means(target)||: 1 before sleep, 0 when shared
    exactly as the instant sleep would (``target`` = the weights at the start of sleep)."""
    shared = grid_means(target.double(), period)
    denom = (target.double() - shared).norm()
    return float((weight.double() - shared).norm() / denom) if denom > 0 else 0.0


def hebbian_sleep_curve(layer: LocallyConnected2d, iterations: List[int],
                        config: HebbianSleepConfig = HebbianSleepConfig()) -> List[Dict[str, float]]:
    """How close Hebbian sleep gets to the instant result as a function of iterations per grid.

    Runs a fresh sleep from ``layer``'s current weights for each count (the layer is left unchanged).
    Returns rows: iterations, rel_distance (see :func:`distance_to_grid_means`), neg_log_snr, floor
    (gamma / (1 + gamma), the eq. 5 fixed point's relative distance for whitened inputs).
    """
    import copy
    import math
    rows = []
    start = layer.weight.detach().clone()
    for n in iterations:
        trial = copy.deepcopy(layer)
        hebbian_share_layer_(trial, replace(config, iterations=int(n)))
        snr = weight_snr(trial)
        rows.append(dict(iterations=int(n), rel_distance=distance_to_grid_means(trial.weight, start, layer.kernel_size),
                         neg_log_snr=-math.log(snr) if snr > 0 else float('inf'),
                         floor=config.gamma / (1 + config.gamma)))
    return rows
