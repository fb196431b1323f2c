"""Checkpoints written atomically by us, a full disk as an ordinary error, nothing non-finite saved, and data that
does not depend on --workers (issue 23: mechanisms 5, 6, 8; defects M1, M4, M5, L2)."""
import errno
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bioconv_timm.cli import main as cli_main
from bioconv_timm.errors import BioconvError
from bioconv_timm.train import TrainConfig, train
from bioconv_timm.train.data import build_datasets, make_loader

TINY = dict(model='lc_resnet20_ws10', model_kwargs=dict(layers=(1, 1, 1)), dataset='digits', train_subset=64,
            eval_subset=32, batch_size=16, progress=False)  # 4 optimizer steps per epoch
SMALL = ['--model', 'lc_resnet20_ws10', '--model-kwargs', 'layers=(1,1,1)', '--dataset', 'digits',
         '--train-subset', '64', '--eval-subset', '32', '--batch-size', '16', '--no-progress']


def _snapshot(folder: Path):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _epoch_of(path: Path) -> int:
    return int(torch.load(path, map_location='cpu', weights_only=True)['epoch'])


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """The reference: 3 epochs without a stop."""
    out = tmp_path_factory.mktemp('full') / 'run'
    train(TrainConfig(epochs=3, output_dir=str(out), **TINY))
    return out


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of the process's own error handling runs after it."""


# --- M1: last.pth is never missing; --resume without it recovers or refuses, never restarts ------------------

def test_kill_while_last_pth_is_replaced_keeps_the_previous_one(tmp_path, monkeypatch, uninterrupted):
    """timm unlinked last.pth before renaming the new one into place; a kill in between left none."""
    import os
    out = tmp_path / 'run'
    real_replace, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == 'last.pth':
            calls.append(dst)
            if len(calls) == 2:  # the epoch-2 checkpoint is being put in place
                raise _Killed()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, 'replace', replace)
    with pytest.raises(_Killed):
        train(TrainConfig(epochs=3, output_dir=str(out), **TINY))
    monkeypatch.undo()
    assert (out / 'last.pth').exists() and _epoch_of(out / 'last.pth') == 0  # epoch 1's, complete
    train(TrainConfig(epochs=3, output_dir=str(out), resume=True, **TINY))
    assert _same_weights(out / 'model.safetensors', uninterrupted / 'model.safetensors')


def test_resume_without_last_pth_recovers_from_newest_complete_checkpoint(tmp_path, capsys, uninterrupted):
    out = tmp_path / 'run'
    train(TrainConfig(epochs=3, output_dir=str(out), **TINY))
    (out / 'last.pth').unlink()
    (out / 'checkpoint-9.pth').write_bytes(b'PK\x03\x04 truncated')  # an incomplete file is skipped
    capsys.readouterr()
    code = cli_main(['train', *SMALL, '--epochs', '3', '--output-dir', str(out), '--resume'])
    stdout = capsys.readouterr().out
    assert code == 0
    assert 'starting a new run' not in stdout and 'epoch 1/3' not in stdout  # no retraining from scratch
    assert 'last.pth is missing: recovering from ' in stdout
    assert (out / 'last.pth').exists()
    assert _same_weights(out / 'model.safetensors', uninterrupted / 'model.safetensors')


def test_resume_of_a_run_with_no_checkpoint_left_is_refused(tmp_path, capsys):
    out = tmp_path / 'run'
    train(TrainConfig(epochs=1, output_dir=str(out), **TINY))
    for path in out.glob('*.pth'):
        path.unlink()
    before = _snapshot(out)
    code = cli_main(['train', *SMALL, '--epochs', '1', '--output-dir', str(out), '--resume'])
    captured = capsys.readouterr()
    assert code == 2 and 'starting a new run' not in captured.out
    assert len(captured.err.strip().splitlines()) == 1
    assert 'holds a run' in captured.err and 'nothing to resume from' in captured.err
    assert _snapshot(out) == before  # model.safetensors, metrics.csv and result.json of the run are kept


# --- M4: a full disk is an ordinary error ---------------------------------------------------------------------

