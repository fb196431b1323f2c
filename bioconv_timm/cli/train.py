"""``bioconv train``: one flag per ``TrainConfig`` field, generated from its declaration."""
from __future__ import annotations

import argparse

from .._lazy import lazy_function
from ..train.config import TrainConfig

train = lazy_function('bioconv_timm.train.loop', 'train')  # imported when a run starts (torch, timm)
from .flags import add_config_flag, add_setting_flags, settings_from_args


SETTINGS = {'train': TrainConfig}  # the settings class of each command (docs/flags.md, tests)

def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The ``bioconv train`` flags: ``--config FILE`` and one per TrainConfig field."""
    add_config_flag(parser)
    add_setting_flags(parser, TrainConfig)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return settings_from_args(args, TrainConfig)


def run(args: argparse.Namespace) -> int:
    train(config_from_args(args))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('train', help='train a model (with its sleep phase) and write a run folder')
    add_train_args(p)
    p.set_defaults(func=run)
