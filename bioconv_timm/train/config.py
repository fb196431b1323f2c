"""What a training run is: ``TrainConfig`` (every setting, ``None`` for a documented default), how defaults are
filled in (:func:`resolve_config`), which settings may differ between two runs that compute the same thing
(``RESULT_NEUTRAL_FIELDS``, ``RESUMABLE_CHANGES``), and whether a folder already holds this run
(:func:`finished_run`)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from ..errors import UserRuntimeError
from ..paper import cifar10_pad4_lr
from ..settings import (ConfigError, device_problem, fields_with_resume, lists_as_tuples, registered_model_problem, setting,
                        validate_settings)
from ..sleep.modes import BUILTIN_SLEEP_MODES, OPTIMIZER_POLICIES
from .datasets import DATASET_SHAPES, DATASETS, DEFAULT_IMG_SIZE, canonical_dataset_name, default_batch_size

if TYPE_CHECKING:
    import torch.nn as nn
# torch and timm are imported where a model is built, not here: TrainConfig (`bioconv train`'s flags) loads at once

__all__ = ['TrainConfig', 'TrainResult', 'CheckpointError', 'ConfigError', 'RESULT_NEUTRAL_FIELDS',
           'RESUMABLE_CHANGES', 'config_differences', 'format_differences', 'default_lr', 'resolve_config',
           'fill_defaults', 'validate', 'create_model', 'finished_run']


class CheckpointError(UserRuntimeError):
    """A checkpoint that cannot be resumed (corrupt, or from another model/configuration), or a run folder
    that already holds another run."""


# create_model arguments the dataset (or another TrainConfig field) sets; model_kwargs may not repeat them
_DATASET_MODEL_ARGS = {'num_classes': 'the dataset', 'in_chans': 'the dataset', 'img_size': 'the dataset (--img-size)',
                       'drop_rate': '--drop-rate', 'pretrained': 'nothing (training starts from scratch)',
                       'features_only': 'nothing (training needs the classifier head)',
                       'pretrained_cfg': 'nothing (training starts from scratch)',
                       'pretrained_cfg_overlay': 'nothing (training starts from scratch)'}


def _model_kwargs_problem(kwargs: Dict[str, Any], cfg: Any) -> Optional[str]:
    bad = [k for k in kwargs if not k.isidentifier()]
    if bad:
        return f'has a key that is no argument name: {bad[0]!r}'
    clash = sorted(set(kwargs) & set(_DATASET_MODEL_ARGS))
    if clash:
        return f'may not set {clash[0]}: it is set by {_DATASET_MODEL_ARGS[clash[0]]}; remove {clash[0]}=...'
    return None


def _increasing(milestones: Tuple[int, ...], cfg: Any) -> Optional[str]:
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        return 'must increase (each epoch once, in order)'
    return None


def _optimizer_problem(name: str, cfg: Any) -> Optional[str]:
    from timm.optim import list_optimizers
    known = list_optimizers()
    return None if name.lower() in known else f'is not a timm optimizer (e.g. adamw, sgd, adam, lamb; {len(known)} in all)'


@dataclass
class TrainConfig:
    """Everything a run needs; each field is declared once (``bioconv_timm.settings``): type, range, help and
    whether a resumed run may change it. ``None`` means "the documented default". Bad values raise
    :class:`ConfigError` when the config is built."""
    model: str = setting('lc_resnet20_ws10', help='registered model name (see `bioconv list`)', check=registered_model_problem,
                         valid='a name `bioconv list` prints',
                         resume='same')
    model_kwargs: Dict[str, Any] = setting(
        default_factory=dict, help="extra timm.create_model arguments, e.g. 'layers=(1,1,1)' stem_stride=2",
        check=_model_kwargs_problem, convert=lists_as_tuples, resume='same', metavar='KEY=VALUE',
        valid='KEY=VALUE items; not ' + ', '.join(_DATASET_MODEL_ARGS))
    dataset: str = setting('digits', help='digits is embedded (scikit-learn), no download', choices=DATASETS,
                           convert=canonical_dataset_name, resume='same')
    data_dir: Optional[str] = setting(None, help='folder holding the dataset files', path='dir_in', resume='neutral')
    download: bool = setting(False, help='let torchvision download CIFAR (needs a network)', resume='neutral')
    split: str = setting('test', help='val: tune on a held-out part of train; test: final numbers',
                         choices=('val', 'test'), resume='same')
    img_size: Optional[int] = setting(None, help='network input side; the images are resized to it', ge=8, le=512,
                                      default_help="the dataset's (digits 24, Fashion-MNIST 28, CIFAR 32)",
                                      resume='same')
    pad: int = setting(4, help='pad with the training mean, then random-crop (paper: 0, 4, 8)', ge=0, le=64,
                       resume='same')
    reps: int = setting(1, help='n translated copies of each image per batch ("n reps")', ge=1, le=64, resume='same')
    train_subset: Optional[int] = setting(None, help='train on the first N images of a seeded permutation', ge=1,
                                          default_help='all', resume='same')
    eval_subset: Optional[int] = setting(None, help='evaluate on the first N images', ge=1, default_help='all',
                                         resume='same')
    val_size: Optional[int] = setting(None, help='held-out size for --split val', ge=1,
                                      default_help='as in the paper (CIFAR 5k; digits, Fashion-MNIST 10%)',
                                      resume='same')
    epochs: int = setting(200, help='training epochs (a resumed run may train longer)', ge=1, le=100_000,
                          resume='extend')
    eval_every: int = setting(1, help='evaluate every N epochs (and always after the last)', ge=1, resume='neutral')
    batch_size: Optional[int] = setting(None, help='images per optimizer step (all processes together)', ge=1,
                                        le=65_536, default_help="the dataset's: 512 CIFAR/TinyImageNet, 256 "
                                        'ImageNet, 128 Fashion-MNIST, 64 digits', resume='same')
    lr: Optional[float] = setting(None, help='learning rate', gt=0, le=100, resume='same',
                                  default_help='paper Table 11: conv 1e-2, LC 1e-3, LC-ws10/100 5e-4')
    weight_decay: float = setting(1e-2, help='AdamW weight decay (paper: 1e-2)', ge=0, le=1, resume='same')
    opt: str = setting('adamw', help='timm optimizer name (paper: adamw)', check=_optimizer_problem,
                   valid='a name timm.optim.list_optimizers() gives', resume='same')
    lr_milestones: Optional[Tuple[int, ...]] = setting(
        None, help="epochs where lr is multiplied by --lr-decay, e.g. '100 150'; a resumed run keeps the "
        "milestones it started with unless they are given", ge=1, resume='same', metavar='EPOCH', check=_increasing,
        default_help='50% and 75% of epochs (paper: 100, 150 of 200)')
    lr_decay: float = setting(0.25, help='lr factor at each milestone (paper: 1/4)', gt=0, le=1, resume='same')
    ws_lr_scale: float = setting(1.0, help='multiplies the default lr of models that sleep', gt=0, le=1000,
                                 resume='same')
    drop_rate: float = setting(0.0, help='dropout before the classifier', ge=0, lt=1, resume='same')
    sleep_every: Optional[int] = setting(None, help='optimizer steps between sleeps (0: never)', ge=0,
                                         default_help="the model's", resume='same')
    sleep_mode: str = setting('instant', help='instant: set modules to their mean (the paper); hebbian: the '
                              'anti-Hebbian dynamics of eq. 4', choices=BUILTIN_SLEEP_MODES, resume='same')
    sleep_optimizer: str = setting('keep', help='what a sleep does to the AdamW moments of LC weights',
                                   choices=OPTIMIZER_POLICIES, resume='same')
    final_sleep: bool = setting(False, help='sleep once more after training, before the final evaluation',
                                resume='extend')
    refresh_bn: bool = setting(False, help='recompute BatchNorm statistics after the final sleep', resume='extend')
    amp: Optional[bool] = setting(None, help='autocast', default_help='on for CUDA', resume='same')
    amp_dtype: str = setting('bfloat16', help='autocast dtype', choices=('bfloat16', 'float16'), resume='same')
    device: Optional[str] = setting(None, help='the torch device', check=device_problem, valid='cpu, cuda, cuda:N',
                                    default_help='cuda (local rank) if available, else cpu', resume='neutral')
    channels_last: bool = setting(True, help='channels-last memory format', resume='same')
    ema: bool = setting(False, help='evaluate an exponential moving average of the weights', resume='same')
    ema_decay: float = setting(0.9998, help='EMA decay per step', ge=0, lt=1, resume='same')
    seed: int = setting(0, help='seed of the initialization, data order and augmentation', ge=0, le=2 ** 31 - 1,
                        resume='same')
    num_workers: int = setting(0, help='data loader worker processes (the data order does not depend on it)',
                               ge=0, le=256, flag='--workers', metavar='N', resume='neutral')
    output_dir: Optional[str] = setting(None, help='run folder', path='dir_out',
                                        default_help='runs/<model>-<dataset>-seed<seed>', resume='neutral')
    resume: bool = setting(False, help='continue the run in --output-dir from its last checkpoint', resume='neutral')
    progress: Optional[bool] = setting(None, help='tqdm bars', default_help='on a terminal', resume='neutral')
    snr_at_sleep: Optional[bool] = setting(None, help='log -log SNR before/after every sleep (sleeps.csv)',
                                           default_help='when the sleep period is >= 10', resume='neutral')

    def __post_init__(self) -> None:
        validate_settings(self)
        if self.batch_size is not None and self.batch_size % self.reps:
            raise ConfigError(f'reps={self.reps} (--reps) must divide batch_size={self.batch_size} (--batch-size)')

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# TrainConfig fields that never change what a run computes: where it runs and what it prints.
RESULT_NEUTRAL_FIELDS = fields_with_resume(TrainConfig, 'neutral')
# ... and those a resumed run may also change: training longer, or a different post-training evaluation.
RESUMABLE_CHANGES = fields_with_resume(TrainConfig, 'neutral', 'extend')


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
    """``config`` with every ``None`` replaced by the value it stands for, given the model's sleep period.

    A resumed run that does not set ``lr_milestones`` keeps the ones its run folder started with (a longer run
    keeps its schedule and adds epochs at the last lr), so a derived value never blocks ``--resume --epochs``."""
    cfg = dataclasses.replace(config)
    if cfg.batch_size is None:
        cfg.batch_size = default_batch_size(cfg.dataset)
    if cfg.img_size is None:  # as config.json states it (and as runs written before img_size existed recorded it)
        cfg.img_size = DEFAULT_IMG_SIZE.get(canonical_dataset_name(cfg.dataset))
    if cfg.sleep_every is None:
        cfg.sleep_every = model_sleep_every or 0
    if cfg.lr is None:
        cfg.lr = default_lr(cfg.model, cfg.dataset)
    if cfg.sleep_every:
        cfg.lr *= cfg.ws_lr_scale
    if cfg.output_dir is None:
        cfg.output_dir = str(Path('runs') / f'{cfg.model}-{cfg.dataset}-seed{cfg.seed}')
    if cfg.lr_milestones is None and cfg.resume:
        cfg.lr_milestones = _started_milestones(Path(cfg.output_dir))
    if cfg.lr_milestones is None:
        cfg.lr_milestones = (cfg.epochs // 2, (3 * cfg.epochs) // 4) if cfg.epochs >= 4 else ()
    cfg.lr_milestones = tuple(int(m) for m in cfg.lr_milestones)
    validate(cfg)
    return cfg


def _started_milestones(run_dir: Path) -> Optional[Tuple[int, ...]]:
    """The lr milestones of the run in ``run_dir`` (its config.json), or None where there is none to read (the
    resume check then reports what it finds)."""
    try:
        saved = json.loads((run_dir / 'config.json').read_text()).get('lr_milestones')
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(saved, list) and all(isinstance(m, int) and not isinstance(m, bool) for m in saved):
        return tuple(saved)
    return None


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError for a setting that cannot run (every field is checked when a TrainConfig is built;
    this checks again after a caller changed fields in place)."""
    cfg.__post_init__()


