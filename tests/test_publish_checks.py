"""publish reads a run folder's files as user input (issue 23, L7), holds the folder, refuses bad output folders
before any work; a published folder loads with timm's local-dir: and checks itself (issue 26, parts 2 and 3)."""
import itertools
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bioconv_timm  # noqa: F401  (registers the models)
from bioconv_timm.cli import main
from bioconv_timm.hub import PublishError, publish
from bioconv_timm.verify import REFERENCE_FILE, VerifyError, verify

REPO = 'test-org/conv_resnet20.digits'


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A tiny real run of conv_resnet20 on the embedded digits (1 s; its last.pth is 3 MB)."""
    from bioconv_timm.train import TrainConfig, train
    out = tmp_path_factory.mktemp('run') / 'conv'
    train(TrainConfig(model='conv_resnet20', dataset='digits', epochs=1, train_subset=32, eval_subset=32,
                      batch_size=16, seed=3, progress=False, output_dir=str(out)))
    return out


@pytest.fixture(scope='module')
def published(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('pub') / 'folder'
    publish(run_dir, REPO, dry_run_dir=out)
    return out


_copies = itertools.count()


def _copy_run(run_dir: Path, root: Path) -> Path:
    """A copy of the run folder: checkpoints and weights hard-linked (never edited), the small files copied."""
    dest = root / f'copy{next(_copies)}'
    dest.mkdir(parents=True)
    for p in run_dir.iterdir():
        if p.is_file() and not p.name.startswith('.bioconv-lock'):
            (os.link if p.suffix in ('.pth', '.safetensors') else shutil.copy)(p, dest / p.name)
    return dest


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# --- config.json drawn corrupt: every draw is refused by one PublishError naming the field ----------------------

NOT_A_NUMBER = st.sampled_from(['abc', None, [1], {'a': 1}, True, math.nan, math.inf])
# {field: values that are wrong for it (type, range, length or consistency with the run's other fields)}
BAD_VALUES = {
    'model': st.sampled_from(['resnet50', 'nosuchmodel', 3, '', None]),
    'model_kwargs': st.sampled_from([[1], 'layers=1', {'max_params': 10 ** 12}, {'pretrained_cfg': {}},
                                     {'num_classes': 3}, {'bad key': 1}]),
    'dataset': st.sampled_from(['mnist', 'cifar-11', 7]),
    'split': st.sampled_from(['train', 'TEST', 1]),
    'img_size': st.one_of(st.integers(max_value=7), st.integers(min_value=513, max_value=10 ** 6), NOT_A_NUMBER),
    'pad': st.one_of(st.integers(max_value=-1), st.integers(min_value=65), NOT_A_NUMBER),
    'epochs': st.one_of(st.integers(max_value=0), NOT_A_NUMBER),
    'batch_size': st.one_of(st.integers(max_value=0), NOT_A_NUMBER),
    'lr': st.one_of(st.floats(max_value=0), st.floats(min_value=101, allow_infinity=False), NOT_A_NUMBER),
    'weight_decay': st.one_of(st.floats(max_value=-1e-9), NOT_A_NUMBER),
    'lr_milestones': st.sampled_from(['5,7', [1.5], [-1], {'a': 1}]),
    'sleep_every': st.one_of(st.integers(max_value=-1), NOT_A_NUMBER),
    'sleep_optimizer': st.sampled_from(['forget', 0]),
    'final_sleep': st.sampled_from(['yes', 1, None]),
    'seed': st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 31), NOT_A_NUMBER),
    'num_classes': st.one_of(st.integers(max_value=0), st.integers(min_value=11, max_value=50), NOT_A_NUMBER),
    'in_chans': st.one_of(st.integers(max_value=0), st.integers(min_value=2, max_value=5), NOT_A_NUMBER),
    'mean': st.one_of(st.just('abc'), st.just([]), st.lists(st.floats(-1, 1), min_size=2, max_size=4),
                      st.just([math.nan]), st.just(['0.1'])),
    'std': st.one_of(st.just('abc'), st.lists(st.floats(0.1, 1), min_size=2, max_size=4), st.just([0.0]),
                     st.just([-0.3]), st.just([math.inf])),
    'label_names': st.one_of(st.lists(st.text(max_size=3), max_size=9), st.lists(st.text(max_size=3), min_size=11,
                                                                                 max_size=14),
                             st.just('0123456789'), st.just(list(range(10)))),
}


@st.composite
def corruptions(draw):
    name = draw(st.sampled_from(sorted(BAD_VALUES)))
    return name, draw(BAD_VALUES[name])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corruption=corruptions())
def test_a_corrupt_config_json_is_one_error_naming_the_field(run_dir, tmp_path, capsys, corruption):
    field, value = corruption
    run = _copy_run(run_dir, tmp_path)
    _edit(run / 'config.json', **{field: value})
    out = tmp_path / f'out-{run.name}'
    with pytest.raises(PublishError) as info:
        publish(run, REPO, dry_run_dir=out)
    message = str(info.value)
    assert field in message and 'config.json' in message, (field, value, message)
    assert not out.exists()
    # the same from the command line: exit 2, one line naming the field, no traceback
    assert main(['publish', str(run), '--repo-id', REPO, '--dry-run', str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('bioconv publish: error: ') and err.count('\n') == 1 and field in err, err
    assert not out.exists()


# a value that is valid on its own but is not what the run trained with: the run's checkpoint (last.pth) or its
# result.json says otherwise
DIFFERENT_VALUES = {
    'seed': st.integers(min_value=0, max_value=2 ** 31 - 1).filter(lambda v: v != 3),
    'lr': st.floats(1e-5, 1.0).filter(lambda v: v != 0.01),
    'epochs': st.integers(min_value=2, max_value=1000), 'batch_size': st.sampled_from([8, 32, 64]),
    'pad': st.integers(min_value=0, max_value=3), 'weight_decay': st.floats(0, 0.5).filter(lambda v: v != 0.01),
    'dataset': st.sampled_from(['fashion-mnist', 'cifar10']),
    'model': st.sampled_from(['lc_resnet20', 'conv_resnet18']),
    'img_size': st.sampled_from([28, 32]), 'sleep_every': st.integers(min_value=1, max_value=100),
    'sleep_optimizer': st.sampled_from(['average', 'reset']), 'ema': st.just(True), 'split': st.just('val'),
    'final_sleep': st.just(True),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(sorted(DIFFERENT_VALUES)), data=st.data())
def test_an_edited_setting_disagrees_with_the_runs_own_records(run_dir, tmp_path, field, data):
    value = data.draw(DIFFERENT_VALUES[field])
    run = _copy_run(run_dir, tmp_path)
    _edit(run / 'config.json', **{field: value})
    with pytest.raises(PublishError, match=rf'disagree on {field}: ') as info:
        publish(run, REPO, dry_run_dir=tmp_path / 'out')
    message = str(info.value)
    assert f'{run}/config.json and {run}/' in message and ('in last.pth' in message or 'in result.json' in message)
    assert not (tmp_path / 'out').exists()


def test_an_edited_seed_does_not_reach_the_card(run_dir, tmp_path):
    """The issue's case: seed 3 trained, config.json says 0."""
    run = _copy_run(run_dir, tmp_path)
    _edit(run / 'config.json', seed=0)
    with pytest.raises(PublishError) as info:
        publish(run, REPO, dry_run_dir=tmp_path / 'out')
    assert str(info.value).startswith(f'{run}/config.json and {run}/last.pth disagree on seed: 0 in config.json, 3 '
                                      'in last.pth; were files copied between runs, or config.json edited?')
    # three label names for ten classes, and a mean that is no number: the other two cases
    run = _copy_run(run_dir, tmp_path)
    _edit(run / 'config.json', label_names=['a', 'b', 'c'])
    with pytest.raises(PublishError, match=r'"label_names": \["a", "b", "c"\] has 3 name\(s\), num_classes=10 '
                                           r'needs one per class'):
        publish(run, REPO, dry_run_dir=tmp_path / 'out')
    _edit(run / 'config.json', label_names=[str(i) for i in range(10)], mean='abc')
    with pytest.raises(PublishError, match=r'"mean": "abc" must be a list of finite numbers'):
        publish(run, REPO, dry_run_dir=tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('edit, message', [
    (dict(final=dict(top1='abc', top5=1.0)), r'"final.top1": "abc" must be a finite number in \[0, 100\]'),
    (dict(final=dict(top1=140.0)), r'"final.top1": 140.0 must be a finite number in \[0, 100\]'),
    (dict(best_top1=-1), r'"best_top1": -1 must be a finite number'),
    (dict(steps='many'), r'"steps": "many" must be an integer >= 0'),
    (dict(model='lc_resnet20'), r'disagree on model: "conv_resnet20" in config.json, "lc_resnet20" in result.json'),
    (dict(epochs=5), r'disagree on epochs: 1 in config.json, 5 in result.json'),
])
def test_a_corrupt_or_foreign_result_json_is_refused(run_dir, tmp_path, edit, message):
    run = _copy_run(run_dir, tmp_path)
    _edit(run / 'result.json', **edit)
    with pytest.raises(PublishError, match=message):
        publish(run, REPO, dry_run_dir=tmp_path / 'out')


def test_metrics_and_a_broken_checkpoint_are_refused(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path)
    (run / 'result.json').unlink()  # the accuracy then comes from metrics.csv
    text = (run / 'metrics.csv').read_text().splitlines()
    header = text[0].split(',')
    row = text[-1].split(',')
    row[header.index('eval_top1')] = 'abc'
    (run / 'metrics.csv').write_text('\n'.join(text[:-1] + [','.join(row)]) + '\n')
    with pytest.raises(PublishError, match=r"metrics.csv: eval_top1 'abc' in the last row is not a percentage"):
        publish(run, REPO, dry_run_dir=tmp_path / 'out')
    run = _copy_run(run_dir, tmp_path)
    (run / 'last.pth').unlink()
    (run / 'last.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(PublishError, match=r'cannot read .*last.pth to check config.json against it'):
        publish(run, REPO, dry_run_dir=tmp_path / 'out')


def test_a_run_folder_in_use_is_not_published(run_dir, tmp_path):
    from bioconv_timm.run_folder import RunFolderBusyError, hold_run_folder
    run = _copy_run(run_dir, tmp_path)
    with hold_run_folder(run, 'train', create=False):
        with pytest.raises(RunFolderBusyError, match=rf'{run} is in use by bioconv train \(pid {os.getpid()}'):
            publish(run, REPO, dry_run_dir=tmp_path / 'out')
    assert not (tmp_path / 'out').exists()
    result = publish(run, REPO, dry_run_dir=tmp_path / 'out')  # released: it publishes
    assert result.source['checked'] == ['config.json', 'last.pth', 'result.json']
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in run_dir.iterdir()
                                                           if not p.name.startswith('.bioconv-lock'))


def test_bad_dry_run_folders_are_refused_before_any_work(run_dir, tmp_path, monkeypatch):
    import bioconv_timm.hub.upload as upload  # where publish() looks read_source up
    monkeypatch.setattr(upload, 'read_source', lambda *a, **k: pytest.fail('the run was read'))
    a_file = tmp_path / 'a_file'
    a_file.write_text('mine')
    with pytest.raises(PublishError, match=re.escape(f'{a_file} is a file, not a folder: pass an empty or new folder')):
        publish(run_dir, REPO, dry_run_dir=a_file)
    with pytest.raises(PublishError, match=re.escape(f'--dry-run {a_file}/out: {a_file} is a file, not a folder')):
        publish(run_dir, REPO, dry_run_dir=a_file / 'out')
    with pytest.raises(PublishError, match=r'--dry-run /proc/bioconv-out: cannot write in /proc \(.*\); pass a path '
                                           r'in a folder you can write to\.'):
        publish(run_dir, REPO, dry_run_dir='/proc/bioconv-out')
    assert a_file.read_text() == 'mine' and [p.name for p in tmp_path.iterdir()] == ['a_file']


# --- timm's local-dir: and the self-check ------------------------------------------------------------------------

def _trained(run_dir):
    from safetensors.torch import load_file
    model = timm.create_model('conv_resnet20', num_classes=10, in_chans=1, img_size=24)
    model.load_state_dict(load_file(run_dir / 'model.safetensors'))
    return model.eval()


def test_local_dir_loads_the_dry_run_folder_bit_identically(published, run_dir):
    model = timm.create_model(f'local-dir:{published}', pretrained=True).eval()
    trained = _trained(run_dir)
    assert model.in_chans == 1 and model.img_size == (24, 24) and model.num_classes == 10
    for (name, a), (_, b) in zip(sorted(model.state_dict().items()), sorted(trained.state_dict().items())):
        assert torch.equal(a, b), name
    x = torch.randn(3, 1, 24, 24)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    assert timm.data.resolve_model_data_config(model)['mean'] == pytest.approx((0.1357,))
    assert model.pretrained_cfg['label_names'] == [str(d) for d in range(10)]


def test_reference_tensors_are_where_timms_inference_test_reads_them(published, run_dir):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from bioconv_timm.verify import file_sha256
    path = published / REFERENCE_FILE
    assert REFERENCE_FILE == 'test/rand_tensors.safetensors' and path.stat().st_size < 16_000
    ref = load_file(path)
    assert sorted(ref) == ['features', 'input', 'output', 'pre_logits'] and ref['input'].shape == (1, 1, 24, 24)
    with safe_open(str(path), framework='pt') as f:
        assert f.metadata()['weights_sha256'] == file_sha256(published / 'model.safetensors')
    # as timm's test_model_inference checks a Hub repo's test/ tensors
    model = _trained(run_dir)
    with torch.inference_mode():
        features = model.forward_features(ref['input'])
        assert torch.allclose(model(ref['input']), ref['output'], rtol=1e-3, atol=1e-4)
        assert torch.allclose(features, ref['features'], rtol=1e-3, atol=1e-4)
        assert torch.allclose(model.forward_head(features, pre_logits=True), ref['pre_logits'], rtol=1e-3, atol=1e-4)


def test_verify_accepts_the_published_folder(published):
    result = verify(f'local-dir:{published}')
    assert result.ok and result.hash_matches and all(v <= 1e-6 for v in result.max_abs_diff.values())
    assert sorted(result.max_abs_diff) == ['features', 'output', 'pre_logits']
    assert verify(str(published)).ok  # a bare folder path is a local-dir
    assert result.summary().startswith(f'local-dir:{published}: OK; max |difference| output ')


def _tampered(published, tmp_path, delta):
    from safetensors.torch import load_file, save_file
    folder = tmp_path / 'tampered'
    shutil.copytree(published, folder)
    state = load_file(folder / 'model.safetensors')
    state['fc.weight'] = state['fc.weight'] + delta
    save_file(state, str(folder / 'model.safetensors'), metadata={'format': 'pt'})
    return folder


def test_verify_reports_a_tampered_weights_file(published, tmp_path):
    folder = _tampered(published, tmp_path, 0.5)
    with pytest.raises(VerifyError) as info:
        verify(f'local-dir:{folder}')
    message = str(info.value)
    assert message.startswith(f'local-dir:{folder} is not the published model: max |difference| ')
    assert 'in output (allowed: atol 0.0001 + rtol 0.001 x |reference|)' in message
    assert 'model.safetensors has SHA-256 ' in message and 'download it again' in message
    result = verify(f'local-dir:{folder}', raise_on_mismatch=False)
    assert not result.ok and result.hash_matches is False and result.max_abs_diff['output'] > 0.1
    assert result.max_abs_diff['features'] == 0  # the change is in the classifier only


def test_verify_reports_a_change_below_the_tolerance_by_its_hash(published, tmp_path):
    folder = _tampered(published, tmp_path, 1e-7)
    with pytest.raises(VerifyError, match=r'outputs within tolerance \(max \|difference\| .*\); model.safetensors has '
                                          r'SHA-256 [0-9a-f]{64}, the published one [0-9a-f]{64}'):
        verify(f'local-dir:{folder}')
    assert verify(f'local-dir:{folder}', check_hash=False).ok


def test_verify_errors_are_one_clear_line(published, tmp_path):
    with pytest.raises(VerifyError, match="cannot verify 'nosuchscheme:x': pass hf-hub:ORG/NAME"):
        verify('nosuchscheme:x')
    with pytest.raises(VerifyError, match='is not a folder'):
        verify(f'local-dir:{tmp_path / "missing"}')
    old = tmp_path / 'old'
    shutil.copytree(published, old)
    shutil.rmtree(old / 'test')
    with pytest.raises(VerifyError, match=rf'local-dir:{old} has no test/rand_tensors.safetensors, so it cannot be '
                                          'checked'):
        verify(f'local-dir:{old}')
    broken = tmp_path / 'broken'
    shutil.copytree(published, broken)
    data = (broken / 'model.safetensors').read_bytes()
    (broken / 'model.safetensors').write_bytes(data[:len(data) // 2])
    with pytest.raises(VerifyError, match=rf'cannot load local-dir:{broken} with timm: .*truncated or corrupt'):
        verify(f'local-dir:{broken}')
    with pytest.raises(VerifyError, match='atol and rtol must be finite'):
        verify(f'local-dir:{published}', atol=-1)


def test_verify_from_an_offline_hub_cache(published, tmp_path, monkeypatch):
    """hf-hub: goes through huggingface_hub's cache as a download would (offline here)."""
    import huggingface_hub.constants as hf_constants
    cache = tmp_path / 'hub'
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(cache))
    repo_dir = cache / ('models--' + REPO.replace('/', '--'))
    (repo_dir / 'refs').mkdir(parents=True)
    (repo_dir / 'refs' / 'main').write_text('b' * 40)
    shutil.copytree(published, repo_dir / 'snapshots' / ('b' * 40))
    result = verify(f'hf-hub:{REPO}')
    assert result.ok and result.hash_matches and result.weights_file.startswith(str(cache))


def test_bioconv_verify_from_the_command_line(run_dir, tmp_path, capsys):
    """`bioconv publish --dry-run OUT` then `bioconv verify local-dir:OUT`: OK, exit 0; a tampered copy: one line
    with the largest difference, exit 2; `--no-hash` skips the hash (the outputs still differ)."""
    from bioconv_timm.cli import main
    out = tmp_path / 'pub'
    assert main(['publish', str(run_dir), '--repo-id', REPO, '--dry-run', str(out)]) == 0
    capsys.readouterr()
    assert main(['verify', f'local-dir:{out}']) == 0
    assert capsys.readouterr().out.startswith(f'local-dir:{out}: OK; max |difference| output ')
    folder = _tampered(out, tmp_path, 0.5)
    assert main(['verify', f'local-dir:{folder}', '--no-hash']) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'bioconv verify: error: local-dir:{folder} is not the published model: max |difference| ')
    assert len(err.strip().splitlines()) == 1
