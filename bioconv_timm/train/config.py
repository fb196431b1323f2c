"""What a training run is: ``TrainConfig`` (every setting, ``None`` for a documented default), how defaults are
filled in (:func:`resolve_config`), which settings may differ between two runs that compute the same thing
(``RESULT_NEUTRAL_FIELDS``, ``RESUMABLE_CHANGES``), and whether a folder already holds this run
(:func:`finished_run`)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import timm
import torch
import torch.nn as nn

from ..errors import UserRuntimeError, UserValueError
from .. import models as _models  # noqa: F401  (registers the models)
from ..paper import cifar10_pad4_lr
from ..sleep import OPTIMIZER_POLICIES, SLEEP_MODES
from .data import DEFAULT_IMG_SIZE, canonical_dataset_name

__all__ = ['TrainConfig', 'TrainResult', 'CheckpointError', 'ConfigError', 'RESULT_NEUTRAL_FIELDS',
           'RESUMABLE_CHANGES', 'config_differences', 'format_differences', 'default_lr', 'resolve_config',
           'fill_defaults', 'validate', 'create_model', 'finished_run']

_DEFAULT_BATCH = {'digits': 64, 'fashion-mnist': 128, 'cifar10': 512, 'cifar100': 512, 'tinyimagenet': 512,
                  'imagenet': 256}


class CheckpointError(UserRuntimeError):
    """A checkpoint that cannot be resumed (corrupt, or from another model/configuration), or a run folder
    that already holds another run."""


class ConfigError(UserValueError):
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
    img_size: Optional[int] = None      # network input side; default the dataset's (digits 24, Fashion-MNIST 28, ...)
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
    if saved.get('img_size') is None:  # unset (or from before img_size existed): the dataset's default size
        saved = dict(saved, img_size=DEFAULT_IMG_SIZE.get(canonical_dataset_name(saved.get('dataset', 'digits'))))
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
    """The paper's CIFAR10 (pad 4, Table 11) learning rate of the model's row (``paper.cifar10_pad4_lr``): conv
    1e-2, LC 1e-3 (ws(1) 1e-3, ws(10)/ws(100) 5e-4), whatever the dataset."""
    return cifar10_pad4_lr(model_name)


def fill_defaults(config: TrainConfig, model_sleep_every: Optional[int]) -> TrainConfig:
    """``config`` with every ``None`` replaced by the value it stands for, given the model's sleep period."""
    cfg = dataclasses.replace(config)
    if cfg.batch_size is None:
        cfg.batch_size = _DEFAULT_BATCH.get(cfg.dataset, 128)
    if cfg.img_size is None:  # as config.json states it (and as runs written before img_size existed recorded it)
        cfg.img_size = DEFAULT_IMG_SIZE.get(canonical_dataset_name(cfg.dataset))
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


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError for a setting that cannot run, naming it and the fix."""
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


def create_model(cfg: TrainConfig, **dataset_args: Any) -> nn.Module:
    """The run's model: ``timm.create_model(cfg.model, **dataset_args, **cfg.model_kwargs)``."""
    try:
        return timm.create_model(cfg.model, **dataset_args, **cfg.model_kwargs)
    except TypeError as exc:  # an argument the model does not take
        raise ConfigError(f'{cfg.model} does not accept model_kwargs {cfg.model_kwargs}: {exc}') from exc
    except ValueError as exc:  # the model's own check of its arguments, e.g. an img_size too small for it
        raise ConfigError(str(exc)) from exc


def resolve_config(config: TrainConfig) -> TrainConfig:
    """``config`` with its documented defaults filled in (batch size, lr, sleep period, milestones, folder),
    as the run folder's config.json will state them. Builds the model on the meta device (no memory)."""
    validate(config)
    with torch.device('meta'):
        model = create_model(config)
    return fill_defaults(config, getattr(model, 'sleep_every', None))


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
