"""Sharding LC models over several devices with FSDP2 (``fully_shard``), the sleep phase included.

An LC layer's weight, its gradient and AdamW's two moments take 16 bytes per parameter: 7.7 GB for the
483M-parameter ``lc_resnet18_half``, four times that at full width. When that does not fit one device,
shard it: :func:`fsdp_wrap` applies ``torch.distributed.fsdp.fully_shard`` to every
:class:`~bioconv_timm.layers.LocallyConnected2d` (one FSDP unit per LC layer) and then to the model (the root
unit holds the rest: batch norms, the classifier, conv layers). Each of N ranks holds 1/N of every LC layer's
weights, gradients and optimizer state, and only one LC layer is gathered at a time in forward and backward.

FSDP2 keeps each parameter as a ``DTensor`` sharded along its first dim (an LC weight's output rows; the rows
need not divide by N) between steps; the optimizer (and its moments) see those DTensors.

The sleep needs whole layers (a module's locations span the shards). :func:`gathered_lc_layers` yields every
LC layer with its full weight and bias gathered from the shards (``DTensor.full_tensor()``, one layer at a
time, put in the layer's place for the duration), and writes each rank's slice of what the caller left there
back into the rank's shard (``to_local().copy_``, under no_grad) when the iteration moves on. The instant and
Hebbian sleeps (:func:`~bioconv_timm.sleep.share_weights_`, :func:`~bioconv_timm.sleep.hebbian.hebbian_share_weights_`)
use it, so they work unchanged on a sharded model; :func:`gathered_tensor` does the same for one tensor (the
``SleepHook`` uses it to average AdamW moments). Both are collective: every rank must call them at the same
step, between optimizer steps (not between forward and backward), in the same order.

Use it from your own torchrun loop (``bioconv train`` uses DDP, which replicates the model)::

    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy
    dist.init_process_group('nccl')                      # 'gloo' on CPU
    model = fsdp_wrap(timm.create_model('lc_resnet18_half_ws10'), device_id=torch.cuda.current_device(),
                      mixed_precision=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step, (x, y) in enumerate(loader, 1):            # a DistributedSampler per rank
        loss = F.cross_entropy(model(x), y); loss.backward(); optimizer.step(); optimizer.zero_grad()
        if step % 10 == 0:
            bioconv_timm.share_weights_(model)           # the sleep, on every rank

Models wrapped with FSDP1 (``FullyShardedDataParallel``) are refused by the sleep: their LC weights are views
into flat shards, which the sleep cannot read whole; wrap with :func:`fsdp_wrap` instead.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
import torch.nn as nn

from .layers import LocallyConnected2d

__all__ = ['fsdp_wrap', 'is_fsdp', 'is_fsdp_unit', 'gathered_lc_layers', 'gathered_tensor', 'check_not_fsdp1',
           'estimate_model_bytes']

# FSDP2 warns for every unit whose output is a view, because an in-place op on it would drop FSDP's
# pre-backward hook. An LC layer's output is a view only with the native backend, and autograd refuses any
# in-place op on that view (it comes out of a custom Function), so the case the warning guards against
# raises an error instead of going wrong silently; the warning is filtered for LC units only.
_LC_VIEW_WARNING = r'FSDP2-wrapped module \(FSDPLocallyConnected2d\) returned a view tensor'


def _fsdp2():
    """(fully_shard, FSDPModule, MixedPrecisionPolicy), or None where this torch has no public FSDP2."""
    try:
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
    except ImportError:  # torch < 2.6, or built without distributed support
        return None
    return fully_shard, FSDPModule, MixedPrecisionPolicy


def _dtensor_class():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return None
    return DTensor


def _fsdp1_class():
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:
        return None
    return FullyShardedDataParallel


def is_fsdp_unit(module: nn.Module) -> bool:
    """True if ``module`` itself was sharded with ``fully_shard`` (an FSDP2 unit)."""
    api = _fsdp2()
    return api is not None and isinstance(module, api[1])


def is_fsdp(module: nn.Module) -> bool:
    """True if ``module`` is, or contains, an FSDP2 unit."""
    api = _fsdp2()
    return api is not None and any(isinstance(m, api[1]) for m in module.modules())


def check_not_fsdp1(module: nn.Module) -> None:
    """Raise a TypeError if ``module`` is, or contains, an FSDP1 ``FullyShardedDataParallel`` wrapper."""
    fsdp1 = _fsdp1_class()
    if fsdp1 is not None and any(isinstance(m, fsdp1) for m in module.modules()):
        raise TypeError('this model is wrapped with FSDP1 (FullyShardedDataParallel), whose LC weights are views '
                        'into flat shards that the sleep cannot gather; shard it with '
                        'bioconv_timm.sharding.fsdp_wrap (FSDP2, torch.distributed.fsdp.fully_shard) instead')


def _default_device() -> torch.device:
    if torch.distributed.get_backend() != 'gloo' and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def fsdp_wrap(model: nn.Module, device_id: Any = None, mixed_precision: Any = None, mesh: Any = None,
              **fully_shard_kwargs) -> nn.Module:
    """Shard ``model`` with FSDP2, one ``fully_shard`` unit per LC layer plus the root for the rest.

    Args:
        model: an LC model (any module containing LocallyConnected2d layers), on CPU or already on its device.
        device_id: the rank's device (``torch.cuda.current_device()``, ``'cuda:1'``; ``torch.device('cpu')``
            with gloo). Default: the current CUDA device, or the CPU under gloo or without CUDA. Parameters
            are moved there.
        mixed_precision: a ``torch.distributed.fsdp.MixedPrecisionPolicy`` (e.g. bf16 parameters, fp32
            reduce); the sharded parameters, and so the optimizer and the sleep, stay in fp32.
        mesh: a 1-D (FSDP) or 2-D (HSDP) ``DeviceMesh``; default: all ranks on ``device_id``'s device type.
        fully_shard_kwargs: passed to ``fully_shard`` (``reshard_after_forward``, ``offload_policy``, ...).
    Returns:
        ``model`` itself, sharded in place (its class becomes FSDP<class>). Needs an initialized process group.
    """
    api = _fsdp2()
    if api is None:
        raise RuntimeError(f'fsdp_wrap needs FSDP2 (torch.distributed.fsdp.fully_shard, torch >= 2.6 with '
                           f'distributed support); this torch is {torch.__version__}')
    fully_shard, _, policy_class = api
    layers = [m for m in model.modules() if isinstance(m, LocallyConnected2d)]
    if not layers:
        raise ValueError(f'{type(model).__name__} has no LocallyConnected2d layer; shard it with fully_shard directly')
    if mixed_precision is not None and not isinstance(mixed_precision, policy_class):
        raise TypeError(f'mixed_precision must be a torch.distributed.fsdp.MixedPrecisionPolicy (FSDP2), got '
                        f'{type(mixed_precision).__name__}; e.g. MixedPrecisionPolicy(param_dtype=torch.bfloat16, '
                        'reduce_dtype=torch.float32)')
    check_not_fsdp1(model)
    if not torch.distributed.is_initialized():
        raise RuntimeError('fsdp_wrap needs an initialized process group: call torch.distributed.init_process_group '
                           "('nccl' on GPUs, 'gloo' on CPU) first, e.g. under torchrun")
    if mesh is None:
        device = torch.device('cuda', device_id) if isinstance(device_id, int) else (
            torch.device(device_id) if device_id is not None else _default_device())
        if device.type == 'cuda' and device.index is not None:
            torch.cuda.set_device(device)  # FSDP2 places the shards on the current CUDA device
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    kwargs: Dict[str, Any] = dict(mesh=mesh, **fully_shard_kwargs)
    if mixed_precision is not None:
        kwargs['mp_policy'] = mixed_precision
    warnings.filterwarnings('ignore', message=_LC_VIEW_WARNING, category=UserWarning)
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _write_back(param: Any, full: torch.Tensor) -> None:
    """Copy this rank's slice of ``full`` (the whole tensor) into the local shard of DTensor ``param``."""
    from torch.distributed.tensor import distribute_tensor
    local = param.to_local()
    # src_data_rank=None: split locally, by the placements' own rule (no communication)
    piece = distribute_tensor(full.detach(), param.device_mesh, param.placements, src_data_rank=None).to_local()
    local.copy_(piece.to(device=local.device, dtype=local.dtype))


