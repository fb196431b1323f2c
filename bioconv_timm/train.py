"""Training with the sleep phase, built from timm's components.

``train(TrainConfig(...)) -> TrainResult`` is the API; ``bioconv train`` and
``torchrun --nproc_per_node=K -m bioconv_timm.train ...`` call it. What timm gives us: create_model,
create_optimizer_v2 (AdamW), create_scheduler_v2 ('multistep', the paper's lr / 4 at epochs 100 and
150 of 200), NativeScaler (AMP on CUDA), ModelEmaV3, accuracy, AverageMeter. What we add: the sleep
hook (``SleepHook``, an optimizer step post-hook), per-layer weight SNR logging, atomic checkpoints
with exact resume, and the run folder.

Run folder: ``metrics.csv`` (one row per epoch), ``snr.csv`` (per-layer weight SNR, per epoch),
``sleeps.csv`` (every sleep: optimizer step and the mean -log SNR just before and after),
``last.pth`` / ``best.pth`` (atomic checkpoints), ``model.safetensors`` (final weights),
``config.json``, ``curves.png``.

Reproducibility: every epoch re-seeds torch/numpy/random from (seed, epoch) and the data order comes
from the same pair, so a run resumed from an epoch checkpoint ends with the same weights as an
uninterrupted one (on CPU, same seed).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import timm
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import AverageMeter, ModelEmaV3, NativeScaler, accuracy

from . import models as _models  # noqa: F401  (registers the models)
from .layers import LocallyConnected2d
from .sleep import lc_layers, weight_snr
from .sleep_hook import OPTIMIZER_POLICIES, SLEEP_MODES, SleepHook

__all__ = ['TrainConfig', 'TrainResult', 'train', 'default_lr', 'CheckpointError', 'ConfigError', 'add_train_args',
           'config_from_args', 'resolve_config', 'finished_run', 'config_differences', 'RESULT_NEUTRAL_FIELDS', 'RESUMABLE_CHANGES']

CHECKPOINT_VERSION = 1
_DEFAULT_BATCH = {'digits': 64, 'fashion-mnist': 128, 'cifar10': 512, 'cifar100': 512, 'tinyimagenet': 512,
                  'imagenet': 256}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed (corrupt, or from another model/configuration), or a run folder
    that already holds another run."""


class ConfigError(ValueError):
    """A setting the user can fix (unknown model, bad number, a model kwarg the dataset already fixes)."""


@dataclass
class TrainConfig:
    """Everything a run needs. ``None`` means "the documented default"."""
    model: str = 'lc_resnet20_ws10'
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm.create_model args, e.g. layers, stem_stride
    dataset: str = 'digits'
    data_dir: Optional[str] = None
    download: bool = False
    split: str = 'test'                 # 'val': tune on a held-out part of train; 'test': final numbers
    pad: int = 4                        # pad with the training mean, then random-crop (paper 0 / 4 / 8)
    reps: int = 1                       # n translated copies of each image per batch ("n reps")
    train_subset: Optional[int] = None
    eval_subset: Optional[int] = None
    val_size: Optional[int] = None
    epochs: int = 200
    eval_every: int = 1                 # evaluate every N epochs (and always after the last)
    batch_size: Optional[int] = None    # default per dataset: 512 CIFAR/TinyImageNet, 256 ImageNet, 64 digits
    lr: Optional[float] = None          # default: default_lr(model)
    weight_decay: float = 1e-2
    opt: str = 'adamw'
    lr_milestones: Optional[Tuple[int, ...]] = None  # default: 50% and 75% of epochs (paper: 100, 150 of 200)
    lr_decay: float = 0.25              # paper: lr divided by 4 at each milestone
    ws_lr_scale: float = 1.0            # multiplies lr for models that sleep
    drop_rate: float = 0.0
    sleep_every: Optional[int] = None   # default: the model's sleep_every; 0 disables
    sleep_mode: str = 'instant'
    sleep_optimizer: str = 'keep'       # keep | average | reset the AdamW moments of LC weights at sleep
    final_sleep: bool = False           # one more sleep after the last step, before the final evaluation
    refresh_bn: bool = False            # recompute BatchNorm statistics after that final sleep
    amp: Optional[bool] = None          # default: on for CUDA
    amp_dtype: str = 'bfloat16'
    device: Optional[str] = None        # default: cuda (local rank) if available, else cpu
    channels_last: bool = True
    ema: bool = False
    ema_decay: float = 0.9998
    seed: int = 0
    num_workers: int = 0
    output_dir: Optional[str] = None    # default: runs/<model>-<dataset>-seed<seed>
    resume: bool = False                # continue from output_dir/last.pth when it exists
    progress: Optional[bool] = None     # tqdm bars; default: when stderr is a terminal
    snr_at_sleep: Optional[bool] = None  # log -log SNR before/after every sleep (sleeps.csv); default: period >= 10

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# TrainConfig fields that never change what a run computes: where it runs and what it prints.
RESULT_NEUTRAL_FIELDS = frozenset({'data_dir', 'download', 'device', 'num_workers', 'output_dir', 'resume',
                                   'progress', 'eval_every', 'snr_at_sleep'})
