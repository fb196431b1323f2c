import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import timm
import bioconv_timm
from bioconv_timm import LocallyConnected2d, weight_snr
from bioconv_timm.cli import main as cli_main
from bioconv_timm.sleep import grid_means
from bioconv_timm.sleep import SleepHook
from bioconv_timm.train import CheckpointError, TrainConfig, train

TINY = dict(dataset='digits', train_subset=64, eval_subset=48, batch_size=16, progress=False)
# A ResNet-8 (one block per stage): the same stem, stages, LC layers and sleep as ResNet-20 at a third of the
# weights, for the tests whose checks do not depend on the depth (the AdamW steps and the checkpoints that
# dominate a tiny run scale with the weights).
SMALL = dict(layers=(1, 1, 1))
HALF = dict(channels=(8, 16, 32))


@pytest.fixture(scope='module')
def finished_conv_run(tmp_path_factory):
    """One finished 1-epoch conv_resnet20 run; tests copy it (``_copy_of``) before touching it."""
    out = tmp_path_factory.mktemp('finished') / 'run'
    train(TrainConfig(model='conv_resnet20', epochs=1, output_dir=str(out), **TINY))
    return out


def _copy_of(run: Path, tmp_path: Path) -> Path:
    import shutil
    return Path(shutil.copytree(run, tmp_path / 'run'))


def _csv(path: Path):
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_ws10_writes_run_folder_and_sleeps_every_10_steps(tmp_path):
    out = tmp_path / 'run'
    # ResNet-20 at half width: every one of its 21 LC layers, a quarter of the weights
    result = train(TrainConfig(model='lc_resnet20_ws10', epochs=3, output_dir=str(out), model_kwargs=HALF, **TINY))
    for name in ('metrics.csv', 'snr.csv', 'sleeps.csv', 'last.pth', 'model_best.pth', 'model.safetensors',
                 'curves.png', 'config.json', 'result.json'):
        assert (out / name).exists(), name
    assert result.steps == 12  # 64 images / 16 per batch * 3 epochs
    assert result.sleeps == 2
    sleeps = _csv(out / 'sleeps.csv')
    assert [int(r['step']) for r in sleeps] == [1, 11]  # right after the first update, then every 10
    # just before a sleep the weights had diverged, right after it they are exactly shared
    for row in sleeps:
        assert math.isfinite(float(row['neg_log_snr_before']))
        assert float(row['neg_log_snr_after']) == -math.inf
    # 10 steps after the first sleep the weights are far less diverse than at the independent init
    assert float(sleeps[1]['neg_log_snr_before']) < float(sleeps[0]['neg_log_snr_before']) - 3
    rows = _csv(out / 'metrics.csv')
    assert [int(r['epoch']) for r in rows] == [1, 2, 3]
    assert {'train_loss', 'eval_top1', 'eval_top5', 'lr', 'images_per_s', 'neg_log_snr'} <= set(rows[0])
    # 1 optimizer step after the sleep at step 11: diverged again, but still far more shared than at init
    assert math.isfinite(float(rows[-1]['neg_log_snr']))
    assert float(rows[-1]['neg_log_snr']) < float(rows[0]['neg_log_snr'])
    per_layer = _csv(out / 'snr.csv')
    assert len(per_layer) == 3 * 21
    state = load_file(str(out / 'model.safetensors'))
    model = timm.create_model('lc_resnet20_ws10', num_classes=10, in_chans=1, img_size=24, **HALF)
    model.load_state_dict(state)


def test_sleep_hook_shares_exactly_every_n_steps():
    model = timm.create_model('lc_resnet20_ws10', in_chans=1, img_size=24)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    hook = SleepHook(model, every=3).attach(opt)
    layer = model.layer1[0].conv1
    x = torch.randn(4, 1, 24, 24)
    shared_after = []
    for step in range(1, 8):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        shared_after.append(weight_snr(layer) == math.inf)
    assert shared_after == [True, False, False, True, False, False, True]
    assert hook.steps == 7 and hook.sleeps == 3


