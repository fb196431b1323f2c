"""One epoch of training and one evaluation: the two loops every run is made of.

The sleep phase is not called here: it is an optimizer post-step hook (``bioconv_timm.sleep.SleepHook``), so
``optimizer.step()`` puts the network to sleep every n steps whoever calls it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, ContextManager, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import AverageMeter, accuracy
from tqdm import tqdm

from ..errors import UserRuntimeError
from .distributed import DistInfo

__all__ = ['train_one_epoch', 'evaluate', 'DivergedError', 'check_finite_weights']


class DivergedError(UserRuntimeError, FloatingPointError):
    """Training diverged: a non-finite loss, or weights that became non-finite. ``step`` is the optimizer step
    (1-based) and ``lr`` the learning rate at which it happened."""

    def __init__(self, message: str, step: int, lr: float) -> None:
        super().__init__(message)
        self.step, self.lr = step, lr


def check_finite_weights(model: nn.Module, step: int, lr: float) -> None:
    """Raise DivergedError when a parameter or buffer of ``model`` holds NaN or infinity (why: a checkpoint of
    such weights would be resumed from and published as if it were a model)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DivergedError(f'training diverged: {name} holds non-finite values after optimizer step {step} '
                                f'(lr {lr:.3g}); lower the learning rate', step, lr)


def _batch(images: torch.Tensor, target: torch.Tensor, device: torch.device, channels_last: bool):
    images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, target


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device,
                    amp_ctx: Callable[[], ContextManager], scaler: Any = None, ema: Any = None,
                    step_count: Callable[[], int] = lambda: 0, channels_last: bool = True, progress: bool = False,
                    desc: str = 'train') -> Dict[str, float]:
    """Train ``model`` for one pass over ``loader`` (cross-entropy); update ``ema`` after every step.

    Returns the epoch's running means ``loss``, ``top1``, ``top5`` (%), the number of ``images`` and the
    ``seconds`` it took. ``step_count()`` (the sleep hook's optimizer step count) is shown and used for the EMA
    warm-up. Raises DivergedError (a FloatingPointError) on a non-finite loss, before that step's update,
    naming the step, the loss, the lr and the fix.
    """
    model.train()
    loss_m, top1_m, top5_m = AverageMeter(), AverageMeter(), AverageMeter()
    start = time.perf_counter()
    n_images = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for images, target in bar:
        images, target = _batch(images, target, device, channels_last)
        with amp_ctx():
            output = model(images)
            loss = F.cross_entropy(output.float(), target)
        if not torch.isfinite(loss):
            lr, step = optimizer.param_groups[0]['lr'], step_count() + 1
            raise DivergedError(f'training diverged: the loss is {loss.item()} at optimizer step {step} ({desc}), '
                                f'lr {lr:.3g}; lower the learning rate (or turn off AMP)', step, lr)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler(loss, optimizer)
        else:
            loss.backward()
            optimizer.step()  # the sleep hook runs here, after the update
        if ema is not None:
            ema.update(model, step=step_count())
        top1, top5 = accuracy(output.detach().float(), target, topk=(1, min(5, output.shape[1])))
        loss_m.update(loss.item(), images.shape[0])
        top1_m.update(top1.item(), images.shape[0])
        top5_m.update(top5.item(), images.shape[0])
        n_images += images.shape[0]
        if progress:
            bar.set_postfix(loss=f'{loss_m.avg:.3f}', top1=f'{top1_m.avg:.1f}', step=step_count())
    return dict(loss=loss_m.avg, top1=top1_m.avg, top5=top5_m.avg, images=n_images,
                seconds=time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, amp_ctx: Callable[[], ContextManager],
             dist_info: Optional[DistInfo] = None, channels_last: bool = True, progress: bool = False,
             desc: str = 'eval') -> Dict[str, float]:
    """Mean cross-entropy ``loss`` and ``top1`` / ``top5`` (%) of ``model`` on ``loader``, summed over ranks."""
    model.eval()
    loss_sum = correct1 = correct5 = count = 0.0
    for images, target in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images, target = _batch(images, target, device, channels_last)
        with amp_ctx():
            output = model(images)
        output = output.float()
        loss_sum += F.cross_entropy(output, target, reduction='sum').item()
        top1, top5 = accuracy(output, target, topk=(1, min(5, output.shape[1])))
        correct1 += top1.item() * images.shape[0] / 100.0
        correct5 += top5.item() * images.shape[0] / 100.0
        count += images.shape[0]
    if dist_info is not None:
        loss_sum, correct1, correct5, count = dist_info.all_sum([loss_sum, correct1, correct5, count], device)
    count = max(count, 1.0)
    return dict(loss=loss_sum / count, top1=100.0 * correct1 / count, top5=100.0 * correct5 / count)
