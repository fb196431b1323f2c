"""Bad input is fuzzed, not listed: for every flag of every subcommand (read from the settings declarations and
the parser, so a new flag is fuzzed without a new test), hypothesis draws out-of-range, malformed and wrong-type
values and checks what the user sees: exit status 2, one line ``bioconv <command>: error: ...`` naming the value,
no traceback, no work started and nothing written in the folder the command ran in."""
import dataclasses
import math
import os
import string
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bioconv_timm.cli import COMMAND_SETTINGS, main
from bioconv_timm.settings import declared_fields, field_kind, flag_name

# what each command would start with a valid input; a bad one must never get there
WORK = ('bioconv_timm.cli.train.train', 'bioconv_timm.cli.compare.compare', 'bioconv_timm.cli.bench.run_benchmark',
        'bioconv_timm.cli.sleep_sim.run_sleep_sim', 'bioconv_timm.cli.publish.publish',
        'bioconv_timm.cli.brainscore.score', 'bioconv_timm.cli.brainscore.build_submission',
        'bioconv_timm.cli.brainscore.write_plugins', 'bioconv_timm.cli.brainscore.stale_plugin_files',
        'bioconv_timm.verify.verify', 'bioconv_timm.export.export_onnx')

DRAWN = {'inputs': 0, 'escaped': 0}

_WORDS = st.text(alphabet=string.ascii_letters + string.digits + '_.', min_size=1, max_size=12)
_NOT_NUMBERS = st.sampled_from(['abc', '1.5.2', 'x1', 'one', '0x1g', '--', '3e']) | _WORDS.filter(
    lambda s: not _parses_as_float(s))


def _parses_as_float(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


@pytest.fixture(scope='module')
def places():
    """A file, a folder and a missing path, for path flags; a safetensors file for publish's source."""
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        (root / 'a_file.txt').write_text('not a folder')
        (root / 'a_folder').mkdir()
        (root / 'weights.safetensors').write_bytes(b'')
        yield root


def _required(command, places):
    """Valid values of a command's required settings, so that the drawn one is the only bad input:
    (positionals by field name, in order; required options)."""
    positionals = {'publish': {'source': str(places / 'weights.safetensors')},
                   'verify': {'source': str(places / 'a_folder')},
                   'export': {'model': 'conv_resnet20', 'output': str(places / 'out.onnx')}}.get(command, {})
    options = {'publish': ['--repo-id=test-org/name'], 'brainscore score': ['--model=conv_resnet20'],
               'brainscore submission': ['--model=conv_resnet20']}.get(command, [])
    return positionals, options


def _number_out_of_range(decl, kind):
    """Values just beyond (and far beyond) the declared bounds."""
    options = []
    low = decl.ge if decl.ge is not None else decl.gt
    high = decl.le if decl.le is not None else decl.lt
    if kind is int:
        if low is not None:
            edge = math.ceil(low) - (1 if decl.ge is not None else 0)
            options.append(st.integers(min_value=edge - 10 ** 6, max_value=edge))
        if high is not None:
            edge = math.floor(high) + (1 if decl.le is not None else 0)
            options.append(st.integers(min_value=edge, max_value=edge + 10 ** 12))
    else:
        if low is not None:
            options.append(st.floats(max_value=low, exclude_max=decl.ge is not None, allow_nan=False,
                                     allow_infinity=False, min_value=low - 1e9))
        if high is not None:
            options.append(st.floats(min_value=high, exclude_min=decl.le is not None, allow_nan=False,
                                     allow_infinity=False, max_value=high + 1e9))
        options.append(st.sampled_from(['nan', 'inf', '-inf']))
    return st.one_of(*options).map(str)


def _bad_values(cls, f, decl, places):
    """A strategy of bad argv tokens for one setting, or None where no token is bad (a switch)."""
    kind, _, element = field_kind(cls, f.name)
    scalar = element if kind in (tuple, dict) else kind
    if kind is bool:
        return None
    if kind is dict:
        malformed = st.sampled_from(['noequals', '1x=2', '=3', 'a b=1'])
        if scalar is float:  # CELL=LR
            return malformed | _NOT_NUMBERS.map(lambda v: f'lc={v}') | st.sampled_from(
                ['nocell=1e-3', 'lc=-1', 'lc=0', 'lc=nan', 'lc=1e9'])
        keys = st.sampled_from(['num_classes=5', 'features_only=True', 'pretrained=True', 'img_size=64', 'in_chans=1'])
        return malformed | keys.filter(lambda s: decl.check({s.partition('=')[0]: 1}, None) is not None)
    if decl.path in ('dir_out', 'file_in', 'dir_in'):
        bad = {'dir_out': [places / 'a_file.txt', '/proc/bioconv/x'],
               'file_in': [places / 'missing.json', places / 'a_folder'],
               'dir_in': [places / 'missing', places / 'a_file.txt']}[decl.path]
        return st.sampled_from([str(p) for p in bad])
    if decl.path == 'file_out':
        return st.sampled_from([str(places / 'a_folder'), '/proc/bioconv/x.out'])
    if scalar in (int, float):
        values = _number_out_of_range(decl, scalar) | _NOT_NUMBERS
        if scalar is int:
            values = values | st.sampled_from(['1.5', '2e3', '0.0'])
        return values
    choices = decl.choice_list() if decl.choices is not None else None
    if choices is not None:
        return _WORDS.filter(lambda s: s not in choices and s.upper() not in choices and s.lower() not in choices)
    if decl.check is not None:
        return _WORDS.filter(lambda s: _refused(decl, kind, s))
    return None


def _refused(decl, kind, token):
    """Whether the declaration's check refuses ``token`` as the command line gives it."""
    try:
        value = decl.convert(token) if decl.convert else ((token,) if kind is tuple else token)
    except (TypeError, ValueError):
        return True
    return decl.check(value, None) is not None


def _cases(command):
    cls = COMMAND_SETTINGS[command]
    return [(f, decl) for f, decl in declared_fields(cls) if decl.cli]


def _names_value(err, token):
    """The message names the bad value as given, or as the number it parsed to."""
    shown = {token, repr(token)}
    for convert in (int, float):
        try:
            shown.add(repr(convert(token)))
        except ValueError:
            pass
    key = token.partition('=')[0]
    return any(s in err for s in shown) or (key and key in err) or token.upper() in err or token.lower() in err


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob('*'))


