"""A run folder belongs to one run (issue 23, mechanism 4 and defects H1, L5): a second run into a folder that is
in use stops at once naming the holder, a killed holder blocks nobody, and a folder of someone else's files is
never written into."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bioconv_timm.cli import main as cli_main
from bioconv_timm.errors import BioconvError
from bioconv_timm.train import TrainConfig, train

SMALL = ['--model', 'lc_resnet20_ws10', '--model-kwargs', 'layers=(1,1,1)', '--dataset', 'digits',
         '--train-subset', '64', '--eval-subset', '32', '--batch-size', '16', '--no-progress']
TINY = dict(model='lc_resnet20_ws10', model_kwargs=dict(layers=(1, 1, 1)), dataset='digits', train_subset=64,
            eval_subset=32, batch_size=16, progress=False)


def _snapshot(folder: Path):
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def _wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f'the process ended before {what}: {proc.stderr.read()[-2000:]}')
        if time.time() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.05)


def test_second_run_into_a_busy_folder_is_refused_naming_the_holder(tmp_path, capsys):
    """H1: seeds 0 and 1 into one --output-dir at once. The second stops with one line naming the first (pid,
    host, start time) and the folder holds one run: config, checkpoint, weights and result all of seed 0."""
    out = tmp_path / 'same'
    first = subprocess.Popen([sys.executable, '-m', 'bioconv_timm.cli', 'train', *SMALL, '--epochs', '2',
                              '--seed', '0', '--output-dir', str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # once it has started writing its run, freeze it: the second run then certainly meets it mid-run
        _wait_for(lambda: (out / 'config.json').exists(), 'the first run wrote config.json', first)
        first.send_signal(signal.SIGSTOP)
        code = cli_main(['train', *SMALL, '--epochs', '2', '--seed', '1', '--output-dir', str(out)])
        first.send_signal(signal.SIGCONT)
        err = capsys.readouterr().err
        assert code == 2
        assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err
        assert 'in use by bioconv train' in err
        assert f'pid {first.pid} on host {socket.gethostname()}' in err and 'started 20' in err
        _, first_err = first.communicate(timeout=600)
        assert first.returncode == 0, first_err[-3000:]
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
    assert json.loads((out / 'config.json').read_text())['seed'] == 0
    ckpt = torch.load(out / 'last.pth', map_location='cpu', weights_only=True)
    assert ckpt['config']['seed'] == 0 and ckpt['epoch'] == 1
    weights = load_file(str(out / 'model.safetensors'))
    assert weights.keys() == ckpt['model'].keys()
    assert all(torch.equal(weights[k], ckpt['model'][k]) for k in weights)  # the checkpoint's own weights
    result = json.loads((out / 'result.json').read_text())
    assert result['final']['top1'] == json.loads(ckpt['history'])[-1]['eval_top1']
    assert not (out / '.bioconv-lock').exists()  # released and cleaned up when the run ended


def test_second_train_in_the_same_process_is_refused_and_writes_nothing(tmp_path):
    from bioconv_timm.run_folder import RunFolderBusyError, hold_run_folder
    out = tmp_path / 'run'
    with hold_run_folder(out, command='compare'):
        before = _snapshot(out)
        with pytest.raises(RunFolderBusyError, match=f'in use by bioconv compare \\(pid {os.getpid()} on host'):
            train(TrainConfig(epochs=1, output_dir=str(out), **TINY))
        assert _snapshot(out) == before
    assert not out.exists()  # the folder it created for nothing is gone again


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    out = tmp_path / 'run'
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time\nfrom bioconv_timm.run_folder import hold_run_folder\n'
         'with hold_run_folder(sys.argv[1]):\n    print("held", flush=True)\n    time.sleep(600)\n', str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held', holder.stderr.read()
        with pytest.raises(BioconvError, match=f'pid {holder.pid}'):  # while it lives, it holds the folder
            train(TrainConfig(epochs=1, output_dir=str(out), **TINY))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / '.bioconv-lock').exists()  # left behind by the kill ...
    result = train(TrainConfig(epochs=1, output_dir=str(out), **TINY))  # ... and blocks nobody
    assert result.epochs == 1 and (out / 'result.json').exists()


@pytest.mark.parametrize('resume', [False, True])
def test_folder_of_other_files_is_never_written_into(tmp_path, capsys, resume):
    """L5: the user's own config.json in a non-empty folder without our run marker is not overwritten."""
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'config.json').write_text('{"my": "own settings"}\n')
    (out / 'notes.txt').write_text('do not touch\n')
    before = _snapshot(out)
    code = cli_main(['train', *SMALL, '--epochs', '1', '--output-dir', str(out), *(['--resume'] if resume else [])])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    assert 'not written by bioconv train' in err and 'config.json' in err and 'notes.txt' in err
    assert _snapshot(out) == before


def test_run_folder_is_marked_and_a_new_run_into_it_is_refused(tmp_path, capsys):
    out = tmp_path / 'run'
    train(TrainConfig(epochs=1, output_dir=str(out), **TINY))
    marker = json.loads((out / '.bioconv-run').read_text())
    assert marker['written_by'] == 'bioconv train'
    before = _snapshot(out)
    code = cli_main(['train', *SMALL, '--epochs', '1', '--seed', '4', '--output-dir', str(out)])
    assert code == 2 and 'already holds a run' in capsys.readouterr().err
    assert _snapshot(out) == before