# ... and those a resumed run may also change: training longer, or a different post-training evaluation.
RESUMABLE_CHANGES = RESULT_NEUTRAL_FIELDS | {'epochs', 'final_sleep', 'refresh_bn'}


def config_differences(saved: Dict[str, Any], config: 'TrainConfig',
                       allowed: frozenset = RESULT_NEUTRAL_FIELDS) -> Dict[str, Tuple[Any, Any]]:
    """``{field: (saved value, new value)}`` for every TrainConfig field outside ``allowed`` that differs.

    ``saved`` is a run's stored config (config.json or a checkpoint's); ``config`` should be resolved
    (:func:`resolve_config`) so that defaults compare as the values they stand for. A field missing from
    ``saved`` (written by an older version) counts as its default.
    """
    defaults = TrainConfig().to_dict()
    wanted = config.to_dict()
    diff = {}
    for name in wanted:
        if name in allowed:
            continue
        before = saved.get(name, defaults[name])
        if json.dumps(before, sort_keys=True) != json.dumps(wanted[name], sort_keys=True):
            diff[name] = (before, wanted[name])
    return diff


def format_differences(diff: Dict[str, Tuple[Any, Any]]) -> str:
    return ', '.join(f'{k}: {a!r} there vs {b!r} now' for k, (a, b) in diff.items())


@dataclass
class TrainResult:
    output_dir: str
    epochs: int
    steps: int
    sleeps: int
    final: Dict[str, float]             # final evaluation: loss, top1, top5 (after final sleep if asked)
    best_top1: float
    history: List[Dict[str, Any]] = field(default_factory=list)
    weights_path: Optional[str] = None


def default_lr(model_name: str, dataset: str = 'cifar10') -> float:
    """Paper's CIFAR10 (pad 4, table 11) learning rates: conv 1e-2, LC 1e-3 (ws(1) 1e-3, ws(10)/ws(100) 5e-4)."""
    if model_name.startswith('conv_'):
        return 1e-2
    sleep = _models._parse_variant(model_name)[3]
    return 5e-4 if sleep and sleep >= 10 else 1e-3


# --- small helpers --------------------------------------------------------------------------

def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank) % (2 ** 31)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + '.tmp')
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_csv(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    if not rows:
        return
    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _neg_log_snr(model: nn.Module) -> Dict[str, Optional[float]]:
    """-log SNR (eq. 6) per LC layer; -inf for a perfectly shared layer, None where the SNR is undefined
    (every module of the layer holds a single location, e.g. a 1x1 output map: no variance to measure).
    Undefined layers are logged as empty cells and left out of the means."""
    out: Dict[str, Optional[float]] = {}
    for name, layer in lc_layers(model):
        snr = weight_snr(layer)
        out[name] = None if math.isnan(snr) else (-math.log(snr) if snr > 0 else math.inf)
    return out


def _mean_defined(values: Sequence[Optional[float]]) -> Any:
    """Mean of the defined values ('' when there are none, an empty CSV cell)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else ''


def _is_tty() -> bool:
    return sys.stderr.isatty()


class _Dist:
    """Rank / world size, and process-group set-up under torchrun."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        self.enabled = self.world_size > 1
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


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, milestones: Sequence[int], decay: float):
    """timm multistep schedule; ``scheduler.step(e)`` at the start of epoch e (0-based) sets its lr.

    The lr is multiplied by ``decay`` after ``m`` epochs for every milestone m (paper: / 4 after 100 and
    150 of 200 epochs). timm's MultiStepLRScheduler compares milestones with t + 1, i.e. acts one epoch
    earlier than torch's MultiStepLR, so it is given m + 1.
    """
    shifted = [int(m) + 1 for m in milestones] or [epochs + 2]
    scheduler, _ = create_scheduler_v2(optimizer, sched='multistep', num_epochs=epochs, decay_milestones=shifted,
                                       decay_rate=decay, warmup_epochs=0)
    return scheduler


# --- the run --------------------------------------------------------------------------------

