"""Data-parallel training under torchrun: rank and world size, sums over ranks, BatchNorm statistics kept equal,
and a check that every rank ends with the same weights."""
from __future__ import annotations

import os
from typing import List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from timm.utils import distribute_bn

from ..errors import UserRuntimeError

__all__ = ['DistInfo', 'sync_batchnorm', 'ranks_identical']


def _env_int(name: str, default: int, lowest: int) -> int:
    """An integer from torchrun's environment; a malformed value is a user error naming the variable."""
    text = os.environ.get(name, '').strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = lowest - 1
    if value < lowest:
        raise UserRuntimeError(f'environment variable {name}={text!r} must be an integer >= {lowest}; torchrun sets '
                               f'it, so unset it to run one process')
    return value


class DistInfo:
    """Rank / world size from torchrun's environment, and the process group's set-up and tear-down."""

    def __init__(self) -> None:
        self.world_size = _env_int('WORLD_SIZE', 1, 1)
        self.rank = _env_int('RANK', 0, 0)
        self.local_rank = _env_int('LOCAL_RANK', 0, 0)
        self.enabled = self.world_size > 1
        if self.enabled and not dist.is_initialized():
            missing = [name for name in ('MASTER_ADDR', 'MASTER_PORT') if not os.environ.get(name)]
            if missing:
                raise UserRuntimeError(
                    f'WORLD_SIZE={self.world_size} asks for {self.world_size} processes, but {" and ".join(missing)} '
                    'is not set: start the run with torchrun (torchrun --nproc_per_node N -m bioconv_timm.train ...), '
                    'or unset WORLD_SIZE for one process')
        if self.rank >= self.world_size:
            raise UserRuntimeError(f'RANK={self.rank} must be below WORLD_SIZE={self.world_size}; start the run with '
                                   'torchrun, which sets both')
        self._owned = False
        if self.enabled and not dist.is_initialized():
            backend = 'nccl' if torch.cuda.is_available() else 'gloo'
            dist.init_process_group(backend=backend)
            self._owned = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: List[float], device: torch.device) -> List[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self._owned:
            dist.destroy_process_group()


def sync_batchnorm(model: nn.Module, dist_info: DistInfo) -> None:
    """Give every rank rank 0's BatchNorm statistics (timm's ``distribute_bn``). DDP does this before each training
    forward; the last batch of an epoch, a final sleep or a BN refresh leave them rank-local."""
    if dist_info.enabled:
        distribute_bn(model, dist_info.world_size, reduce=False)


def ranks_identical(model: nn.Module, dist_info: DistInfo, device: torch.device) -> Optional[bool]:
    """Under DDP, whether every rank holds bit-identical parameters and buffers (None without DDP)."""
    if not dist_info.enabled:
        return None
    # an exact fingerprint: the float64 sum of each tensor's bit pattern read as integers
    parts = [t.detach().reshape(-1).view(torch.int32 if t.element_size() == 4 else torch.int64).double().sum()
             for t in model.state_dict().values() if t.dtype.is_floating_point and t.element_size() in (4, 8)]
    mine = torch.stack(parts).to(device)
    gathered = [torch.empty_like(mine) for _ in range(dist_info.world_size)]
    dist.all_gather(gathered, mine)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])
