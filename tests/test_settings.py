"""Every setting declared once (bioconv_timm.settings): each field of every command's settings class has a
declaration with a flag, a range or choices, and (for training) a resume rule; the flags, the docs' table, the
``--config`` file and the resume rules all come from it."""
import dataclasses
import json
from pathlib import Path

import pytest

from bioconv_timm.cli import COMMAND_SETTINGS, build_parser, flags_page, main
from bioconv_timm.settings import ConfigError, declared_fields, field_kind, flag_name
from bioconv_timm.train import RESULT_NEUTRAL_FIELDS, RESUMABLE_CHANGES, TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def _subparser(parser, path):
    for name in path.split():
        action = next(a for a in parser._actions if a.__class__.__name__ == '_SubParsersAction')
        parser = action.choices[name]
    return parser


def test_every_command_declares_its_settings():
    """Every subcommand (and brainscore's) has a settings class; a new one without one fails here."""
    parser = build_parser()
    commands = set()
    for action in parser._actions:
        if action.__class__.__name__ == '_SubParsersAction':
            for name, sub in action.choices.items():
                nested = [a for a in sub._actions if a.__class__.__name__ == '_SubParsersAction']
                commands |= {f'{name} {n}' for n in nested[0].choices} if nested else {name}
    assert commands == set(COMMAND_SETTINGS), sorted(commands ^ set(COMMAND_SETTINGS))


@pytest.mark.parametrize('command', sorted(COMMAND_SETTINGS))
def test_every_field_has_a_flag_and_a_range(command):
    """Each declared field is a flag of its command, with its declaration's name; numbers have a bound, strings
    choices, a check or a path kind, so that a bad value cannot pass unchecked."""
    cls = COMMAND_SETTINGS[command]
    options = {s for a in _subparser(build_parser(), command)._actions for s in a.option_strings}
    positionals = {a.dest for a in _subparser(build_parser(), command)._actions if not a.option_strings}
    for f, decl in declared_fields(cls):
        if not decl.cli:
            continue
        flag = flag_name(f, decl)
        assert flag in options or (not flag.startswith('--') and f.name in positionals), (command, f.name, flag)
        kind, _, element = field_kind(cls, f.name)
        scalar = element if kind in (tuple, dict) else kind
        if scalar in (int, float):
            assert decl.bounds_text(), f'{cls.__name__}.{f.name} has no range'
        elif scalar is not bool:
            assert decl.choices is not None or decl.check or decl.path or decl.convert, \
                f'{cls.__name__}.{f.name} is a string with no choices, check or path kind'


def test_every_training_field_has_a_resume_rule():
    for f, decl in declared_fields(TrainConfig):
        assert decl.resume in ('same', 'neutral', 'extend'), f.name
    assert 'epochs' in RESUMABLE_CHANGES - RESULT_NEUTRAL_FIELDS and 'lr' not in RESUMABLE_CHANGES
    assert {'output_dir', 'num_workers', 'device'} <= RESULT_NEUTRAL_FIELDS


def test_a_field_without_a_declaration_is_refused():
    @dataclasses.dataclass
    class Bad:
        n: int = 3
    with pytest.raises(TypeError, match='Bad.n has no setting'):
        list(declared_fields(Bad))


def test_the_flags_page_is_generated_from_the_declarations():
    """docs/flags.md is what the declarations give (regenerate: python scripts/write_flags_doc.py)."""
    assert (ROOT / 'docs' / 'flags.md').read_text() == flags_page()
    assert '| `--snr-at-sleep`' not in flags_page() and '| `--[no-]snr-at-sleep` |' in flags_page()


def test_snr_at_sleep_is_a_flag():
    """A config field that once had no flag: now every field has one."""
    args = build_parser().parse_args(['train', '--no-snr-at-sleep'])
    from bioconv_timm.cli.train import config_from_args
    assert config_from_args(args).snr_at_sleep is False


