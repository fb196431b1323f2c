"""Training checkpoints: timm's ``CheckpointSaver`` writing everything an exact resume needs.

``last.pth`` is written every epoch (to a temporary file, then ``os.replace``: never half a file) and
``model_best.pth`` / ``checkpoint-<epoch>.pth`` are hard links to the best epoch's (timm's names and
bookkeeping). A checkpoint holds the model, optimizer, scheduler, scaler, EMA and sleep-hook state, the RNG
states, the run's config and its logs so far; it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import torch
from timm.utils import CheckpointSaver

from .config import RESUMABLE_CHANGES, CheckpointError, TrainConfig, config_differences, format_differences

__all__ = ['CHECKPOINT_VERSION', 'RunCheckpointSaver', 'load_checkpoint', 'check_compatible', 'refuse_existing_run',
           'rng_state', 'set_rng_state']

CHECKPOINT_VERSION = 1
RUN_FILES = ('last.pth', 'result.json', 'model.safetensors', 'metrics.csv')  # what marks a folder as holding a run


class RunCheckpointSaver(CheckpointSaver):
    """timm's saver with our checkpoint contents: ``state_fn()`` returns the dict to save (it is called once per
    save, after the epoch's metrics are known), to which the saver adds its own bookkeeping (``'saver'``)."""

    def __init__(self, run_dir: Path, state_fn: Callable[[], Dict[str, Any]], max_history: int = 1) -> None:
        super().__init__(model=None, optimizer=None, checkpoint_dir=str(run_dir), recovery_dir=str(run_dir),
                         decreasing=False, max_history=max_history)
        self.extension = '.pth'
        self.state_fn = state_fn

    def _save(self, save_path: str, epoch: int, metric: Any = None) -> None:
        state = self.state_fn()
        state['saver'] = self.state_dict(epoch, metric)
        torch.save(state, save_path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """A checkpoint's contents (tensors on the CPU), read without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or not loadable safely
        raise CheckpointError(
            f'cannot read checkpoint {path}: {exc}. It may be truncated or not a bioconv checkpoint; '
            f'remove it (or point --output-dir elsewhere) to start a fresh run.') from exc


def check_compatible(ckpt: Dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Raise CheckpointError unless ``ckpt`` was written by a run with ``cfg``'s settings (only
    ``RESUMABLE_CHANGES`` may differ)."""
    if ckpt.get('version') != CHECKPOINT_VERSION:
        raise CheckpointError(f'{path} is not a bioconv training checkpoint (version {ckpt.get("version")!r})')
    diff = config_differences(ckpt['config'], cfg, RESUMABLE_CHANGES)
    if diff:
        raise CheckpointError(
            f'{path} was written by a different run ({format_differences(diff)}). Resume with the same '
            'settings, or use another --output-dir for a new run.')


def refuse_existing_run(out_dir: Path) -> None:
    """A new run never overwrites an earlier one's checkpoints, weights or metrics."""
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if found:
        raise CheckpointError(
            f'{out_dir} already holds a run ({", ".join(found)}); nothing was overwritten. Pass --resume '
            '(TrainConfig.resume=True) to continue it, or --output-dir NEW_FOLDER to start a new run.')


def rng_state() -> Dict[str, Any]:
    """torch, NumPy, Python (and CUDA) RNG states as tensors and lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = dict(torch=torch.get_rng_state(), numpy_keys=torch.from_numpy(np_state[1].astype(np.int64)),
                 numpy_pos=int(np_state[2]), python=list(map(int, random.getstate()[1])))
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    np.random.set_state(('MT19937', state['numpy_keys'].numpy().astype(np.uint32), state['numpy_pos'], 0, 0.0))
    random.setstate((3, tuple(state['python']), None))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
