import json
import re

import pytest

from bioconv_timm.train.compare import (DEFAULT_CELLS, DEFAULT_LRS, PAPER_CIFAR10_PAD4, CompareCell, CompareConfig, compare,
                                         format_compare_table)


def test_default_cells_cover_table1_rows():
    # the paper's Table 1 rows (8, read from bioconv_timm.paper), less the 8 and 16 reps rows
    assert [c.label for c in DEFAULT_CELLS] == [k for k in PAPER_CIFAR10_PAD4 if k not in ('LC - 8 reps', 'LC - 16 reps')]
    assert PAPER_CIFAR10_PAD4 == {'conv': 88.3, 'LC': 80.9, 'LC - 4 reps': 82.9, 'LC - 8 reps': 83.8, 'LC - 16 reps': 85.0,
                                  'LC - ws(1)': 87.4, 'LC - ws(10)': 85.1, 'LC - ws(100)': 82.0}
    assert [c.model('resnet20') for c in DEFAULT_CELLS] == [
        'conv_resnet20', 'lc_resnet20', 'lc_resnet20', 'lc_resnet20_ws1', 'lc_resnet20_ws10', 'lc_resnet20_ws100']
    assert DEFAULT_CELLS[2].reps == 4


def test_compare_trains_cells_prints_table_and_resumes(tmp_path, capsys):
    cells = (CompareCell('conv', '-', 'conv'), CompareCell('LC - ws(10)', 'Weight Sharing', 'lc', sleep=10))
    config = CompareConfig(epochs=1, batch_size=16, train_subset=32, eval_subset=32, cells=cells,
                           output_dir=str(tmp_path), progress=False)
    rows = compare(config)
    assert [r['label'] for r in rows] == ['conv', 'LC - ws(10)']
    assert rows[0]['diff'] == 0.0
    assert rows[1]['diff'] == rows[1]['top1'] - rows[0]['top1']
    assert rows[1]['paper_top1'] == 85.1 and abs(rows[1]['paper_diff'] - (85.1 - 88.3)) < 1e-9
    table = (tmp_path / 'compare.md').read_text()
    assert '| Weight Sharing | LC - ws(10) |' in table and '85.1' in table
    assert (tmp_path / 'compare.png').stat().st_size > 1000
    saved = json.loads((tmp_path / 'compare.json').read_text())
    assert saved['rows'][1]['model'] == 'lc_resnet20_ws10'
    capsys.readouterr()
    # finished cells are not trained again
    again = compare(config)
    out = capsys.readouterr().out
    assert 'epoch 1/1' not in out and out.count('(finished before)') == 2  # read back, not trained
    assert [r['top1'] for r in again] == [r['top1'] for r in rows]


def test_table_format_with_spread():
    config = CompareConfig(seeds=(0, 1))
    rows = [dict(label='conv', regularizer='-', top1=90.0, top1_spread=1.0, seeds=2, diff=0.0, paper_top1=88.3,
                 paper_diff=0.0),
            dict(label='LC', regularizer='-', top1=80.0, top1_spread=2.0, seeds=2, diff=-10.0, paper_top1=80.9,
                 paper_diff=-7.4)]
    table = format_compare_table(rows, config)
    assert '| - | LC | 80.0 ± 1.0 | -10.0 | 80.9 | -7.4 |' in table


def test_presets_and_cli_overrides(monkeypatch):
    from bioconv_timm import cli
    from bioconv_timm.train.compare import PRESETS, preset_config
    fm = preset_config('Fashion_MNIST')
    assert fm.dataset == 'fashion-mnist' and fm.model_kwargs == {'layers': (1, 1, 1), 'stem_stride': 2}
    assert (fm.epochs, fm.train_subset, fm.output_dir) == (15, 10000, 'runs/compare-fashion-mnist')
    assert fm.sleep_optimizer == 'average' and preset_config('digits').sleep_optimizer == 'keep'
    assert preset_config('digits', epochs=3).epochs == 3
    assert preset_config('digits').batch_size == PRESETS['digits']['batch_size']
    seen = {}
    monkeypatch.setattr('bioconv_timm.cli.compare.compare', lambda config: seen.setdefault('config', config) and [])
    monkeypatch.setattr('bioconv_timm.cli.compare.format_compare_table', lambda rows, config: '')
    assert cli.main(['compare', '--dataset', 'fashion-mnist', '--epochs', '2', '--sleep-optimizer', 'reset']) == 0
    config = seen['config']
    assert config.epochs == 2 and config.sleep_optimizer == 'reset' and config.train_subset == 10000
    assert config.lrs['lc_ws1'] == 3e-3