@contextlib.contextmanager
def gathered_tensor(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """The whole of ``tensor`` to modify in place: ``tensor`` itself if it is a plain tensor; for a DTensor
    (a sharded parameter, or an optimizer moment of one), its full value gathered from the shards, whose
    changes go back to this rank's shard on exit. Collective for a DTensor (every rank, same order)."""
    dtensor = _dtensor_class()
    if dtensor is None or not isinstance(tensor, dtensor):
        yield tensor
        return
    with torch.no_grad():
        full = tensor.full_tensor()
    try:
        yield full
    finally:
        with torch.no_grad():
            _write_back(tensor, full)


def gathered_lc_layers(module: nn.Module) -> Iterator[LocallyConnected2d]:
    """Every LC layer of ``module`` in ``lc_layers`` order; when its weight and bias are sharded (FSDP2
    DTensors), the layer comes with them gathered whole, and what the caller writes to them goes back to the
    shards when the iteration moves on. Collective under FSDP2: every rank must iterate, in the same order,
    to the end, between optimizer steps. Raises a TypeError on an FSDP1 model."""
    check_not_fsdp1(module)
    dtensor = _dtensor_class()
    for layer in [m for m in module.modules() if isinstance(m, LocallyConnected2d)]:
        sharded = {name: p for name, p in layer.named_parameters(recurse=False)
                   if dtensor is not None and isinstance(p, dtensor)}
        if not sharded:
            yield layer
            continue
        with torch.no_grad():
            whole = {name: nn.Parameter(p.full_tensor(), requires_grad=p.requires_grad) for name, p in sharded.items()}
        for name, p in whole.items():  # the layer shows whole tensors while the caller holds it
            setattr(layer, name, p)
        try:
            yield layer
        finally:
            with torch.no_grad():
                for name, p in sharded.items():
                    setattr(layer, name, p)  # FSDP2's own DTensor parameters go back in place
                    _write_back(p, whole[name])


def estimate_model_bytes(params: int, batch: int, img_size: Tuple[int, int], amp: Optional[str] = None) -> int:
    """Rough estimate (bytes) of a training step: fp32 parameters, gradients and two AdamW moments, the
    autocast copy of the weights, and ~150 activation values per input value (ResNets keep ~60-130)."""
    act_bytes = 2 if amp else 4
    weights = params * (16 + (act_bytes if amp else 0))
    acts = batch * 3 * img_size[0] * img_size[1] * 150 * act_bytes
    return int(1.25 * (weights + acts))