def test_amp_skipped_step_is_not_counted():
    model = timm.create_model('lc_resnet20_ws1', in_chans=1, img_size=24)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = SleepHook(model, every=1).attach(opt)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 16)
    x = torch.randn(2, 1, 24, 24)
    loss = model(x).mean()
    scaler.scale(loss).backward()
    model.fc.weight.grad.fill_(float('inf'))  # an overflow: the scaler skips this step
    scaler.step(opt)
    scaler.update()
    assert hook.steps == 0 and hook.sleeps == 0
    opt.zero_grad()
    scaler.scale(model(x).mean()).backward()
    scaler.step(opt)
    assert hook.steps == 1 and hook.sleeps == 1


@pytest.mark.parametrize('policy', ['average', 'reset', 'keep'])
def test_sleep_optimizer_policies(policy):
    model = timm.create_model('lc_resnet20_ws10', in_chans=1, img_size=24)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    hook = SleepHook(model, every=2, optimizer_policy=policy).attach(opt)
    x = torch.randn(4, 1, 24, 24)
    layer = model.layer2[1].conv1
    for _ in range(3):  # steps 1 and 3 end with a sleep
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    assert hook.sleeps == 2
    for key in ('exp_avg', 'exp_avg_sq'):
        value = opt.state[layer.weight][key]
        if policy == 'reset':
            assert torch.count_nonzero(value) == 0
        elif policy == 'average':
            assert torch.count_nonzero(value) > 0
            # relative: exp_avg_sq is ~1e-7, far below the default atol
            torch.testing.assert_close(value, grid_means(value, layer.kernel_size), rtol=1e-5, atol=0)
        else:  # untouched: still different at every location
            assert not torch.allclose(value, grid_means(value, layer.kernel_size))


def _run_cli(args, **kwargs):
    return subprocess.run([sys.executable, '-m', 'bioconv_timm.cli', *args], capture_output=True, text=True, **kwargs)


