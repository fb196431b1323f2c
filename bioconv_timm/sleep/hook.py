"""Calling the sleep phase from training: an optimizer step post-hook that sleeps every N steps.

Counting: like the authors (``iteration % N == 0`` with a 0-based iteration), the hook sleeps
right after optimizer steps 1, N + 1, 2N + 1, ... (1-based), so an LC network is shared right after its
first update: its independent per-location initialization becomes a convolutional one, instead of
being averaged away after N steps of learning. Unlike the authors (whose iteration restarted every
epoch), one global counter runs over the whole run, so the period is exact across epoch boundaries and
a resumed run continues the count. A step skipped by the AMP GradScaler (inf/nan gradients) never
calls ``optimizer.step()``, so it fires no post-hook and is not counted. Under DDP every rank runs
the same deterministic sleep on identical weights after the same step, so ranks stay identical. Under
FSDP2 (:func:`bioconv_timm.sharding.fsdp_wrap`) every rank gathers each LC layer, and for the 'average'
policy each AdamW moment of it, sleeps on the whole tensor and keeps its own shard of the result.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from ..layers import LocallyConnected2d
from .hebbian import hebbian_share_weights_
from ..sharding import check_not_fsdp1, gathered_tensor, is_fsdp_unit
from .instant import grid_means, share_tensor_, share_weights_
from .modes import OPTIMIZER_POLICIES  # torch-free, for the settings; re-exported here

__all__ = ['SleepHook', 'SLEEP_MODES', 'OPTIMIZER_POLICIES', 'register_sleep_mode']

SleepFn = Callable[[nn.Module], int]

# name -> function(model) -> number of layers slept; the built-in names (modes.BUILTIN_SLEEP_MODES) are what
# the settings offer without importing torch. 'hebbian': sleep/hebbian.py.
SLEEP_MODES: Dict[str, SleepFn] = {'instant': share_weights_, 'hebbian': hebbian_share_weights_}


def register_sleep_mode(name: str, fn: SleepFn) -> None:
    """Make ``fn(model) -> layers slept`` available as ``sleep_mode=name``."""
    SLEEP_MODES[name] = fn


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP / torch.compile wrappers. An FSDP2 root is kept (its class is the model's own)."""
    while not is_fsdp_unit(model):
        if hasattr(model, 'module') and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, '_orig_mod'):
            model = model._orig_mod
        else:
            break
    return model


class SleepHook:
    """Runs the sleep phase on ``model`` after every ``every``-th optimizer step.

    Args:
        model: the model (DDP / compiled wrappers are unwrapped).
        every: period N in optimizer steps (None or 0 disables sleeping).
        mode: key of ``SLEEP_MODES`` ('instant' by default).
        optimizer_policy: 'keep' | 'average' | 'reset' (see ``OPTIMIZER_POLICIES``).
        on_sleep: optional callback(step) after each sleep (logging).

    Use ``hook.attach(optimizer)``; ``state_dict()``/``load_state_dict()`` carry the step counter
    through checkpoints.
    """

    def __init__(self, model: nn.Module, every: Optional[int], mode: str = 'instant',
                 optimizer_policy: str = 'keep', on_sleep: Optional[Callable[[int], None]] = None) -> None:
        if every is not None and int(every) < 0:
            raise ValueError(f'sleep every must be >= 1 (or 0/None to disable), got {every}')
        if mode not in SLEEP_MODES:
            raise ValueError(f'unknown sleep mode {mode!r}; available: {sorted(SLEEP_MODES)}')
        if optimizer_policy not in OPTIMIZER_POLICIES:
            raise ValueError(f'unknown optimizer policy {optimizer_policy!r}; choose one of {OPTIMIZER_POLICIES}')
        check_not_fsdp1(model)  # before unwrapping: FSDP1's wrapper has a .module too
        self.model = _unwrap(model)
        self.every = int(every) if every else 0
        self.mode = mode
        self.optimizer_policy = optimizer_policy
        self.on_sleep = on_sleep
        self.steps = 0
        self.sleeps = 0
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._handle = None

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def attach(self, optimizer: torch.optim.Optimizer) -> 'SleepHook':
        self._optimizer = optimizer
        self._handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: self.step())
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def step(self) -> bool:
        """Count one optimizer step; sleep after steps 1, N + 1, 2N + 1, ... Returns whether it slept."""
        self.steps += 1
        if not self.enabled or (self.steps - 1) % self.every != 0:
            return False
        self.sleep()
        return True

    @torch.no_grad()
    def sleep(self, model: Optional[nn.Module] = None) -> int:
        """Run the sleep phase now (also used for a final sleep before evaluation) and count it. ``model``: other
        weights to sleep instead of the trained model's, e.g. its EMA copy (then the optimizer and the
        ``on_sleep`` log, which describe the trained model, are left alone)."""
        target = self.model if model is None else _unwrap(model)
        count = SLEEP_MODES[self.mode](target)
        if target is self.model and self._optimizer is not None and self.optimizer_policy != 'keep':
            self._apply_optimizer_policy(self._optimizer)
        self.sleeps += 1
        if target is self.model and self.on_sleep is not None:
            self.on_sleep(self.steps)
        return count

    def _apply_optimizer_policy(self, optimizer: torch.optim.Optimizer) -> None:
        for layer in self.model.modules():
            if not isinstance(layer, LocallyConnected2d):
                continue
            for param, spatial_dims in ((layer.weight, (0, 1)), (layer.bias, (1, 2))):
                if param is None or param not in optimizer.state:
                    continue
                for key, value in optimizer.state[param].items():
                    if not torch.is_tensor(value) or value.shape != param.shape:
                        continue  # e.g. the step count
                    if self.optimizer_policy == 'reset':
                        value.zero_()  # a sharded (DTensor) moment zeroes its own shard
                        continue
                    with gathered_tensor(value) as whole:  # FSDP2: the moment gathered, then this rank's shard kept
                        if spatial_dims == (0, 1):
                            share_tensor_(whole, layer.kernel_size)
                        else:
                            whole.copy_(grid_means(whole, layer.kernel_size, spatial_dims))

    def state_dict(self) -> Dict[str, int]:
        return dict(steps=self.steps, sleeps=self.sleeps, every=self.every)

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.steps = int(state['steps'])
        self.sleeps = int(state.get('sleeps', 0))