def _resolve(config: TrainConfig, model_sleep_every: Optional[int]) -> TrainConfig:
    cfg = dataclasses.replace(config)
    if cfg.batch_size is None:
        cfg.batch_size = _DEFAULT_BATCH.get(cfg.dataset, 128)
    if cfg.sleep_every is None:
        cfg.sleep_every = model_sleep_every or 0
    if cfg.lr is None:
        cfg.lr = default_lr(cfg.model, cfg.dataset)
    if cfg.sleep_every:
        cfg.lr *= cfg.ws_lr_scale
    if cfg.lr_milestones is None:
        cfg.lr_milestones = (cfg.epochs // 2, (3 * cfg.epochs) // 4) if cfg.epochs >= 4 else ()
    cfg.lr_milestones = tuple(int(m) for m in cfg.lr_milestones)
    if cfg.output_dir is None:
        cfg.output_dir = str(Path('runs') / f'{cfg.model}-{cfg.dataset}-seed{cfg.seed}')
    return cfg


# create_model arguments the dataset (or another TrainConfig field) sets; model_kwargs may not repeat them
_DATASET_MODEL_ARGS = {'num_classes': 'the dataset', 'in_chans': 'the dataset', 'img_size': 'the dataset',
                       'drop_rate': '--drop-rate', 'pretrained': 'nothing (training starts from scratch)'}


def _validate(cfg: TrainConfig) -> None:
    if cfg.model not in timm.list_models():
        raise ConfigError(f'unknown model {cfg.model!r}; run `bioconv list` for the registered models')
    clash = sorted(set(cfg.model_kwargs) & set(_DATASET_MODEL_ARGS))
    if clash:
        raise ConfigError(f'model_kwargs may not set {", ".join(clash)}: it is set by '
                          f'{_DATASET_MODEL_ARGS[clash[0]]}; remove {clash[0]}=... from --model-kwargs')
    if cfg.epochs < 1:
        raise ConfigError(f'epochs must be >= 1, got {cfg.epochs}')
    if cfg.eval_every < 1:
        raise ConfigError(f'eval_every must be >= 1, got {cfg.eval_every}')
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError(f'batch_size must be >= 1, got {cfg.batch_size}')
    if cfg.reps < 1 or (cfg.batch_size and cfg.batch_size % cfg.reps):
        raise ConfigError(f'reps={cfg.reps} must be >= 1 and divide batch_size={cfg.batch_size}')
    if cfg.pad < 0:
        raise ConfigError(f'pad must be >= 0, got {cfg.pad}')
    if cfg.split not in ('val', 'test'):
        raise ConfigError(f"split must be 'val' or 'test', got {cfg.split!r}")
    if cfg.sleep_mode not in SLEEP_MODES:
        raise ConfigError(f'unknown sleep_mode {cfg.sleep_mode!r}; available: {sorted(SLEEP_MODES)}')
    if cfg.sleep_optimizer not in OPTIMIZER_POLICIES:
        raise ConfigError(f'sleep_optimizer must be one of {OPTIMIZER_POLICIES}, got {cfg.sleep_optimizer!r}')
    if cfg.amp_dtype not in ('float16', 'bfloat16'):
        raise ConfigError(f"amp_dtype must be 'float16' or 'bfloat16', got {cfg.amp_dtype!r}")


def _create_model(cfg: TrainConfig, **dataset_args: Any) -> nn.Module:
    try:
        return timm.create_model(cfg.model, **dataset_args, **cfg.model_kwargs)
    except TypeError as exc:  # an argument the model does not take
        raise ConfigError(f'{cfg.model} does not accept model_kwargs {cfg.model_kwargs}: {exc}') from exc


def resolve_config(config: TrainConfig) -> TrainConfig:
    """``config`` with its documented defaults filled in (batch size, lr, sleep period, milestones, folder),
    as the run folder's config.json will state them. Builds the model on the meta device (no memory)."""
    _validate(config)
    with torch.device('meta'):
        model = _create_model(config)
    return _resolve(config, getattr(model, 'sleep_every', None))


def finished_run(folder: Union[str, Path], config: TrainConfig) -> Optional[Dict[str, Any]]:
    """The ``result.json`` of the finished run in ``folder`` when it was trained with ``config``'s settings;
    None when the folder holds no finished run.

    Raises:
        CheckpointError: the folder holds a finished run trained with other settings (named in the message),
            or one whose settings cannot be read.
    """
    folder = Path(folder)
    result_path, config_path = folder / 'result.json', folder / 'config.json'
    if not result_path.exists():
        return None
    try:
        saved = json.loads(config_path.read_text())
        result = json.loads(result_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f'{folder} holds a finished run whose settings cannot be read ({exc}); use another '
                              'output folder, or remove that one to retrain it.') from exc
    diff = config_differences(saved, resolve_config(config))
    if diff:
        raise CheckpointError(f'{folder} holds a finished run with other settings ({format_differences(diff)}); '
                              'use another output folder (--output-dir) for these settings, or remove that folder '
                              'to retrain it.')
    return result


def _load_checkpoint(path: Path) -> Dict[str, Any]:
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or not loadable safely
        raise CheckpointError(
            f'cannot read checkpoint {path}: {exc}. It may be truncated or not a bioconv checkpoint; '
            f'remove it (or point --output-dir elsewhere) to start a fresh run.') from exc


def _check_compatible(ckpt: Dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    if ckpt.get('version') != CHECKPOINT_VERSION:
        raise CheckpointError(f'{path} is not a bioconv training checkpoint (version {ckpt.get("version")!r})')
    # every setting that changes what the run computes must match; only RESUMABLE_CHANGES may differ
    diff = config_differences(ckpt['config'], cfg, RESUMABLE_CHANGES)
    if diff:
        raise CheckpointError(
            f'{path} was written by a different run ({format_differences(diff)}). Resume with the same '
            'settings, or use another --output-dir for a new run.')


def _refuse_existing_run(out_dir: Path) -> None:
    """A new run never overwrites an earlier one's checkpoints, weights or metrics."""
    found = [name for name in ('last.pth', 'result.json', 'model.safetensors', 'metrics.csv')
             if (out_dir / name).exists()]
    if found:
        raise CheckpointError(
            f'{out_dir} already holds a run ({", ".join(found)}); nothing was overwritten. Pass --resume '
            '(TrainConfig.resume=True) to continue it, or --output-dir NEW_FOLDER to start a new run.')


def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    state = dict(torch=torch.get_rng_state(), numpy_keys=torch.from_numpy(np_state[1].astype(np.int64)),
                 numpy_pos=int(np_state[2]), python=list(map(int, random.getstate()[1])))
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    np.random.set_state(('MT19937', state['numpy_keys'].numpy().astype(np.uint32), state['numpy_pos'], 0, 0.0))
    random.setstate((3, tuple(state['python']), None))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _evaluate(model: nn.Module, loader, device: torch.device, amp_ctx, dist_info: _Dist,
              channels_last: bool, progress: bool, desc: str = 'eval') -> Dict[str, float]:
    from tqdm import tqdm
    model.eval()
    loss_sum = correct1 = correct5 = count = 0.0
    with torch.no_grad():
        for images, target in tqdm(loader, desc=desc, leave=False, disable=not progress):
            images, target = images.to(device), target.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with amp_ctx():
                output = model(images)
            output = output.float()
            loss_sum += F.cross_entropy(output, target, reduction='sum').item()
            k5 = min(5, output.shape[1])
            top1, top5 = accuracy(output, target, topk=(1, k5))
            correct1 += top1.item() * images.shape[0] / 100.0
            correct5 += top5.item() * images.shape[0] / 100.0
            count += images.shape[0]
    loss_sum, correct1, correct5, count = dist_info.all_sum([loss_sum, correct1, correct5, count], device)
    count = max(count, 1.0)
    return dict(loss=loss_sum / count, top1=100.0 * correct1 / count, top5=100.0 * correct5 / count)


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, loader, device: torch.device, channels_last: bool = True,
                      max_batches: Optional[int] = None) -> None:
    """Recompute BatchNorm running statistics (cumulative average) with the current weights."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for i, (images, _) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        model(images)
    for bn, m in zip(bns, momenta):
        bn.momentum = m


def _plot_curves(history: List[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    epochs = [r['epoch'] for r in history]
    has_snr = any(r.get('neg_log_snr') not in (None, '') for r in history)
    fig, axes = plt.subplots(1, 3 if has_snr else 2, figsize=(13 if has_snr else 9, 3.6))
    axes[0].plot(epochs, [r['train_loss'] for r in history], label='train')
    ev = [r for r in history if r['eval_top1'] != '']
    axes[0].plot([r['epoch'] for r in ev], [r['eval_loss'] for r in ev], label='eval', marker='.' if len(ev) < 3 else None)
    axes[0].set(xlabel='epoch', ylabel='cross-entropy', title='loss')
    axes[1].plot(epochs, [r['train_top1'] for r in history], label='train')
    axes[1].plot([r['epoch'] for r in ev], [r['eval_top1'] for r in ev], label='eval', marker='.' if len(ev) < 3 else None)
    axes[1].set(xlabel='epoch', ylabel='top-1 (%)', title='accuracy')
    for ax in axes[:2]:
        ax.legend()
        ax.grid(alpha=0.3)
    if has_snr:
        vals = [r['neg_log_snr'] if r.get('neg_log_snr') not in (None, '') else float('nan') for r in history]
        axes[2].plot(epochs, vals, marker='.')
        axes[2].set(xlabel='epoch', ylabel='mean -log SNR (end of epoch)', title='weight SNR (eq. 6)')
        axes[2].grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save_safetensors(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + '.tmp')
    save_file(state, str(tmp), metadata={'format': 'pt'})
    os.replace(tmp, path)


def _warn_if_too_big(model: nn.Module, cfg: TrainConfig, device: torch.device, use_amp: bool, world: int) -> None:
    """Before anything is allocated: warn when a training step will likely not fit the GPU, and say what to do
    (an LC model's weights, gradients and AdamW moments take 16 bytes per parameter, on every DDP rank)."""
    import warnings

    from .bench import estimate_model_bytes
    params = sum(p.numel() for p in model.parameters())
    img = getattr(model, 'img_size', None) or (224, 224)
    need = estimate_model_bytes(params, max(1, cfg.batch_size // world), tuple(img), 'bf16' if use_amp else None)
    have = torch.cuda.get_device_properties(device).total_memory
    if need > 0.9 * have:
        warnings.warn(
            f'{cfg.model} with batch {cfg.batch_size} needs about {need / 2 ** 30:.0f} GiB per GPU (weights, '
            f'gradients, AdamW state and activations), and {torch.cuda.get_device_name(device)} has '
            f'{have / 2 ** 30:.0f} GiB: lower --batch-size, use --amp, or shard the model over several GPUs '
            'with FSDP (bioconv_timm.sharding.fsdp_wrap; README "Memory and sharding")', RuntimeWarning, stacklevel=3)


def train(config: TrainConfig) -> TrainResult:
    """Train one model; see the module docstring for what the run folder holds."""
    from tqdm import tqdm

    from .data import build_datasets, make_loader

    _validate(config)
    dist_info = _Dist()
    try:
        return _train(config, dist_info, tqdm, build_datasets, make_loader)
    finally:
        dist_info.close()


def _train(config, dist_info, tqdm, build_datasets, make_loader) -> TrainResult:
    if config.device:
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        device = torch.device('cuda', dist_info.local_rank)
    else:
        device = torch.device('cpu')
    if device.type == 'cuda':
        torch.cuda.set_device(device)

    _seed_all(config.seed)
    bundle = build_datasets(config.dataset, data_dir=config.data_dir, pad=config.pad, split=config.split,
                            download=config.download, seed=config.seed, train_subset=config.train_subset,
                            eval_subset=config.eval_subset, val_size=config.val_size)
    model = _create_model(config, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                          img_size=bundle.img_size, drop_rate=config.drop_rate)
    cfg = _resolve(config, getattr(model, 'sleep_every', None))
    _validate(cfg)
    if cfg.sleep_every and not any(isinstance(m, LocallyConnected2d) for m in model.modules()):
        raise ConfigError(f'{cfg.model} has no locally connected layers: sleep_every={cfg.sleep_every} would do '
                         'nothing; use an lc_* model or sleep_every=0')
    out_dir = Path(cfg.output_dir)
    progress = _is_tty() if cfg.progress is None else cfg.progress
    progress = progress and dist_info.main
    use_amp = (device.type == 'cuda') if cfg.amp is None else cfg.amp
    amp_dtype = getattr(torch, cfg.amp_dtype)

    def amp_ctx():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp)

    if device.type == 'cuda':
        _warn_if_too_big(model, cfg, device, use_amp, dist_info.world_size if dist_info.enabled else 1)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, cfg.epochs, cfg.lr_milestones, cfg.lr_decay)
    # a scaler only for fp16 on CUDA; bf16 needs none
    scaler = NativeScaler(device.type) if use_amp and device.type == 'cuda' and cfg.amp_dtype == 'float16' else None
    sleep_rows: List[Dict[str, Any]] = []
    hook = SleepHook(model, cfg.sleep_every, cfg.sleep_mode, cfg.sleep_optimizer)
    hook.attach(optimizer)
    log_snr = cfg.snr_at_sleep if cfg.snr_at_sleep is not None else cfg.sleep_every >= 10
    if hook.enabled and dist_info.main:
        _wrap_sleep_with_log(hook, sleep_rows, with_snr=log_snr)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, device=device) if cfg.ema else None
    # the weights that are evaluated, slept at the end, measured and saved: the EMA when there is one
    record_model = ema.module if ema is not None else model

    history: List[Dict[str, Any]] = []
    snr_rows: List[Dict[str, Any]] = []
    start_epoch = 0
    best_top1 = -1.0
    last_path, best_path = out_dir / 'last.pth', out_dir / 'best.pth'
    if not cfg.resume:
        _refuse_existing_run(out_dir)
    if cfg.resume and last_path.exists():
        ckpt = _load_checkpoint(last_path)
        _check_compatible(ckpt, cfg, last_path)
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        scheduler.load_state_dict(ckpt['scheduler'])
        if scaler is not None and ckpt.get('scaler'):
            scaler.load_state_dict(ckpt['scaler'])
        if ema is not None and ckpt.get('ema'):
            ema.load_state_dict(ckpt['ema'])
        hook.load_state_dict(ckpt['sleep'])
        _set_rng_state(ckpt['rng'])
        history = json.loads(ckpt['history'])
        snr_rows = json.loads(ckpt.get('snr_history', '[]'))
        sleep_rows[:] = json.loads(ckpt.get('sleep_history', '[]'))
        start_epoch = int(ckpt['epoch']) + 1
        best_top1 = float(ckpt['best_top1'])
        if dist_info.main:
            print(f'resuming {cfg.model} from {last_path} at epoch {start_epoch} (step {hook.steps})', flush=True)
    elif cfg.resume and dist_info.main:
        print(f'no checkpoint at {last_path}: starting a new run', flush=True)

    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(out_dir / 'config.json', json.dumps(
            dict(cfg.to_dict(), num_classes=bundle.num_classes, in_chans=bundle.in_chans, img_size=bundle.img_size,
                 label_names=bundle.label_names, mean=list(bundle.mean), std=list(bundle.std),
                 world_size=dist_info.world_size), indent=2))

    train_model: nn.Module = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None)

    eval_set = bundle.eval
    if dist_info.enabled:  # exact sharding, no padded duplicates
        eval_set = torch.utils.data.Subset(bundle.eval, range(dist_info.rank, len(bundle.eval), dist_info.world_size))
    eval_loader = make_loader(eval_set, cfg.batch_size, train=False, num_workers=cfg.num_workers)
    per_rank_batch = cfg.batch_size // dist_info.world_size if dist_info.enabled else cfg.batch_size
    if dist_info.enabled and (cfg.batch_size % dist_info.world_size or per_rank_batch % cfg.reps):
        raise ConfigError(f'batch_size={cfg.batch_size} must split evenly over {dist_info.world_size} processes '
                         f'and reps={cfg.reps}')

    for epoch in range(start_epoch, cfg.epochs):
        _seed_all(_epoch_seed(cfg.seed, epoch, dist_info.rank))
        scheduler.step(epoch)
        lr = optimizer.param_groups[0]['lr']
        loader = make_loader(bundle.train, per_rank_batch, train=True, reps=cfg.reps, num_workers=cfg.num_workers,
                             seed=cfg.seed, epoch=epoch, distributed=dist_info.enabled)
        train_model.train()
        loss_m, top1_m, top5_m = AverageMeter(), AverageMeter(), AverageMeter()
        start = time.perf_counter()
        n_images = 0
        bar = tqdm(loader, desc=f'epoch {epoch + 1}/{cfg.epochs}', leave=False, disable=not progress)
        for images, target in bar:
            images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with amp_ctx():
                output = train_model(images)
                loss = F.cross_entropy(output.float(), target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch}, step {hook.steps}: lower the '
                                         f'learning rate (now {lr:g}) or disable AMP')
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler(loss, optimizer)
            else:
                loss.backward()
                optimizer.step()  # the sleep hook runs here, after the update
            if ema is not None:
                ema.update(model, step=hook.steps)
            k5 = min(5, output.shape[1])
            top1, top5 = accuracy(output.detach().float(), target, topk=(1, k5))
            loss_m.update(loss.item(), images.shape[0])
            top1_m.update(top1.item(), images.shape[0])
            top5_m.update(top5.item(), images.shape[0])
            n_images += images.shape[0]
            if progress:
                bar.set_postfix(loss=f'{loss_m.avg:.3f}', top1=f'{top1_m.avg:.1f}', step=hook.steps)
        train_time = time.perf_counter() - start
        images_per_s = dist_info.all_sum([n_images / max(train_time, 1e-9)], device)[0]
        _sync_buffers(model, dist_info)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            metrics = _evaluate(record_model, eval_loader, device, amp_ctx, dist_info, cfg.channels_last, progress)
        else:  # skipped: blank cells in metrics.csv
            metrics = dict(loss='', top1='', top5='')

        row: Dict[str, Any] = dict(
            epoch=epoch + 1, step=hook.steps, sleeps=hook.sleeps, lr=lr,
            train_loss=loss_m.avg, train_top1=top1_m.avg, train_top5=top5_m.avg,
            eval_loss=metrics['loss'], eval_top1=metrics['top1'], eval_top5=metrics['top5'],
            images_per_s=images_per_s, epoch_time_s=train_time)
        layer_snr = _neg_log_snr(record_model)
        row['neg_log_snr'] = _mean_defined(list(layer_snr.values()))
        for name, value in layer_snr.items():
            snr_rows.append(dict(epoch=epoch + 1, step=hook.steps, layer=name,
                                 neg_log_snr='' if value is None else value))
        history.append(row)
        is_best = metrics['top1'] != '' and metrics['top1'] > best_top1
        if is_best:
            best_top1 = metrics['top1']

        if dist_info.main:
            ckpt = dict(version=CHECKPOINT_VERSION, epoch=epoch, config=cfg.to_dict(), model=model.state_dict(),
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict() if scaler is not None else None,
                        ema=ema.state_dict() if ema is not None else None,
                        sleep=hook.state_dict(), rng=_rng_state(), best_top1=best_top1,
                        history=json.dumps(history), snr_history=json.dumps(snr_rows),
                        sleep_history=json.dumps(sleep_rows))
            _atomic_torch_save(ckpt, last_path)
            if is_best:  # a hard link costs no I/O; last.pth is later replaced by a new file
                tmp = best_path.with_name(best_path.name + '.tmp')
                tmp.unlink(missing_ok=True)
                try:
                    os.link(last_path, tmp)
                except OSError:
                    import shutil
                    shutil.copyfile(last_path, tmp)
                os.replace(tmp, best_path)
            _write_csv(out_dir / 'metrics.csv', history)
            _write_csv(out_dir / 'snr.csv', snr_rows)
            _write_csv(out_dir / 'sleeps.csv', sleep_rows)
            evaluated = (f"eval loss {metrics['loss']:.4f} top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f}"
                         if metrics['top1'] != '' else 'no eval')
            line = (f"epoch {epoch + 1}/{cfg.epochs} step {hook.steps} lr {lr:.2e} "
                    f"train loss {loss_m.avg:.4f} top1 {top1_m.avg:.2f} | {evaluated} | {images_per_s:.0f} img/s"
                    f" | sleeps {hook.sleeps}")
            if progress:
                tqdm.write(line)
            else:
                print(line, flush=True)
        dist_info.barrier()

    # final evaluation, optionally right after one more sleep (and fresh BN statistics)
    final = dict(loss=history[-1]['eval_loss'], top1=history[-1]['eval_top1'], top5=history[-1]['eval_top5'])
    if cfg.final_sleep and hook.enabled:
        if ema is None:
            hook.sleep()
        else:  # sleep the weights that are saved (the raw model is not)
            SLEEP_MODES[cfg.sleep_mode](record_model)
            hook.sleeps += 1
        if cfg.refresh_bn:
            _seed_all(_epoch_seed(cfg.seed, cfg.epochs, dist_info.rank))
            bn_loader = make_loader(bundle.train, per_rank_batch, train=True, reps=cfg.reps,
                                    num_workers=cfg.num_workers, seed=cfg.seed, epoch=cfg.epochs,
                                    distributed=dist_info.enabled)
            refresh_batchnorm(record_model, bn_loader, device, cfg.channels_last)
            _sync_buffers(record_model, dist_info)
        final = _evaluate(record_model, eval_loader, device, amp_ctx, dist_info, cfg.channels_last, progress, 'final eval')
    _sync_buffers(record_model, dist_info)
    ranks_identical = _ranks_identical(record_model, dist_info, device)
    weights_path = out_dir / 'model.safetensors'
    if dist_info.main:
        _save_safetensors(record_model, weights_path)
        summary = dict(model=cfg.model, dataset=cfg.dataset, final=final, best_top1=best_top1,
                       steps=hook.steps, sleeps=hook.sleeps, epochs=cfg.epochs,
                       final_sleep=cfg.final_sleep, refresh_bn=cfg.refresh_bn,
                       world_size=dist_info.world_size, ranks_identical=ranks_identical)
        _atomic_write_text(out_dir / 'result.json', json.dumps(summary, indent=2))
        _plot_curves(history, out_dir / 'curves.png', f'{cfg.model} on {cfg.dataset}')
        print(f"final eval top1 {final['top1']:.2f} top5 {final['top5']:.2f} -> {out_dir}", flush=True)
    hook.detach()
    return TrainResult(output_dir=str(out_dir), epochs=cfg.epochs, steps=hook.steps, sleeps=hook.sleeps,
                       final=final, best_top1=best_top1, history=history, weights_path=str(weights_path))