def test_killed_then_resumed_run_matches_uninterrupted(tmp_path):
    common = ['train', '--model', 'lc_resnet20_ws10', '--epochs', '4', '--train-subset', '64', '--eval-subset', '32',
              '--batch-size', '16', '--no-progress', '--seed', '3', '--model-kwargs', 'layers=(1,1,1)']
    # the uninterrupted run goes on beside the one that is killed (they share nothing but the machine)
    full = subprocess.Popen([sys.executable, '-m', 'bioconv_timm.cli', *common, '--output-dir', str(tmp_path / 'full')],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = tmp_path / 'killed'
        proc = subprocess.Popen([sys.executable, '-m', 'bioconv_timm.cli', *common, '--output-dir', str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 240
        while time.time() < deadline:  # wait for the epoch-1 checkpoint, then kill -9 mid-run
            if (out / 'metrics.csv').exists() and len(_csv(out / 'metrics.csv')) >= 1:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / 'result.json').exists(), 'the run finished before it could be killed'
        resumed = _run_cli([*common, '--output-dir', str(out), '--resume'])
        assert resumed.returncode == 0, resumed.stderr
        assert 'resuming' in resumed.stdout
        full_err = full.communicate(timeout=240)[1]
        assert full.returncode == 0, full_err
    finally:
        if full.poll() is None:
            full.kill()
            full.wait()
    a, b = load_file(str(tmp_path / 'full' / 'model.safetensors')), load_file(str(out / 'model.safetensors'))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _csv(tmp_path / 'full' / 'sleeps.csv') == _csv(out / 'sleeps.csv')


def test_resume_refuses_checkpoint_of_another_model(tmp_path, finished_conv_run):
    out = _copy_of(finished_conv_run, tmp_path)
    with pytest.raises(CheckpointError, match='different run'):
        train(TrainConfig(model='lc_resnet20', epochs=1, output_dir=str(out), resume=True, **TINY))
    (out / 'last.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='cannot read checkpoint'):
        train(TrainConfig(model='conv_resnet20', epochs=1, output_dir=str(out), resume=True, **TINY))


def test_empty_data_dir_gives_clear_error(tmp_path, capsys):
    code = cli_main(['train', '--dataset', 'cifar10', '--data-dir', str(tmp_path), '--epochs', '1'])
    err = capsys.readouterr().err
    assert code == 2
    assert 'cifar-10-batches-py' in err and str(tmp_path) in err


def test_lr_schedule_divides_by_4_at_milestones():
    from bioconv_timm.train import build_scheduler
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = build_scheduler(opt, 200, (100, 150), 0.25)
    lrs = {}
    for epoch in (0, 99, 100, 149, 150, 199):
        sched.step(epoch)
        lrs[epoch] = opt.param_groups[0]['lr']
    assert lrs[0] == lrs[99] == pytest.approx(1e-3)
    assert lrs[100] == lrs[149] == pytest.approx(2.5e-4)
    assert lrs[150] == lrs[199] == pytest.approx(6.25e-5)
    # and train() uses exactly that schedule: 50% / 75% of the epochs by default
    from bioconv_timm.train.config import fill_defaults
    cfg = fill_defaults(TrainConfig(model='lc_resnet20', epochs=200), None)
    assert cfg.lr_milestones == (100, 150) and cfg.lr_decay == 0.25 and cfg.lr == 1e-3


def test_final_sleep_and_bn_refresh(tmp_path):
    result = train(TrainConfig(model='lc_resnet20_ws100', epochs=1, final_sleep=True, refresh_bn=True,
                               model_kwargs=SMALL, output_dir=str(tmp_path / 'r'), **TINY))
    assert result.sleeps == 2  # after the first step, and the final one (4 steps < 100)
    model = timm.create_model('lc_resnet20_ws100', num_classes=10, in_chans=1, img_size=24, **SMALL)
    model.load_state_dict(load_file(result.weights_path))
    assert all(weight_snr(m) == math.inf for m in model.modules() if isinstance(m, LocallyConnected2d))
    assert 0.0 <= result.final['top1'] <= 100.0


def test_reps_keep_total_batch_size(tmp_path):
    result = train(TrainConfig(model='lc_resnet20', epochs=1, reps=4, model_kwargs=SMALL,
                               output_dir=str(tmp_path / 'r'), **TINY))
    # a batch of 16 holds 4 images x 4 translations: the epoch covers 64 images in 16 steps
    rows = _csv(tmp_path / 'r' / 'metrics.csv')
    assert result.steps == 16
    assert rows[0]['step'] == '16'


@pytest.mark.skipif(not torch.distributed.is_available(), reason='needs torch.distributed')
def test_ddp_two_processes_gloo_ranks_identical_after_sleep(tmp_path):
    out = tmp_path / 'ddp'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--standalone',
           '-m', 'bioconv_timm.train', '--model', 'lc_resnet20_ws1', '--epochs', '1', '--train-subset', '64',
           '--eval-subset', '32', '--batch-size', '16', '--no-progress', '--device', 'cpu',
           '--model-kwargs', 'layers=(1,1,1)', '--output-dir', str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / 'result.json').read_text())
    assert summary['world_size'] == 2
    assert summary['ranks_identical'] is True
    assert summary['sleeps'] == summary['steps'] > 0


def test_model_kwargs_eval_every_and_hebbian_mode(tmp_path, capsys):
    """A ResNet-8 with a stride-2 stem via --model-kwargs, evaluated every 2nd epoch, Hebbian sleep."""
    out = tmp_path / 'run'
    rc = cli_main(['train', '--model', 'lc_resnet20_ws10', '--dataset', 'digits', '--train-subset', '64',
                   '--eval-subset', '48', '--batch-size', '16', '--epochs', '3', '--eval-every', '2',
                   '--model-kwargs', 'layers=(1,1,1)', 'stem_stride=2', '--sleep-mode', 'hebbian',
                   '--output-dir', str(out), '--no-progress'])
    assert rc == 0
    config = json.loads((out / 'config.json').read_text())
    assert config['model_kwargs'] == {'layers': [1, 1, 1], 'stem_stride': 2}
    assert config['sleep_mode'] == 'hebbian'
    state = load_file(str(out / 'model.safetensors'))
    assert state['conv1.weight'].shape[:2] == (12, 12)  # 24x24 digits through a stride-2 stem
    assert not any(k.startswith('layer1.1.') for k in state)  # one block per stage
    rows = _csv(out / 'metrics.csv')
    assert [r['eval_top1'] != '' for r in rows] == [False, True, True]  # epoch 2, and always the last
    result = json.loads((out / 'result.json').read_text())
    assert result['final']['top1'] == float(rows[-1]['eval_top1'])
    assert result['sleeps'] == 2  # 12 steps: after steps 1 and 11
    assert 'no eval' in capsys.readouterr().out
    # a resumed run with other model kwargs is refused
    with pytest.raises(CheckpointError, match='model_kwargs'):
        train(TrainConfig(model='lc_resnet20_ws10', epochs=4, output_dir=str(out), resume=True,
                          model_kwargs=dict(layers=(1, 1, 1)), eval_every=2, sleep_mode='hebbian', **TINY))


def test_model_kwargs_flag_rejects_bad_pairs(capsys):
    with pytest.raises(SystemExit):
        cli_main(['train', '--model-kwargs', 'layers'])
    assert 'KEY=VALUE' in capsys.readouterr().err


# --- a run folder is never overwritten, and resumes only with the same settings ---------------------

def test_new_run_refuses_folder_with_earlier_run(tmp_path, capsys, finished_conv_run):
    out = _copy_of(finished_conv_run, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code = cli_main(['train', '--model', 'conv_resnet20', '--dataset', 'digits', '--epochs', '1', '--train-subset', '64',
                     '--eval-subset', '48', '--batch-size', '16', '--seed', '5', '--no-progress', '--output-dir', str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert 'already holds a run' in err and '--resume' in err and '--output-dir' in err
    assert 'Traceback' not in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing lost


@pytest.mark.parametrize('change', [dict(train_subset=48), dict(eval_subset=32), dict(opt='sgd'), dict(drop_rate=0.1),
                                    dict(ema=True), dict(val_size=100, split='val')])
def test_resume_refuses_any_setting_that_changes_the_run(tmp_path, change, finished_conv_run):
    out = _copy_of(finished_conv_run, tmp_path)
    cfg = dict(TINY, **change)
    with pytest.raises(CheckpointError, match=f'{next(iter(change))}: .* there vs .* now'):
        train(TrainConfig(model='conv_resnet20', epochs=2, output_dir=str(out), resume=True, **cfg))


def test_every_config_field_is_compared_unless_allowed(tmp_path):
    """A new TrainConfig field is compared on resume and reuse unless its declaration allows a change."""
    import dataclasses
    from bioconv_timm.train import RESUMABLE_CHANGES, config_differences
    base = TrainConfig(model='lc_resnet20', lr=1e-3, batch_size=16, sleep_every=0, lr_milestones=())
    saved = base.to_dict()
    # another valid value of each field (the declarations refuse arbitrary ones)
    special = dict(model='conv_resnet20', dataset='fashion-mnist', data_dir=str(tmp_path), split='val',
                   opt='sgd', device='cpu', output_dir=str(tmp_path / 'other'), sleep_mode='hebbian',
                   sleep_optimizer='reset', amp_dtype='float16', ema_decay=0.5, drop_rate=0.5, lr_decay=0.5,
                   weight_decay=0.5, reps=2, img_size=32)
    other = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v * 2, tuple: lambda v: (*v, 1),
             dict: lambda v: dict(v, extra=1), type(None): lambda v: 7}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(base, f.name)
        new = special[f.name] if f.name in special else other[type(value)](value)
        if f.name in ('amp', 'progress', 'snr_at_sleep'):
            new = True
        diff = config_differences(saved, dataclasses.replace(base, **{f.name: new}), RESUMABLE_CHANGES)
        assert (f.name in diff) == (f.name not in RESUMABLE_CHANGES), f.name


def test_checkpoint_round_trip_keeps_optimizer_state_and_sleep_counter(tmp_path):
    """One run of 2 epochs == 1 epoch, then resumed for a second (AdamW moments, sleep step count, RNG)."""
    common = dict(model='lc_resnet20_ws10', sleep_every=3, seed=2, model_kwargs=SMALL, **TINY)
    full = train(TrainConfig(epochs=2, output_dir=str(tmp_path / 'full'), **common))
    train(TrainConfig(epochs=1, output_dir=str(tmp_path / 'split'), **common))
    resumed = train(TrainConfig(epochs=2, output_dir=str(tmp_path / 'split'), resume=True, **common))
    assert (resumed.steps, resumed.sleeps) == (full.steps, full.sleeps) == (8, 3)
    a, b = load_file(full.weights_path), load_file(resumed.weights_path)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ema_final_sleep_metrics_describe_the_saved_weights(tmp_path):
    from bioconv_timm.train.data import build_datasets, make_loader
    from bioconv_timm.train import evaluate
    import contextlib
    out = tmp_path / 'run'
    result = train(TrainConfig(model='lc_resnet20_ws100', epochs=2, ema=True, ema_decay=0.5, final_sleep=True,
                               refresh_bn=True, model_kwargs=SMALL, output_dir=str(out), **TINY))
    model = timm.create_model('lc_resnet20_ws100', num_classes=10, in_chans=1, img_size=24, **SMALL)
    model.load_state_dict(load_file(result.weights_path))
    # the saved weights are the slept ones
    assert all(weight_snr(m) == math.inf for m in model.modules() if isinstance(m, LocallyConnected2d))
    bundle = build_datasets('digits', pad=4, eval_subset=48, train_subset=64)
    loader = make_loader(bundle.eval, 16, train=False)
    again = evaluate(model.to(memory_format=torch.channels_last), loader, torch.device('cpu'),
                     contextlib.nullcontext, None, True, False)
    assert again['loss'] == pytest.approx(result.final['loss'], rel=1e-5, abs=0)
    assert again['top1'] == result.final['top1']
    assert json.loads((out / 'result.json').read_text())['final'] == result.final


def test_undefined_weight_snr_is_left_out_not_infinite(tmp_path):
    """ResNet-8 with a stride-2 stem on digits: layer3 is 3x3, so every 3x3 module holds one location."""
    out = tmp_path / 'run'
    train(TrainConfig(model='lc_resnet20_ws10', epochs=1, model_kwargs=dict(layers=(1, 1, 1), stem_stride=2),
                      snr_at_sleep=True, output_dir=str(out), **TINY))
    per_layer = _csv(out / 'snr.csv')
    undefined = [r['layer'] for r in per_layer if r['neg_log_snr'] == '']
    assert 'layer3.0.conv2' in undefined
    assert all(math.isfinite(float(r['neg_log_snr'])) for r in per_layer if r['layer'] not in undefined)
    assert math.isfinite(float(_csv(out / 'metrics.csv')[-1]['neg_log_snr']))
    for row in _csv(out / 'sleeps.csv'):
        assert math.isfinite(float(row['neg_log_snr_before']))


@pytest.mark.parametrize('argv, expected', [
    (['--model', 'no_such_model'], ["'no_such_model'", 'bioconv list']),
    (['--epochs', '-1'], ['epochs', '-1', '>= 1']),
    (['--model-kwargs', 'num_classes=5'], ['num_classes', 'remove num_classes=']),
    (['--model-kwargs', 'no_such_arg=5'], ['no_such_arg']),
])
def test_bad_train_arguments_get_one_line_and_exit_2(tmp_path, capsys, argv, expected):
    code = cli_main(['train', '--dataset', 'digits', '--epochs', '1', '--train-subset', '32', '--eval-subset', '16',
                     '--batch-size', '16', '--no-progress', '--output-dir', str(tmp_path / 'r'), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1
    for text in expected:
        assert text in err