@pytest.mark.parametrize('suffix', ['.yaml', '.json'])
def test_train_config_file_and_flags_over_it(tmp_path, suffix, monkeypatch):
    """`bioconv train --config FILE`: the file's settings, then the flags given; an unknown key is refused."""
    seen = {}
    monkeypatch.setattr('bioconv_timm.cli.train.train', lambda cfg: seen.setdefault('cfg', cfg))
    values = {'model': 'conv_resnet20', 'lr-milestones': [3, 4], 'seed': 5, 'model_kwargs': {'layers': [1, 1, 1]}}
    path = tmp_path / f'exp{suffix}'
    path.write_text(json.dumps(values) if suffix == '.json' else
                    'model: conv_resnet20\nlr-milestones: [3, 4]\nseed: 5\nmodel_kwargs: {layers: [1, 1, 1]}\n')
    assert main(['train', '--config', str(path), '--seed', '7']) == 0
    cfg = seen['cfg']
    # a file's lists become tuples, as the flags give them (settings.lists_as_tuples)
    assert (cfg.model, cfg.lr_milestones, cfg.seed, cfg.model_kwargs) == ('conv_resnet20', (3, 4), 7,
                                                                         {'layers': (1, 1, 1)})
    path.write_text('{"modle": "conv_resnet20"}')
    with pytest.raises(ConfigError, match=r"unknown setting 'modle'"):
        from bioconv_timm.cli.train import config_from_args
        config_from_args(build_parser().parse_args(['train', '--config', str(path)]))


def test_config_file_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / 'exp.yaml'
    for text, expected in [('{"modle": 1}', "unknown setting 'modle'"), ('[1, 2]', 'must hold a mapping'),
                           ('a: [1,', 'is not a YAML or JSON file'), ('seed: -3', 'seed (--seed) = -3 must be >= 0')]:
        path.write_text(text)
        assert main(['train', '--config', str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('bioconv train: error: ') and expected in err and len(err.splitlines()) == 1, err
    assert main(['compare', '--config', str(tmp_path / 'missing.yaml')]) == 2
    assert 'cannot read config file' in capsys.readouterr().err


def test_compare_config_file_is_an_experiment(tmp_path, monkeypatch):
    """A study grid as a file of overrides: the dataset's preset, the file, then the flags."""
    seen = {}
    monkeypatch.setattr('bioconv_timm.cli.compare.compare', lambda config: seen.setdefault('config', config) and [])
    monkeypatch.setattr('bioconv_timm.cli.compare.format_compare_table', lambda rows, config: '')
    path = tmp_path / 'study.yaml'
    path.write_text('dataset: fashion-mnist\ncells: [conv, lc_ws10]\nseeds: [0, 1, 2]\nlrs: {lc_ws10: 0.004}\n')
    assert main(['compare', '--config', str(path), '--epochs', '3']) == 0
    config = seen['config']
    assert [c.slug for c in config.cells] == ['conv', 'lc_ws10'] and config.seeds == (0, 1, 2)
    assert config.epochs == 3 and config.train_subset == 10000          # flag, then the preset's budget
    assert config.lrs['lc_ws10'] == 0.004 and config.lrs['conv'] == 5e-3  # the file changes one lr only
    assert config.model_kwargs == {'layers': (1, 1, 1), 'stem_stride': 2}


def test_compare_refuses_repeated_seeds(capsys):
    """`bioconv compare --seeds 0 0` trained once and reported "2 seed(s)"; now it is refused (L4)."""
    assert main(['compare', '--seeds', '0', '0']) == 2
    assert 'seeds (--seeds) = (0, 0) repeats 0; give each once' in capsys.readouterr().err


TINY = dict(model='lc_resnet20', dataset='digits', train_subset=32, eval_subset=16, batch_size=16, progress=False,
            model_kwargs={'layers': (1, 1, 1)})


def test_a_longer_resumed_run_keeps_its_derived_milestones(tmp_path):
    """`--resume --epochs 6` after `--epochs 4` was refused ("lr_milestones: (2, 3) there vs (3, 4) now") though
    the milestones were derived; a longer run keeps its schedule and adds epochs at the last lr (L3)."""
    out = str(tmp_path / 'run')
    train(TrainConfig(epochs=4, output_dir=out, **TINY))
    longer = train(TrainConfig(epochs=6, output_dir=out, resume=True, **TINY))
    assert longer.epochs == 6 and len(longer.history) == 6
    assert json.loads((tmp_path / 'run' / 'config.json').read_text())['lr_milestones'] == [2, 3]
    lrs = [row['lr'] for row in longer.history]
    assert lrs[4] == lrs[5] == lrs[3]  # the last lr goes on
    # milestones given explicitly are still compared
    from bioconv_timm.train import CheckpointError
    with pytest.raises(CheckpointError, match=r'lr_milestones: \[2, 3\] there vs \(3, 5\) now|lr_milestones'):
        train(TrainConfig(epochs=8, output_dir=out, resume=True, lr_milestones=(3, 5), **TINY))