def test_fashion_mnist_preset_uses_the_validation_sweeps_learning_rates(monkeypatch):
    """`bioconv compare --dataset fashion-mnist` trains ws(10) at 2e-3 and ws(100) at 1e-3 (the best of the
    long study's val sweep at this budget); --lr still overrides them, and digits keeps its own lrs."""
    from bioconv_timm import cli
    from bioconv_timm.train.compare import DEFAULT_LRS, PRESETS, preset_config
    fm = preset_config('fashion-mnist')
    assert fm.lrs == dict(DEFAULT_LRS, lc_ws10=2e-3, lc_ws100=1e-3)
    assert preset_config('digits').lrs == DEFAULT_LRS == CompareConfig().lrs
    fm.lrs['lc'] = 1.0  # a caller's edit does not leak into the preset
    assert PRESETS['fashion-mnist']['lrs']['lc'] == 1e-3 and preset_config('fashion-mnist').lrs['lc'] == 1e-3
    seen = []
    monkeypatch.setattr('bioconv_timm.cli.compare.compare', lambda config: seen.append(config) or [])
    monkeypatch.setattr('bioconv_timm.cli.compare.format_compare_table', lambda rows, config: '')
    assert cli.main(['compare', '--dataset', 'fashion-mnist', '--cells', 'lc_ws10', 'lc_ws100']) == 0
    assert (seen[-1].lrs['lc_ws10'], seen[-1].lrs['lc_ws100']) == (2e-3, 1e-3)
    assert cli.main(['compare', '--dataset', 'fashion-mnist', '--lr', 'lc_ws10=1e-3']) == 0
    assert (seen[-1].lrs['lc_ws10'], seen[-1].lrs['lc_ws100']) == (1e-3, 1e-3)
    assert cli.main(['compare', '--dataset', 'digits']) == 0
    assert seen[-1].lrs == DEFAULT_LRS