def create_model(cfg: TrainConfig, **dataset_args: Any) -> 'nn.Module':
    """The run's model: ``timm.create_model(cfg.model, **dataset_args, **cfg.model_kwargs)``."""
    import timm  # importing timm registers the bioconv models (bioconv_timm.__init__)

    try:
        return timm.create_model(cfg.model, **dataset_args, **cfg.model_kwargs)
    except TypeError as exc:  # an argument the model does not take
        raise ConfigError(f'{cfg.model} does not accept model_kwargs {cfg.model_kwargs}: {exc}') from exc
    except ValueError as exc:  # the model's own check of its arguments, e.g. an img_size too small for it
        raise ConfigError(str(exc)) from exc


def resolve_config(config: TrainConfig) -> TrainConfig:
    """``config`` with its documented defaults filled in (batch size, lr, sleep period, milestones, folder),
    as the run folder's config.json will state them. Builds the model on the meta device (no memory) at the
    dataset's input size, channels and classes, so a model too large to build is refused here (before any data
    is read) with its estimate."""
    import torch

    from ..layers import LocallyConnected2d

    validate(config)
    in_chans, num_classes = DATASET_SHAPES[config.dataset]
    img_size = config.img_size or DEFAULT_IMG_SIZE[config.dataset]
    with torch.device('meta'):
        model = create_model(config, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                             drop_rate=config.drop_rate)
    if config.sleep_every and not any(isinstance(m, LocallyConnected2d) for m in model.modules()):
        raise ConfigError(f'{config.model} has no locally connected layers: sleep_every={config.sleep_every} would '
                          'do nothing; use an lc_* model or sleep_every=0')
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
