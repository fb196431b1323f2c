"""Training checkpoints: timm's ``CheckpointSaver`` bookkeeping, our writes, and finding what a resume starts from.

``last.pth`` is written every epoch and ``model_best.pth`` / ``checkpoint-<epoch>.pth`` are hard links to the
best epoch's (timm's names and history bookkeeping). Every write is ours (``bioconv_timm._atomic``): a unique
temporary file, fsynced, then ``os.replace`` over the old one; timm's saver would unlink ``last.pth`` and
``model_best.pth`` before renaming or linking the new ones, and a kill in between lost them. A checkpoint holds the
model, optimizer, scheduler, scaler, EMA and sleep-hook state, the RNG states, the run's config and its logs so
far; it loads with ``torch.load(weights_only=True)``.

:func:`find_resume_checkpoint` is what ``--resume`` starts from: ``last.pth``, or, when that is missing, the newest
complete checkpoint it can verify; a folder that holds a run but nothing to resume from is refused, never
restarted over.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from timm.utils import CheckpointSaver

from .._atomic import duplicate_file, replace_file, save_torch
from ..run_folder import MARKER_NAME, ForeignFolderError, foreign_entries, is_run_folder
from .config import RESUMABLE_CHANGES, CheckpointError, TrainConfig, config_differences, format_differences

__all__ = ['CHECKPOINT_VERSION', 'RunCheckpointSaver', 'load_checkpoint', 'check_compatible', 'refuse_existing_run',
           'refuse_foreign_folder', 'find_resume_checkpoint', 'run_files', 'rng_state', 'set_rng_state']

CHECKPOINT_VERSION = 1
# what a run writes (besides config.json, which a user may have a file of their own called): by these, a folder
# written before the run marker existed is still known as a run
RUN_FILES = ('last.pth', 'result.json', 'model.safetensors', 'metrics.csv', 'model_best.pth', 'tmp.pth')
_EPOCH_FILE = re.compile(r'checkpoint-(\d+)\.pth')
_CHECKPOINT_KEYS = ('version', 'epoch', 'config', 'model', 'optimizer', 'scheduler', 'sleep', 'rng', 'history',
                    'best_top1')


class RunCheckpointSaver(CheckpointSaver):
    """timm's saver with our checkpoint contents and our writes: ``state_fn()`` returns the dict to save (it is
    called once per save, after the epoch's metrics are known), to which the saver adds its own bookkeeping
    (``'saver'``). Files are replaced atomically (never unlinked first) and survive a power cut (fsync)."""

    def __init__(self, run_dir: Path, state_fn: Callable[[], Dict[str, Any]], max_history: int = 1) -> None:
        super().__init__(model=None, optimizer=None, checkpoint_dir=str(run_dir), recovery_dir=str(run_dir),
                         decreasing=False, max_history=max_history)
        self.extension = '.pth'
        self.state_fn = state_fn
        self.last_epoch: Optional[int] = None  # the epoch (0-based) that last.pth holds
        self._written_epoch: Optional[int] = None

    def _save(self, save_path: str, epoch: int, metric: Any = None) -> None:
        state = self.state_fn()
        state['saver'] = self.state_dict(epoch, metric)
        save_torch(state, save_path)
        self._written_epoch = epoch

    def _replace(self, src: str, dst: str) -> None:
        replace_file(src, dst)  # timm unlinks dst first (for Windows); os.replace needs no help on POSIX
        if Path(dst).name == 'last' + self.extension:
            self.last_epoch = self._written_epoch

    def _duplicate(self, src: str, dst: str) -> None:
        duplicate_file(src, dst)


def load_checkpoint(path: Path, mmap: bool = False) -> Dict[str, Any]:
    """A checkpoint's contents (tensors on the CPU), read without unpickling arbitrary objects; ``mmap`` maps
    the tensors instead of reading them (cheap: for looking at a checkpoint's metadata)."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
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


def run_files(out_dir: Path) -> List[str]:
    """The files of a run in ``out_dir`` (checkpoints, weights, metrics, result), sorted; [] for none."""
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if p.name in RUN_FILES or _EPOCH_FILE.fullmatch(p.name))