def test_finished_cells_are_reused_only_with_the_same_settings(tmp_path, capsys):
    """A comparison with other settings in the same folder stops and names the setting; none is trained."""
    import dataclasses

    import pytest

    from bioconv_timm.cli import main as cli_main
    from bioconv_timm.train import CheckpointError
    cells = (CompareCell('conv', '-', 'conv'),)
    config = CompareConfig(epochs=1, batch_size=16, train_subset=32, eval_subset=32, cells=cells,
                           output_dir=str(tmp_path), progress=False)
    first = compare(config)
    with pytest.raises(CheckpointError, match='pad: 4 there vs 0 now'):
        compare(dataclasses.replace(config, pad=0))
    with pytest.raises(CheckpointError, match='lr: 0.005 there vs 0.5 now'):
        compare(dataclasses.replace(config, lrs=dict(config.lrs, conv=0.5)))
    with pytest.raises(CheckpointError, match='model_kwargs'):
        compare(dataclasses.replace(config, model_kwargs=dict(layers=(1, 1, 1))))
    assert compare(config)[0]['top1'] == first[0]['top1']  # same settings: reused
    capsys.readouterr()
    code = cli_main(['compare', '--output-dir', str(tmp_path), '--pad', '0', '--epochs', '1', '--batch-size', '16',
                     '--train-subset', '32', '--eval-subset', '32', '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2 and 'pad: 4 there vs 0 now' in err and '--output-dir' in err


def test_cli_compares_a_timm_family_on_chosen_cells(monkeypatch, capsys):
    """`bioconv compare --arch mobilenetv3_small_050 --cells conv lc lc_ws1 --img-size 32`: the preset's ResNet-8
    model_kwargs are dropped for another arch, and an unknown cell is named with the valid ones."""
    from bioconv_timm import cli
    seen = {}
    monkeypatch.setattr('bioconv_timm.cli.compare.compare', lambda config: seen.setdefault('config', config) and [])
    monkeypatch.setattr('bioconv_timm.cli.compare.format_compare_table', lambda rows, config: '')
    assert cli.main(['compare', '--dataset', 'fashion-mnist', '--arch', 'mobilenetv3_small_050', '--img-size', '32',
                     '--cells', 'conv', 'lc', 'lc_ws1', '--seeds', '0', '1', '2']) == 0
    config = seen['config']
    assert config.arch == 'mobilenetv3_small_050' and config.model_kwargs == {} and config.img_size == 32
    assert [c.slug for c in config.cells] == ['conv', 'lc', 'lc_ws1'] and config.seeds == (0, 1, 2)
    assert [c.model(config.arch) for c in config.cells] == [
        'conv_mobilenetv3_small_050', 'lc_mobilenetv3_small_050', 'lc_mobilenetv3_small_050_ws1']
    capsys.readouterr()
    assert cli.main(['compare', '--dataset', 'fashion-mnist', '--cells', 'conv', 'ws1']) == 2
    err = capsys.readouterr().err
    assert re.search(r"^bioconv compare: error: .*unknown compare cell\(s\) \['ws1'\].*'lc_ws1'", err)
    assert len(err.strip().splitlines()) == 1


def test_a_comparison_folder_belongs_to_one_comparison(tmp_path, capsys):
    """Two `bioconv compare` into one --output-dir: the second is refused in one line naming the first (its pid),
    and trains nothing."""
    import os

    from bioconv_timm.cli import main as cli_main
    from bioconv_timm.run_folder import hold_run_folder
    with hold_run_folder(tmp_path / 'cmp', command='compare'):
        assert cli_main(['compare', '--output-dir', str(tmp_path / 'cmp'), '--epochs', '1', '--no-progress']) == 2
    err = capsys.readouterr().err
    assert err.startswith('bioconv compare: error: ') and f'pid {os.getpid()}' in err and len(err.splitlines()) == 1
    assert not list((tmp_path / 'cmp').glob('*-seed*'))


def test_every_shared_training_setting_reaches_each_cell(tmp_path):
    """CompareConfig's training settings are TrainConfig's (same declarations) and reach every cell's config."""
    import dataclasses

    from bioconv_timm.train import TrainConfig
    from bioconv_timm.train.compare import cell_config
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    own = {f.name for f in dataclasses.fields(CompareConfig)} - train_fields
    assert own == {'arch', 'seeds', 'lrs', 'cells', 'jobs'}
    changed = dict(dataset='fashion-mnist', data_dir=str(tmp_path), epochs=3, batch_size=32, pad=2, img_size=32,
                   weight_decay=0.5, train_subset=100, eval_subset=50, split='val', progress=True, device='cpu',
                   num_workers=1, eval_every=2, snr_at_sleep=True, sleep_optimizer='reset', final_sleep=True,
                   refresh_bn=True, model_kwargs={'layers': (1, 1, 1)}, output_dir=str(tmp_path / 'cmp'))
    config = CompareConfig(**changed)
    cell = next(c for c in DEFAULT_CELLS if c.sleep == 10)
    tc = cell_config(config, cell, seed=4)
    for name, value in changed.items():
        if name != 'output_dir':
            assert getattr(tc, name) == value, name
    assert tc.output_dir == str(tmp_path / 'cmp' / 'lc_ws10-seed4') and tc.seed == 4 and tc.lr == config.lrs['lc_ws10']


def test_every_preset_is_a_config_file_that_bioconv_compare_reads_as_its_preset():
    from bioconv_timm.cli import build_parser
    from bioconv_timm.cli.compare import config_from_args
    from bioconv_timm.train.compare import PRESET_DIR, PRESETS, preset_config
    files = sorted(PRESET_DIR.glob('*.yaml'))
    assert sorted(f.stem for f in files) == sorted(PRESETS) and {'digits', 'fashion-mnist'} <= set(PRESETS)
    for path in files:
        args = build_parser().parse_args(['compare', '--dataset', path.stem, '--config', str(path)])
        assert config_from_args(args) == preset_config(path.stem)
    # a preset's lrs change only the cells they name
    assert preset_config('fashion-mnist').lrs == dict(DEFAULT_LRS, lc_ws10=2e-3, lc_ws100=1e-3)
