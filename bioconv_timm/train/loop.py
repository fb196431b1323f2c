"""``train(TrainConfig(...)) -> TrainResult``: one run, from data to the final weights.

Built from timm's components: ``create_model``, ``create_optimizer_v2`` (AdamW), ``create_scheduler_v2``
('multistep', the paper's lr / 4 at epochs 100 and 150 of 200), ``NativeScaler`` (fp16 on CUDA), ``ModelEmaV3``,
``CheckpointSaver`` and ``random_seed``. What we add: the sleep hook (``SleepHook``, an optimizer post-step hook),
per-layer weight SNR logging, the exact resume and the run folder (``run_log``).

Reproducibility: every epoch re-seeds torch/numpy/random from (seed, epoch) and the data order comes from the
same pair, so a run resumed from an epoch checkpoint ends with the same weights as an uninterrupted one (on CPU,
same seed).

Robustness: ``train`` holds its output folder for its whole life (``run_folder.hold_run_folder``: a second run
into it stops at once, naming this one), marks it as a run (``.bioconv-run``) and never writes into a folder that
holds someone else's files. Every file is written atomically (``_atomic``); a full disk or a diverged loss stops the
run with one line that says which checkpoint is intact and how to go on, and nothing non-finite is saved.
"""
from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, NativeScaler, random_seed
from torch.optim.swa_utils import update_bn
from tqdm import tqdm

from .._atomic import DiskFullError, duplicate_file, format_bytes, write_json
from ..run_folder import hold_run_folder, mark_run_folder, remove_stale_temps
from ..sharding import estimate_model_bytes
from ..sleep import SleepHook
from .checkpoint import (CHECKPOINT_VERSION, RunCheckpointSaver, find_resume_checkpoint, refuse_existing_run,
                         refuse_foreign_folder, rng_state, set_rng_state)
from .config import ConfigError, TrainConfig, TrainResult, create_model, resolve_config
from .data import build_datasets, make_loader
from .distributed import DistInfo, ranks_identical, sync_batchnorm
from .engine import DivergedError, check_finite_weights, evaluate, train_one_epoch
from .run_log import epoch_line, log_sleeps, mean_defined, neg_log_snr, plot_curves, save_safetensors, write_csv

__all__ = ['train', 'build_scheduler']


def train(config: TrainConfig) -> TrainResult:
    """Train one model; the run folder gets ``config.json``, ``metrics.csv``, ``snr.csv``, ``sleeps.csv``,
    ``last.pth`` / ``model_best.pth``, ``model.safetensors``, ``result.json`` and ``curves.png``."""
    cfg = resolve_config(config)  # resolved once: every setting checked, the model sized on meta, no data read yet
    out_dir = Path(cfg.output_dir)
    dist_info = DistInfo()
    try:
        if dist_info.main:
            refuse_foreign_folder(out_dir)  # before the lock: not even a lock file goes into someone else's folder
        with hold_run_folder(out_dir, 'train') if dist_info.main else contextlib.nullcontext():
            if dist_info.main:  # the folder is ours now: nobody can write it between these checks and the run
                refuse_foreign_folder(out_dir)
                if not config.resume:
                    refuse_existing_run(out_dir)
            run = _Run(cfg, dist_info)
            try:
                run.resume_or_start()
                for epoch in range(run.start_epoch, run.cfg.epochs):
                    run.train_epoch(epoch)
                return run.finish()
            except DiskFullError as exc:
                raise run.disk_full(exc) from exc
    finally:
        dist_info.close()


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


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2 ** 31)


def _device(config: TrainConfig, dist_info: DistInfo) -> torch.device:
    if config.device:
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        device = torch.device('cuda', dist_info.local_rank)
    else:
        device = torch.device('cpu')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    return device