class _FullDisk:
    """A file whose device fills up after ``room`` bytes."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.f.write(bytes(data)[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_full_disk_during_checkpoint_is_one_line_and_resume_finishes(tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / 'run'
    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) != 2:  # the epoch-2 checkpoint hits a full disk part way
            return real_save(obj, f, *args, **kwargs)
        if isinstance(f, (str, Path)):
            with open(f, 'wb') as file:
                return real_save(obj, _FullDisk(file, 50_000), *args, **kwargs)
        return real_save(obj, _FullDisk(f, 50_000), *args, **kwargs)

    monkeypatch.setattr(torch, 'save', save)
    with pytest.raises(BioconvError) as info:
        train(TrainConfig(epochs=3, output_dir=str(out), **TINY))
    monkeypatch.undo()
    message = str(info.value)
    assert '\n' not in message
    assert 'no space left on the device' in message
    assert f'{out / "last.pth"} (epoch 1), is intact' in message and '--resume' in message
    size = (out / 'last.pth').stat().st_size
    assert 'Free at least ' in message and 'MB' in message and size > 1e6
    names = [p.name for p in out.iterdir()]
    assert not [n for n in names if n.endswith('.tmp') or n == 'tmp.pth'], names  # the partial file is gone
    assert _epoch_of(out / 'last.pth') == 0
    train(TrainConfig(epochs=3, output_dir=str(out), resume=True, **TINY))  # space freed: resume finishes
    assert _same_weights(out / 'model.safetensors', uninterrupted / 'model.safetensors')


# --- M5: a diverged run stops in one line and keeps its last good checkpoint -----------------------------------

class _NaNGrad(torch.autograd.Function):
    """The loss unchanged, its gradient NaN: the loss looks fine while the update ruins the weights."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float('nan')


@pytest.mark.parametrize('how, step', [('loss', 6), ('weights', 8)])
def test_diverged_training_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, how, step):
    """A NaN loss at step 6 (epoch 2), or NaN weights after step 8 (the end of epoch 2, with a finite loss):
    training stops naming the step, the loss and the lr, and last.pth stays epoch 1's, with finite weights."""
    out = tmp_path / 'run'
    real_ce, calls = F.cross_entropy, []

    def cross_entropy(input, target, *args, **kwargs):
        loss = real_ce(input, target, *args, **kwargs)
        if kwargs.get('reduction', 'mean') != 'mean':  # evaluation
            return loss
        calls.append(1)
        if len(calls) == step:
            return loss * float('nan') if how == 'loss' else _NaNGrad.apply(loss)
        return loss

    monkeypatch.setattr(F, 'cross_entropy', cross_entropy)
    with pytest.raises(BioconvError) as info:
        train(TrainConfig(epochs=3, lr=1e-3, output_dir=str(out), **TINY))
    message = str(info.value)
    assert '\n' not in message
    assert f'step {step}' in message and 'lr 0.001' in message and 'lower' in message
    if how == 'loss':
        assert 'the loss is nan' in message
    assert f'{out / "last.pth"} (epoch 1), is intact' in message
    ckpt = torch.load(out / 'last.pth', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == 0
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values() if v.is_floating_point())
    assert not (out / 'result.json').exists()


def test_json_with_a_non_finite_number_is_not_written(tmp_path):
    from bioconv_timm._atomic import write_json
    path = tmp_path / 'result.json'
    path.write_text('{"old": 1}\n')
    with pytest.raises(BioconvError, match=r'final\.loss is not a finite number'):
        write_json(path, dict(final=dict(loss=math.nan, top1=10.0)))
    assert json.loads(path.read_text()) == {'old': 1} and [p.name for p in tmp_path.iterdir()] == ['result.json']


# --- L2: the batches do not depend on --workers ----------------------------------------------------------------

@pytest.mark.parametrize('reps', [1, 2])
def test_augmented_batches_do_not_depend_on_workers_or_the_global_rng(reps):
    bundle = build_datasets('digits', pad=4, train_subset=48)

    def first_batches(workers: int, global_seed: int):
        torch.manual_seed(global_seed)
        loader = make_loader(bundle.train, 16, train=True, reps=reps, num_workers=workers, seed=3, epoch=1)
        return [x for x, _ in itertools.islice(loader, 3)]

    alone, with_workers = first_batches(0, 0), first_batches(2, 1)
    assert len(alone) == len(with_workers) == 3
    assert all(torch.equal(a, b) for a, b in zip(alone, with_workers))
    other_epoch = next(iter(make_loader(bundle.train, 16, train=True, reps=reps, seed=3, epoch=2)))[0]
    assert not torch.equal(alone[0], other_epoch)


def test_workers_do_not_change_the_trained_weights(tmp_path):
    for workers in (0, 2):
        train(TrainConfig(epochs=1, num_workers=workers, output_dir=str(tmp_path / f'w{workers}'), **TINY))
    assert _same_weights(tmp_path / 'w0' / 'model.safetensors', tmp_path / 'w2' / 'model.safetensors')