@pytest.mark.parametrize('command', sorted(COMMAND_SETTINGS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_bad_flag_value_is_one_line_and_starts_nothing(command, data, places, capsys):
    cases = [(f, decl) for f, decl in _cases(command)
             if _bad_values(COMMAND_SETTINGS[command], f, decl, places) is not None]
    f, decl = data.draw(st.sampled_from(cases), label='setting')
    token = data.draw(_bad_values(COMMAND_SETTINGS[command], f, decl, places), label='value')
    flag = flag_name(f, decl)
    positionals, options = _required(command, places)
    if flag.startswith('-'):  # --x=VALUE: a value that starts with '-' is not read as a flag
        argv = command.split() + list(positionals.values()) + options + [f'{flag}={token}']
    else:  # the drawn positional replaces its valid value
        argv = command.split() + [token if name == f.name else v for name, v in positionals.items()] + options
    DRAWN['inputs'] += 1
    with tempfile.TemporaryDirectory() as cwd, ExitStack() as stack:
        for target in WORK:
            stack.enter_context(mock.patch(target, side_effect=AssertionError(f'work started: {argv}')))
        before = _snapshot(Path(cwd))
        old = os.getcwd()
        os.chdir(cwd)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
        finally:
            os.chdir(old)
        after = _snapshot(Path(cwd))
    err = capsys.readouterr().err
    ok = (code == 2 and err.startswith(f'bioconv {command}: error: ') and len(err.strip().splitlines()) == 1
          and 'Traceback' not in err and _names_value(err, token) and before == after)
    DRAWN['escaped'] += not ok
    assert code == 2, (argv, code, err)
    assert err.startswith(f'bioconv {command}: error: '), (argv, err)
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err, (argv, err)
    assert _names_value(err, token), (argv, err)
    assert before == after, (argv, before, after)


def test_fuzz_drew_inputs_and_none_escaped():
    """Runs after the fuzz tests (file order): how many bad inputs were drawn, and that none escaped."""
    if DRAWN['inputs'] == 0:
        pytest.skip('run with the fuzz tests above')
    print(f"\nCLI fuzz: {DRAWN['inputs']} bad inputs drawn, {DRAWN['escaped']} escaped")
    assert DRAWN['escaped'] == 0 and DRAWN['inputs'] >= 10 * len(COMMAND_SETTINGS)


@pytest.mark.parametrize('env, expected', [
    ({'WORLD_SIZE': '2'}, 'WORLD_SIZE=2 asks for 2 processes, but MASTER_ADDR and MASTER_PORT is not set'),
    ({'WORLD_SIZE': 'two'}, "environment variable WORLD_SIZE='two' must be an integer >= 1"),
    ({'BIOCONV_LC_BACKEND': 'bogus'}, "unknown LC backend 'bogus'"),
])
def test_bad_environment_is_one_line_before_any_work(env, expected, tmp_path, monkeypatch, capsys):
    """WORLD_SIZE without torchrun and a bad BIOCONV_LC_BACKEND were tracebacks (issue 23 L1)."""
    for key in ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    code = main(['train', '--model', 'conv_resnet20', '--epochs', '1', '--train-subset', '16', '--batch-size', '16',
                 '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('bioconv train: error: ') and expected in err, err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('argv, expected', [
    (['train', '--train-subset', '5000', '--epochs', '1'], 'train_subset=5000 must be in 1..1437'),
    (['train', '--data-dir', '{missing}', '--dataset', 'fashion-mnist'], 'data_dir (--data-dir)'),
    (['train', '--model', 'lc_resnet20', '--img-size', '512'], 'more than max_params'),
    (['train', '--model', 'conv_resnet20', '--train-subset', '10', '--batch-size', '64'], 'an epoch would take no step'),
    (['train', '--model', 'conv_resnet20', '--sleep-every', '5'], 'has no locally connected layers'),
    (['train', '--lr-milestones', '5', '3'], 'must increase'),
])
def test_bad_values_found_later_still_reach_the_user_as_one_line(argv, expected, tmp_path, monkeypatch, capsys):
    """Values only the data or the model can judge (a subset larger than the dataset, a model too large to
    build) are refused before training, in one line, and leave nothing behind."""
    monkeypatch.chdir(tmp_path)
    argv = [a.replace('{missing}', str(tmp_path / 'missing')) for a in argv]
    code = main(argv + ['--output-dir', str(tmp_path / 'run'), '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('bioconv train: error: ') and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / 'run').exists()


# The values an outside check reported as tracebacks or silent acceptance (issue 23 L1, M3, M5), as typed.
REPORTED = [
    ('train --train-subset -5', "train_subset (--train-subset) = -5"), ('train --train-subset 0', '= 0 must be >= 1'),
    ('train --seed -1', 'seed (--seed) = -1'), ('train --img-size 5', 'img_size (--img-size) = 5'),
    ('train --val-size -3', 'val_size (--val-size) = -3'), ('train --lr -1', 'lr (--lr) = -1.0'),
    ('train --opt nosuchopt', "opt (--opt) = 'nosuchopt'"), ('train --device nosuchdevice', "'nosuchdevice'"),
    ('train --output-dir {file}', 'is a file, not a folder'), ('train --output-dir /proc/bioconv', 'cannot write'),
    ('train --model-kwargs features_only=True', 'may not set features_only'),
    ('train --ema-decay 7', 'ema_decay (--ema-decay) = 7.0'), ('train --weight-decay -5', '= -5.0 must be >= 0'),
    ('train --pad 100000', 'pad (--pad) = 100000'), ('train --img-size 100000', 'img_size (--img-size) = 100000'),
    ('compare --lr conv=abc', "conv='abc' is not a number"), ('compare --train-subset -1', '= -1 must be >= 1'),
    ('compare --img-size 3', 'img_size (--img-size) = 3'), ('compare --output-dir {file}', 'is a file'),
    ('compare --seeds 0 0', 'repeats 0'), ('bench --batch-size -5', 'batch_size (--batch-size) = -5'),
    ('bench --threads -3', 'threads (--threads) = -3'), ('sleep-sim --iterations -5 --runs 0', '= -5 must be'),
    ('sleep-sim --out-dir {file}', 'is a file'), ('brainscore submission --model conv_resnet20 --output {folder}',
                                                  'is a folder'),
    ('brainscore submission --model conv_resnet20 --output /proc/bioconv.zip', 'cannot write'),
    ('brainscore plugins --output-dir {file}', 'is a file'),
]


@pytest.mark.parametrize('typed, expected', REPORTED, ids=[r[0] for r in REPORTED])
def test_the_reported_bad_values_are_one_line(typed, expected, tmp_path, monkeypatch, capsys):
    (tmp_path / 'a_file').write_text('x')
    (tmp_path / 'a_folder').mkdir()
    monkeypatch.chdir(tmp_path)
    argv = typed.format(file=tmp_path / 'a_file', folder=tmp_path / 'a_folder').split()
    with ExitStack() as stack:
        for target in WORK:
            stack.enter_context(mock.patch(target, side_effect=AssertionError('work started')))
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f'bioconv {argv[0]}') and expected in err, err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file', 'a_folder']