def refuse_existing_run(out_dir: Path) -> None:
    """A new run never overwrites an earlier one's checkpoints, weights or metrics."""
    found = run_files(out_dir)
    if found or is_run_folder(out_dir):
        listed = ', '.join(found or foreign_entries(out_dir) or [MARKER_NAME])
        raise CheckpointError(
            f'{out_dir} already holds a run ({listed}); nothing was overwritten. Pass --resume '
            '(TrainConfig.resume=True) to continue it, or --output-dir NEW_FOLDER to start a new run.')


def refuse_foreign_folder(out_dir: Path) -> None:
    """A folder is a run's only by the files we wrote: refuse one that holds anything else and is not a run."""
    if is_run_folder(out_dir) or run_files(out_dir):
        return
    foreign = foreign_entries(out_dir)
    if foreign:
        shown = ', '.join(foreign[:5]) + (f' and {len(foreign) - 5} more' if len(foreign) > 5 else '')
        raise ForeignFolderError(
            f'{out_dir} is not empty and was not written by bioconv train (it holds {shown}); nothing was '
            'written there. Choose a new or empty --output-dir.')


def _verified(path: Path) -> Tuple[Optional[Dict[str, Any]], str]:
    """(the checkpoint, '') when ``path`` is a complete checkpoint of ours, else (None, what is wrong)."""
    try:
        ckpt = load_checkpoint(path, mmap=True)
    except CheckpointError as exc:
        return None, f'{path.name} cannot be read ({str(exc.__cause__ or exc).splitlines()[0][:80]})'
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _CHECKPOINT_KEYS):
        return None, f'{path.name} is not a complete bioconv checkpoint'
    if ckpt['version'] != CHECKPOINT_VERSION:
        return None, f'{path.name} has checkpoint version {ckpt["version"]!r}'
    return ckpt, ''


def find_resume_checkpoint(out_dir: Path, cfg: TrainConfig) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """What ``--resume`` continues from: ``(path, checkpoint)``, or None when ``out_dir`` holds no run yet.

    ``last.pth`` when it exists (refused when unreadable or from other settings). Without it, the newest of
    ``tmp.pth``, ``checkpoint-<epoch>.pth`` and ``model_best.pth`` that loads and is complete, checked against
    ``cfg`` like ``last.pth``.

    Raises:
        CheckpointError: a checkpoint from other settings, an unreadable ``last.pth``, or a folder that holds a
            run (weights, metrics, result or checkpoints) but no checkpoint that can be resumed.
    """
    last = out_dir / 'last.pth'
    if last.exists():
        ckpt = load_checkpoint(last)
        check_compatible(ckpt, cfg, last)
        return last, ckpt
    candidates = [out_dir / name for name in run_files(out_dir)
                  if name in ('tmp.pth', 'model_best.pth') or _EPOCH_FILE.fullmatch(name)]
    found: List[Tuple[int, Path, Dict[str, Any]]] = []
    problems = []
    for path in candidates:
        ckpt, problem = _verified(path)
        if ckpt is None:
            problems.append(problem)
        else:
            found.append((int(ckpt['epoch']), path, ckpt))
    if found:
        _, path, _ = max(found, key=lambda f: f[0])
        ckpt = load_checkpoint(path)  # read whole (the scan mapped the files)
        check_compatible(ckpt, cfg, path)
        return path, ckpt
    results = run_files(out_dir)
    if results:
        why = '; '.join(problems) if problems else 'no checkpoint file is left'
        raise CheckpointError(
            f'{out_dir} holds a run ({", ".join(results)}) but nothing to resume from: last.pth is missing and '
            f'{why}. Nothing was changed; train again into a new --output-dir (or remove this folder).')
    return None


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
