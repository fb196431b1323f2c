"""``bioconv train``: one flag per ``TrainConfig`` field."""
from __future__ import annotations

import argparse
import ast
import dataclasses
from typing import Tuple

from ..sleep import OPTIMIZER_POLICIES, SLEEP_MODES
from ..train import TrainConfig, train
from ..train.data import DATASETS


def _int_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(v) for v in text.replace(',', ' ').split()) if text.strip() else ()


class _KeyValueAction(argparse.Action):
    """KEY=VALUE pairs into a dict; values are Python literals when they parse as one, else strings.

    Ours, not timm.utils.ParseKwargs: that one raises a bare ValueError (a traceback) on an item without '=' and
    accepts keys that are no Python name; this one stops with an argparse error naming the item."""

    def __call__(self, parser, namespace, values, option_string=None):
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
    p = parser.add_argument
    p('--model', default=d.model, help='registered model name (see `bioconv list`)')
    p('--model-kwargs', nargs='*', default={}, action=_KeyValueAction, metavar='KEY=VALUE',
      help="extra timm.create_model arguments, e.g. 'layers=(1,1,1)' stem_stride=2")
    p('--dataset', default=d.dataset, choices=DATASETS, help='digits is embedded (scikit-learn), no download')
    p('--data-dir', default=None, help='folder holding the dataset files')
    p('--download', action='store_true', help='let torchvision download CIFAR (needs a network)')
    p('--split', default=d.split, choices=('val', 'test'), help='val: tune on a held-out part of train')
    p('--img-size', type=int, default=None,
      help="network input side; the images are resized to it (default: the dataset's: digits 24, Fashion-MNIST 28)")
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


def run(args: argparse.Namespace) -> int:
    train(config_from_args(args))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('train', help='train a model (with its sleep phase) and write a run folder')
    add_train_args(p)
    p.set_defaults(func=run)