def _sync_buffers(model: nn.Module, dist_info: _Dist) -> None:
    """Give every rank rank 0's BatchNorm statistics (DDP does this before each training forward;
    the last batch of an epoch leaves them rank-local)."""
    if dist_info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def _ranks_identical(model: nn.Module, dist_info: _Dist, device: torch.device) -> Optional[bool]:
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


def _wrap_sleep_with_log(hook: SleepHook, rows: List[Dict[str, Any]], with_snr: bool) -> None:
    """Record every sleep: its optimizer step and (optionally, it costs two passes over the weights)
    the mean -log SNR just before and after."""
    inner = hook.sleep

    def sleep_with_log() -> int:
        row: Dict[str, Any] = dict(step=hook.steps)
        if with_snr:
            row['neg_log_snr_before'] = _mean_defined(list(_neg_log_snr(hook.model).values()))
        count = inner()
        if with_snr:
            row['neg_log_snr_after'] = _mean_defined(list(_neg_log_snr(hook.model).values()))
        rows.append(row)
        return count

    hook.sleep = sleep_with_log  # type: ignore[method-assign]


# --- command line ---------------------------------------------------------------------------

def _int_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(v) for v in text.replace(',', ' ').split()) if text.strip() else ()


class _KeyValueAction(argparse.Action):
    """KEY=VALUE pairs into a dict; values are Python literals when they parse as one, else strings."""

    def __call__(self, parser, namespace, values, option_string=None):
        import ast
        out = {}
        for item in values:
            key, sep, value = item.partition('=')
            if not sep or not key.isidentifier():
                parser.error(f'{option_string}: expected KEY=VALUE, got {item!r}')
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                out[key] = value
        setattr(namespace, self.dest, out)


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The ``bioconv train`` flags: one per TrainConfig field."""
    d = TrainConfig()
    from .data import DATASETS
    p = parser.add_argument
    p('--model', default=d.model, help='registered model name (see `bioconv list`)')
    p('--model-kwargs', nargs='*', default={}, action=_KeyValueAction, metavar='KEY=VALUE',
      help="extra timm.create_model arguments, e.g. 'layers=(1,1,1)' stem_stride=2")
    p('--dataset', default=d.dataset, choices=DATASETS, help='digits is embedded (scikit-learn), no download')
    p('--data-dir', default=None, help='folder holding the dataset files')
    p('--download', action='store_true', help='let torchvision download CIFAR (needs a network)')
    p('--split', default=d.split, choices=('val', 'test'), help='val: tune on a held-out part of train')
    p('--pad', type=int, default=d.pad, help='pad with the training mean then random-crop (paper: 0, 4, 8)')
    p('--reps', type=int, default=d.reps, help='n translated copies of each image per batch')
    p('--train-subset', type=int, default=None, help='train on the first N images of a seeded permutation')
    p('--eval-subset', type=int, default=None)
    p('--val-size', type=int, default=None, help='held-out size for --split val (default: as in the paper)')
    p('--epochs', type=int, default=d.epochs)
    p('--eval-every', type=int, default=d.eval_every, help='evaluate every N epochs (always after the last)')
    p('--batch-size', type=int, default=None, help='default: 512 CIFAR/TinyImageNet, 256 ImageNet, 64 digits')
    p('--lr', type=float, default=None, help='default: paper table 11 (conv 1e-2, LC 1e-3, LC-ws10/100 5e-4)')
    p('--weight-decay', type=float, default=d.weight_decay)
    p('--opt', default=d.opt, help='timm optimizer name (paper: adamw)')
    p('--lr-milestones', type=_int_tuple, default=None, help="epochs where lr is multiplied by --lr-decay, e.g. '100 150'")
    p('--lr-decay', type=float, default=d.lr_decay)
    p('--ws-lr-scale', type=float, default=d.ws_lr_scale, help='multiply the default lr of sleeping models')
    p('--drop-rate', type=float, default=d.drop_rate)
    p('--sleep-every', type=int, default=None, help="optimizer steps between sleeps (default: the model's; 0: never)")
    p('--sleep-mode', default=d.sleep_mode, choices=sorted(SLEEP_MODES),
      help='instant: set modules to their mean (the paper); hebbian: the anti-Hebbian dynamics of eq. 4')
    p('--sleep-optimizer', default=d.sleep_optimizer, choices=OPTIMIZER_POLICIES,
      help='what a sleep does to the AdamW moments of LC weights')
    p('--final-sleep', action='store_true', help='sleep once more after training, before the final evaluation')
    p('--refresh-bn', action='store_true', help='recompute BatchNorm statistics after the final sleep')
    p('--amp', action=argparse.BooleanOptionalAction, default=None, help='autocast (default: on for CUDA)')
    p('--amp-dtype', default=d.amp_dtype, choices=('bfloat16', 'float16'))
    p('--device', default=None)
    p('--no-channels-last', dest='channels_last', action='store_false')
    p('--ema', action='store_true', help='evaluate an exponential moving average of the weights')
    p('--ema-decay', type=float, default=d.ema_decay)
    p('--seed', type=int, default=d.seed)
    p('--workers', dest='num_workers', type=int, default=d.num_workers)
    p('--output-dir', default=None, help='run folder (default: runs/<model>-<dataset>-seed<seed>)')
    p('--resume', action='store_true', help='continue from <output-dir>/last.pth')
    p('--progress', action=argparse.BooleanOptionalAction, default=None, help='tqdm bars (default: on a terminal)')


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m bioconv_timm.train ...`` (e.g. under torchrun) is ``bioconv train ...``."""
    from .cli import main as cli_main
    return cli_main(['train', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
