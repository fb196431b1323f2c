"""Sharding LC models over several devices with FSDP, the sleep phase included.

An LC layer's weight, its gradient and AdamW's two moments take 16 bytes per parameter: 7.7 GB for the
483M-parameter ``lc_resnet18_half``, four times that at full width. When that does not fit one device,
shard it: :func:`fsdp_wrap` makes every :class:`~bioconv_timm.layers.LocallyConnected2d` its own FSDP unit,
so each of N ranks holds 1/N of every LC layer's weights, gradients and optimizer state, and only one LC
layer is gathered at a time in forward and backward.

The sleep phase needs whole layers (a module's locations span the shards). :func:`gathered_lc_layers`
yields every LC layer with its full weight gathered from the shards (``summon_full_params(writeback=True)``
on the FSDP unit that owns it, one unit at a time), and writes the shared weights back to the shards; the
instant and Hebbian sleeps (:func:`~bioconv_timm.sleep.share_weights_`,
:func:`~bioconv_timm.hebbian_sleep.hebbian_share_weights_`) use it, so they work unchanged on an FSDP
model. Every rank must call them at the same step (they are collective).

Use it from your own torchrun loop (``bioconv train`` uses DDP, which replicates the model)::

    import torch.distributed as dist
    dist.init_process_group('nccl')                      # 'gloo' on CPU
    model = timm.create_model('lc_resnet18_half_ws10')
    model = fsdp_wrap(model, device_id=torch.cuda.current_device(),
                      mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step, (x, y) in enumerate(loader, 1):            # a DistributedSampler per rank
        loss = F.cross_entropy(model(x), y); loss.backward(); optimizer.step(); optimizer.zero_grad()
        if step % 10 == 0:
            bioconv_timm.share_weights_(model)           # the sleep, on every rank
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Optional

import torch
import torch.nn as nn

from .layers import LocallyConnected2d

__all__ = ['fsdp_wrap', 'is_fsdp', 'is_fsdp_unit', 'gathered_lc_layers']


def _fsdp_class():
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch built without distributed support
        return None
    return FullyShardedDataParallel


def is_fsdp_unit(module: nn.Module) -> bool:
    """True if ``module`` itself is an FSDP wrapper."""
    fsdp = _fsdp_class()
    return fsdp is not None and isinstance(module, fsdp)


def is_fsdp(module: nn.Module) -> bool:
    """True if ``module`` is, or contains, an FSDP unit."""
    fsdp = _fsdp_class()
    return fsdp is not None and any(isinstance(m, fsdp) for m in module.modules())


def fsdp_wrap(model: nn.Module, device_id: Any = None, mixed_precision: Any = None, **fsdp_kwargs) -> nn.Module:
    """Shard ``model`` with FSDP, one unit per LC layer (plus the root for the rest).

    Args:
        model: an LC model (any module containing LocallyConnected2d layers), on CPU or already on its device.
        device_id: the rank's device (``torch.cuda.current_device()``; ``torch.device('cpu')`` with gloo).
        mixed_precision: a ``torch.distributed.fsdp.MixedPrecision`` (e.g. bf16 parameters, fp32 reduce).
        fsdp_kwargs: passed to ``FullyShardedDataParallel`` (``use_orig_params`` defaults to True, so the
            LC layers keep their ``weight`` attribute and the optimizer sees the original parameters).
    Returns:
        the FSDP-wrapped model. Needs an initialized process group.
    """
    fsdp = _fsdp_class()
    if fsdp is None:
        raise RuntimeError('this torch build has no torch.distributed.fsdp; install a torch with distributed support')
    if not torch.distributed.is_initialized():
        raise RuntimeError('fsdp_wrap needs an initialized process group: call torch.distributed.init_process_group '
                           "('nccl' on GPUs, 'gloo' on CPU) first, e.g. under torchrun")
    if not any(isinstance(m, LocallyConnected2d) for m in model.modules()):
        raise ValueError(f'{type(model).__name__} has no LocallyConnected2d layer; wrap it with FSDP directly')
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    kwargs: Dict[str, Any] = dict(auto_wrap_policy=ModuleWrapPolicy({LocallyConnected2d}), use_orig_params=True)
    if device_id is not None:
        kwargs['device_id'] = device_id
    if mixed_precision is not None:
        kwargs['mixed_precision'] = mixed_precision
    kwargs.update(fsdp_kwargs)
    return fsdp(model, **kwargs)


def _owners(module: nn.Module) -> Dict[nn.Module, nn.Module]:
    """Each submodule -> the innermost FSDP unit that holds its parameters."""
    fsdp = _fsdp_class()
    owner: Dict[nn.Module, nn.Module] = {}
    for unit in fsdp.fsdp_modules(module):  # outer units first, so inner ones overwrite
        for sub in unit.modules():
            owner[sub] = unit
    return owner


def gathered_lc_layers(module: nn.Module) -> Iterator[LocallyConnected2d]:
    """Every LC layer of ``module`` in ``lc_layers`` order; with FSDP, each comes with its full weight
    gathered from the shards, and what the caller writes to it goes back to the shards when the iteration
    moves on. Collective under FSDP: every rank must iterate, in the same order, to the end."""
    layers = [layer for layer in module.modules() if isinstance(layer, LocallyConnected2d)]
    if not is_fsdp(module):
        yield from layers
        return
    fsdp = _fsdp_class()
    owner = _owners(module)
    for layer in layers:
        unit: Optional[nn.Module] = owner.get(layer)
        context = (fsdp.summon_full_params(unit, recurse=False, writeback=True) if unit is not None
                   else contextlib.nullcontext())
        with context:
            yield layer
