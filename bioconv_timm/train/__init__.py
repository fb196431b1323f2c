"""Training with the sleep phase, built from timm's components.

* ``config``: ``TrainConfig`` and its defaults, which settings change a run, whether a folder holds one.
* ``loop``: ``train(config) -> TrainResult``, one run from data to the final weights.
* ``engine``: ``train_one_epoch`` and ``evaluate``.
* ``checkpoint``: timm's ``CheckpointSaver`` with everything an exact resume needs.
* ``run_log``: the run folder's CSVs, curves and final weights.
* ``distributed``: data-parallel training under torchrun.
* ``datasets``: the datasets' registry (names, sizes, defaults), torch-free.
* ``data``: the datasets (digits, Fashion-MNIST, CIFAR, TinyImageNet, ImageNet) with the paper's augmentation.
* ``compare``: conv / LC / LC-reps / LC-ws(n) side by side, shaped like paper Table 1.
* ``paper_runs``: one paper table reproduced, cell by cell.

``python -m bioconv_timm.train ...`` (e.g. under torchrun) is ``bioconv train ...``.
"""
from .config import (RESULT_NEUTRAL_FIELDS, RESUMABLE_CHANGES, CheckpointError, ConfigError, TrainConfig,
                     TrainResult, config_differences, default_lr, finished_run, format_differences, resolve_config)
from .._lazy import lazy_exports

# loaded on first use: engine and loop import torch and timm; `bioconv train --help` reads only .config
__getattr__, __dir__ = lazy_exports(__name__, {'evaluate': '.engine', 'train_one_epoch': '.engine',
                                               'build_scheduler': '.loop', 'train': '.loop'})

__all__ = ['TrainConfig', 'TrainResult', 'train', 'default_lr', 'CheckpointError', 'ConfigError', 'resolve_config',
           'finished_run', 'config_differences', 'format_differences', 'RESULT_NEUTRAL_FIELDS', 'RESUMABLE_CHANGES',
           'train_one_epoch', 'evaluate', 'build_scheduler']