def _warn_if_too_big(model: nn.Module, cfg: TrainConfig, device: torch.device, use_amp: bool, world: int) -> None:
    """Before anything is allocated: warn when a training step will likely not fit the GPU, and say what to do
    (an LC model's weights, gradients and AdamW moments take 16 bytes per parameter, on every DDP rank)."""
    params = sum(p.numel() for p in model.parameters())
    img = getattr(model, 'img_size', None) or (224, 224)
    need = estimate_model_bytes(params, max(1, cfg.batch_size // world), tuple(img), 'bf16' if use_amp else None)
    have = torch.cuda.get_device_properties(device).total_memory
    if need > 0.9 * have:
        warnings.warn(
            f'{cfg.model} with batch {cfg.batch_size} needs about {need / 2 ** 30:.0f} GiB per GPU (weights, '
            f'gradients, AdamW state and activations), and {torch.cuda.get_device_name(device)} has '
            f'{have / 2 ** 30:.0f} GiB: lower --batch-size, use --amp, or shard the model over several GPUs '
            'with FSDP (bioconv_timm.sharding.fsdp_wrap; docs/performance.md "Memory and sharding")',
            RuntimeWarning, stacklevel=4)


class _Run:
    """The state of one run: model, optimizer, sleep hook, data, logs. ``train`` drives it epoch by epoch."""

    def __init__(self, config: TrainConfig, dist_info: DistInfo) -> None:
        """``config`` is resolved (:func:`~bioconv_timm.train.config.resolve_config`): no default is left open."""
        self.dist_info = dist = dist_info
        self.device = device = _device(config, dist)
        random_seed(config.seed)
        self.bundle = bundle = build_datasets(
            config.dataset, data_dir=config.data_dir, pad=config.pad, split=config.split, download=config.download,
            seed=config.seed, train_subset=config.train_subset, eval_subset=config.eval_subset,
            img_size=config.img_size, val_size=config.val_size)
        model = create_model(config, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                             img_size=bundle.img_size, drop_rate=config.drop_rate)
        self.cfg = cfg = config
        self.out_dir = Path(cfg.output_dir)
        self.progress = (sys.stderr.isatty() if cfg.progress is None else cfg.progress) and dist.main
        self.use_amp = (device.type == 'cuda') if cfg.amp is None else cfg.amp
        if device.type == 'cuda':
            _warn_if_too_big(model, cfg, device, self.use_amp, dist.world_size if dist.enabled else 1)
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg.epochs, cfg.lr_milestones, cfg.lr_decay)
        # a scaler only for fp16 on CUDA; bf16 needs none
        self.scaler = NativeScaler(device.type) if self.use_amp and device.type == 'cuda' \
            and cfg.amp_dtype == 'float16' else None
        self.sleep_rows: List[Dict[str, Any]] = []
        self.hook = SleepHook(model, cfg.sleep_every, cfg.sleep_mode, cfg.sleep_optimizer)
        self.hook.attach(self.optimizer)
        if self.hook.enabled and dist.main:
            with_snr = cfg.snr_at_sleep if cfg.snr_at_sleep is not None else cfg.sleep_every >= 10
            log_sleeps(self.hook, self.sleep_rows, with_snr)
        self.ema = ModelEmaV3(model, decay=cfg.ema_decay, device=device) if cfg.ema else None
        # the weights that are evaluated, slept at the end, measured and saved: the EMA when there is one
        self.record_model = self.ema.module if self.ema is not None else model
        self.history: List[Dict[str, Any]] = []
        self.snr_rows: List[Dict[str, Any]] = []
        self.start_epoch = 0
        self.best_top1 = -1.0
        self.saver = RunCheckpointSaver(self.out_dir, self._checkpoint_state)
        self.train_model: nn.Module = model
        if dist.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == 'cuda' else None)
        self.per_rank_batch = cfg.batch_size // dist.world_size if dist.enabled else cfg.batch_size
        if dist.enabled and (cfg.batch_size % dist.world_size or self.per_rank_batch % cfg.reps):
            raise ConfigError(f'batch_size={cfg.batch_size} must split evenly over {dist.world_size} processes '
                              f'and reps={cfg.reps}')
        eval_set = bundle.eval
        if dist.enabled:  # exact sharding, no padded duplicates
            eval_set = torch.utils.data.Subset(bundle.eval, range(dist.rank, len(bundle.eval), dist.world_size))
        self.eval_loader = make_loader(eval_set, cfg.batch_size, train=False, num_workers=cfg.num_workers)
        if len(self.train_loader(0)) == 0:  # every batch would be the dropped partial one: no step would be taken
            raise ConfigError(f'batch_size={cfg.batch_size} (--batch-size) is more than the {len(bundle.train)} '
                              f'training images{" per process" if dist.enabled else ""}: an epoch would take no step '
                              '(the last partial batch is dropped); lower --batch-size or raise --train-subset')

    def amp_ctx(self):
        return torch.autocast(self.device.type, dtype=getattr(torch, self.cfg.amp_dtype), enabled=self.use_amp)

    def train_loader(self, epoch: int):
        cfg = self.cfg
        return make_loader(self.bundle.train, self.per_rank_batch, train=True, reps=cfg.reps,
                           num_workers=cfg.num_workers, seed=cfg.seed, epoch=epoch, distributed=self.dist_info.enabled)

    def _checkpoint_state(self) -> Dict[str, Any]:
        return dict(version=CHECKPOINT_VERSION, epoch=len(self.history) - 1, config=self.cfg.to_dict(),
                    model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(),
                    scaler=self.scaler.state_dict() if self.scaler is not None else None,
                    ema=self.ema.state_dict() if self.ema is not None else None,
                    sleep=self.hook.state_dict(), rng=rng_state(), best_top1=self.best_top1,
                    history=json.dumps(self.history), snr_history=json.dumps(self.snr_rows),
                    sleep_history=json.dumps(self.sleep_rows))

    def resume_or_start(self) -> None:
        """Load the checkpoint to resume from (``find_resume_checkpoint``: ``last.pth``, or the newest complete
        one when it is missing; refusing one from other settings, or a run with nothing to resume from); mark the
        folder as a run and write ``config.json``. (``train`` has refused a new run over an old one, and a folder
        of someone else's files.)"""
        cfg, dist, last_path = self.cfg, self.dist_info, self.out_dir / 'last.pth'
        found = find_resume_checkpoint(self.out_dir, cfg) if cfg.resume else None
        if found is not None:
            path, ckpt = found
            self.model.load_state_dict(ckpt['model'])
            self.optimizer.load_state_dict(ckpt['optimizer'])
            self.scheduler.load_state_dict(ckpt['scheduler'])
            if self.scaler is not None and ckpt.get('scaler'):
                self.scaler.load_state_dict(ckpt['scaler'])
            if self.ema is not None and ckpt.get('ema'):
                self.ema.load_state_dict(ckpt['ema'])
            self.hook.load_state_dict(ckpt['sleep'])
            set_rng_state(ckpt['rng'])
            if ckpt.get('saver'):
                self.saver.load_state_dict(ckpt['saver'])
            self.history = json.loads(ckpt['history'])
            self.snr_rows = json.loads(ckpt.get('snr_history', '[]'))
            self.sleep_rows[:] = json.loads(ckpt.get('sleep_history', '[]'))
            self.start_epoch = int(ckpt['epoch']) + 1
            self.best_top1 = float(ckpt['best_top1'])
            if dist.main and path != last_path:
                print(f'{last_path} is missing: recovering from {path.name}, the newest complete checkpoint '
                      f'(epoch {self.start_epoch})', flush=True)
                duplicate_file(path, last_path)  # the folder is whole again, even if the run stops before a save
            self.saver.last_epoch = int(ckpt['epoch'])  # what last.pth now holds
            if dist.main:
                print(f'resuming {cfg.model} from {path} at epoch {self.start_epoch} (step {self.hook.steps})',
                      flush=True)
        elif cfg.resume and dist.main:
            print(f'no checkpoint in {self.out_dir}: starting a new run', flush=True)
        if dist.main:
            remove_stale_temps(self.out_dir)  # partial files of a killed or out-of-space write
            mark_run_folder(self.out_dir, 'train')
            bundle = self.bundle
            write_json(self.out_dir / 'config.json', dict(
                cfg.to_dict(), num_classes=bundle.num_classes, in_chans=bundle.in_chans, img_size=bundle.img_size,
                label_names=bundle.label_names, mean=list(bundle.mean), std=list(bundle.std),
                world_size=dist.world_size))

    def kept_checkpoint(self) -> str:
        """Which checkpoint a stopped run leaves to resume from, as a sentence part."""
        epoch = self.saver.last_epoch
        if epoch is None:
            return 'no checkpoint had been written yet'
        return f'the last complete checkpoint, {self.out_dir / "last.pth"} (epoch {epoch + 1}), is intact'

    def disk_full(self, exc: DiskFullError) -> DiskFullError:
        """``exc`` with what the run left and what the next checkpoint needs (one line)."""
        last = self.out_dir / 'last.pth'
        checkpoint_size = last.stat().st_size if last.exists() else exc.needed
        need = max(exc.needed, checkpoint_size)
        return DiskFullError(
            f'no space left on the device writing {exc.path} ({format_bytes(exc.free)} free): the partial file was '
            f'removed and {self.kept_checkpoint()}. Free at least {format_bytes(need)} (a checkpoint takes about '
            f'{format_bytes(checkpoint_size)}) and run the same command with --resume to continue',
            exc.path, need, exc.free)

    def train_epoch(self, epoch: int) -> None:
        """Train one epoch, evaluate when due, log it and write the checkpoint."""
        cfg, dist = self.cfg, self.dist_info
        random_seed(_epoch_seed(cfg.seed, epoch), dist.rank)
        self.scheduler.step(epoch)
        lr = self.optimizer.param_groups[0]['lr']
        try:
            stats = train_one_epoch(self.train_model, self.train_loader(epoch), self.optimizer, self.device,
                                    self.amp_ctx, scaler=self.scaler, ema=self.ema, step_count=lambda: self.hook.steps,
                                    channels_last=cfg.channels_last, progress=self.progress,
                                    desc=f'epoch {epoch + 1}/{cfg.epochs}')
            # nothing non-finite is checkpointed: a step can leave NaN weights behind a finite loss
            check_finite_weights(self.model, self.hook.steps, lr)
            if self.ema is not None:
                check_finite_weights(self.ema.module, self.hook.steps, lr)
        except DivergedError as exc:
            raise DivergedError(
                f'{exc}. Training stopped and nothing of the diverged state was saved: {self.kept_checkpoint()}. '
                'Train again with a lower --lr into a new --output-dir', exc.step, exc.lr) from exc
        images_per_s = dist.all_sum([stats['images'] / max(stats['seconds'], 1e-9)], self.device)[0]
        sync_batchnorm(self.model, dist)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            metrics = evaluate(self.record_model, self.eval_loader, self.device, self.amp_ctx, dist,
                               cfg.channels_last, self.progress)
        else:  # skipped: blank cells in metrics.csv
            metrics = dict(loss='', top1='', top5='')
        row: Dict[str, Any] = dict(
            epoch=epoch + 1, step=self.hook.steps, sleeps=self.hook.sleeps, lr=lr,
            train_loss=stats['loss'], train_top1=stats['top1'], train_top5=stats['top5'],
            eval_loss=metrics['loss'], eval_top1=metrics['top1'], eval_top5=metrics['top5'],
            images_per_s=images_per_s, epoch_time_s=stats['seconds'])
        layer_snr = neg_log_snr(self.record_model)
        row['neg_log_snr'] = mean_defined(list(layer_snr.values()))
        self.snr_rows += [dict(epoch=epoch + 1, step=self.hook.steps, layer=name, neg_log_snr='' if v is None else v)
                          for name, v in layer_snr.items()]
        self.history.append(row)
        if metrics['top1'] != '' and metrics['top1'] > self.best_top1:
            self.best_top1 = metrics['top1']
        if dist.main:
            self.saver.save_checkpoint(epoch, metric=None if metrics['top1'] == '' else metrics['top1'])
            write_csv(self.out_dir / 'metrics.csv', self.history)
            write_csv(self.out_dir / 'snr.csv', self.snr_rows)
            write_csv(self.out_dir / 'sleeps.csv', self.sleep_rows)
            line = epoch_line(row, cfg.epochs)
            tqdm.write(line) if self.progress else print(line, flush=True)
        dist.barrier()

    def finish(self) -> TrainResult:
        """The final evaluation (after one more sleep and a BatchNorm refresh when asked), ``model.safetensors``,
        ``result.json`` and ``curves.png``."""
        cfg, dist, hook, model = self.cfg, self.dist_info, self.hook, self.record_model
        last = self.history[-1]
        final = dict(loss=last['eval_loss'], top1=last['eval_top1'], top5=last['eval_top5'])
        if cfg.final_sleep and hook.enabled:
            hook.sleep(model)  # the weights that are saved: the EMA when there is one
            if cfg.refresh_bn:
                random_seed(_epoch_seed(cfg.seed, cfg.epochs), dist.rank)
                update_bn(self.train_loader(cfg.epochs), model, self.device)  # torch's BN refresh
                sync_batchnorm(model, dist)
            final = evaluate(model, self.eval_loader, self.device, self.amp_ctx, dist, cfg.channels_last,
                             self.progress, 'final eval')
        sync_batchnorm(model, dist)
        identical = ranks_identical(model, dist, self.device)
        weights_path = self.out_dir / 'model.safetensors'
        if dist.main:
            save_safetensors(model, weights_path)
            summary = dict(model=cfg.model, dataset=cfg.dataset, final=final, best_top1=self.best_top1,
                           steps=hook.steps, sleeps=hook.sleeps, epochs=cfg.epochs, final_sleep=cfg.final_sleep,
                           refresh_bn=cfg.refresh_bn, world_size=dist.world_size, ranks_identical=identical)
            write_json(self.out_dir / 'result.json', summary)
            plot_curves(self.history, self.out_dir / 'curves.png', f'{cfg.model} on {cfg.dataset}')
            print(f"final eval top1 {final['top1']:.2f} top5 {final['top5']:.2f} -> {self.out_dir}", flush=True)
        hook.detach()
        return TrainResult(output_dir=str(self.out_dir), epochs=cfg.epochs, steps=hook.steps, sleeps=hook.sleeps,
                           final=final, best_top1=self.best_top1, history=self.history,
                           weights_path=str(weights_path))
