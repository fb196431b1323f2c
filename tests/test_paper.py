"""The paper's experiment grid (bioconv_timm.paper): transcription, configs and the table runner."""
import dataclasses
import json
import pickle
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bioconv_timm.train import CheckpointError
import timm

import bioconv_timm  # noqa: F401  (registers the models)
from bioconv_timm import paper
from bioconv_timm.train.paper_runs import cell_train_config
from bioconv_timm.paper import PAPER_CELLS, TABLES, cells
from bioconv_timm.train import paper_runs
from bioconv_timm.train.paper_runs import format_paper_comparison, run_dir, run_table, summarize_runs
from bioconv_timm.train import TrainConfig

PAPER_TEXT = Path('/work/shared/paper/towards-biologically-plausible-convnets.txt')
SMALL = ('cifar10', 'cifar100', 'tinyimagenet')


def _cell(table, dataset, label):
    found = [c for c in cells(table, dataset) if c.label == label]
    assert len(found) == 1, (table, dataset, label, found)
    return found[0]


# ------------------------------------------------------------------------------- the grid itself

def test_every_model_is_registered_with_timm():
    registered = set(timm.list_models())
    missing = sorted({c.model for c in PAPER_CELLS} - registered)
    assert not missing


def test_table_sizes():
    counts = Counter((c.table, c.dataset) for c in PAPER_CELLS)
    expected = {('2', 'imagenet'): 5, ('13', 'imagenet'): 9}
    for table, rows in (('1', 8), ('4', 5), ('5', 8), ('6', 8)):
        expected.update({(table, d): rows for d in SMALL})
    assert dict(counts) == expected
    assert len(PAPER_CELLS) == 101
    assert set(TABLES) == {c.table for c in PAPER_CELLS}
    assert len(cells('5')) == 24 and len(cells('5', 'cifar100')) == 8
    # no duplicate rows within a table and dataset, and unique run folders
    assert len({(c.table, c.dataset, c.label) for c in PAPER_CELLS}) == len(PAPER_CELLS)
    assert len({(c.table, c.dataset, c.slug) for c in PAPER_CELLS}) == len(PAPER_CELLS)


def test_spot_checks_against_the_paper():
    c = _cell('5', 'cifar10', 'LC - ws(1)')
    assert (c.paper_top1, c.lr, c.weight_decay, c.paper_spread, c.paper_top5) == (87.4, 1e-3, 1e-2, 0.5, None)
    assert _cell('4', 'cifar10', 'LC - ws(100)').lr == 1e-4
    assert _cell('4', 'cifar10', 'LC - ws(100)').paper_top1 == 75.4
    c = _cell('13', 'imagenet', 'LC - ws(1)')
    assert (c.model, c.paper_top1, c.paper_top5, c.lr, c.weight_decay, c.batch_size, c.runs) == \
        ('lc_resnet18_half_ws1', 61.7, 83.1, 1e-3, 1e-2, 256, 1)
    c = _cell('6', 'tinyimagenet', 'LC - 16 reps')
    assert (c.paper_top1, c.paper_top5, c.paper_spread, c.paper_spread_top5) == (37.9, 60.3, 0.5, 1.1)
    assert (c.lr, c.weight_decay, c.reps, c.model) == (5e-4, 1e-2, 16, 'lc_resnet20')
    c = _cell('5', 'cifar100', 'LC - ws(1)')
    assert (c.paper_top1, c.paper_top5, c.lr, c.weight_decay) == (58.7, 83.4, 1e-3, 1e-4)
    c = _cell('4', 'tinyimagenet', 'conv')
    assert (c.paper_top1, c.paper_top5, c.lr, c.weight_decay, c.model) == (26.0, 51.2, 5e-3, 1e-2, 'conv_resnet20')
    c = _cell('6', 'cifar100', 'LC')
    assert (c.paper_top1, c.lr, c.weight_decay, c.paper_spread) == (47.7, 5e-4, 1e-4, 0.6)
    # ImageNet B.2: lr 1e-3 for conv and LC ws(1) only; every conv-stem LC 5e-4
    lrs = {c.label: c.lr for c in cells('13')}
    assert lrs == {'conv': 1e-3, 'LC': 5e-4, 'LC - ws(1)': 1e-3, 'LC - ws(10)': 5e-4, 'LC - ws(100)': 5e-4,
                   'LC + 1st layer conv': 5e-4, 'LC + 1st layer conv - ws(1)': 5e-4,
                   'LC + 1st layer conv - ws(10)': 5e-4, 'LC + 1st layer conv - ws(100)': 5e-4}
    assert _cell('13', 'imagenet', 'LC + 1st layer conv - ws(1)').paper_top1 == 63.6
    # the last line of the text file (no trailing newline): conv-stem LC, ws(100)
    c = _cell('13', 'imagenet', 'LC + 1st layer conv - ws(100)')
    assert (c.model, c.paper_top1, c.paper_top5, c.lr) == ('lc_resnet18_half_convstem_ws100', 59.1, 81.1, 5e-4)


def test_shared_settings():
    for c in PAPER_CELLS:
        assert (c.epochs, c.lr_milestones, c.lr_decay) == (200, (100, 150), 0.25)
        imagenet = c.dataset == 'imagenet'
        assert c.batch_size == (256 if imagenet else 512)
        assert c.runs == (1 if imagenet else 5)
        assert (c.paper_spread is None) == imagenet
        assert (c.paper_top5 is None) == (c.dataset == 'cifar10')
        assert c.pad == {'1': 4, '4': 0, '5': 4, '6': 8}.get(c.table, 0)
        assert ('_resnet18_half' if imagenet else '_resnet20') in c.model
        assert c.batch_size % c.reps == 0


def test_label_to_model_and_reps():
    by_label = {c.label: (c.model, c.reps, c.sleep_every) for c in cells('5', 'cifar10')}
    assert by_label == {
        'conv': ('conv_resnet20', 1, 0), 'LC': ('lc_resnet20', 1, 0), 'LC - 4 reps': ('lc_resnet20', 4, 0),
        'LC - 8 reps': ('lc_resnet20', 8, 0), 'LC - 16 reps': ('lc_resnet20', 16, 0),
        'LC - ws(1)': ('lc_resnet20_ws1', 1, 1), 'LC - ws(10)': ('lc_resnet20_ws10', 1, 10),
        'LC - ws(100)': ('lc_resnet20_ws100', 1, 100)}
    assert [c.label for c in cells('4', 'cifar10')] == ['conv', 'LC', 'LC - ws(1)', 'LC - ws(10)', 'LC - ws(100)']
    stems = {c.label: c.model for c in cells('13') if 'conv' in c.model and c.label != 'conv'}
    assert stems == {'LC + 1st layer conv': 'lc_resnet18_half_convstem',
                     'LC + 1st layer conv - ws(1)': 'lc_resnet18_half_convstem_ws1',
                     'LC + 1st layer conv - ws(10)': 'lc_resnet18_half_convstem_ws10',
                     'LC + 1st layer conv - ws(100)': 'lc_resnet18_half_convstem_ws100'}


def test_main_text_tables_repeat_the_appendix():
    # Table 1 is Table 5 (padding 4) and Table 2 is the plain-ResNet18 part of Table 13
    strip = lambda c: {k: v for k, v in vars(c).items() if k != 'table'}  # noqa: E731
    assert [strip(c) for c in cells('1')] == [strip(c) for c in cells('5')]
    assert [strip(c) for c in cells('2')] == [strip(c) for c in cells('13')[:5]]
    assert all('convstem' not in c.model for c in cells('2'))


def test_cells_rejects_unknown_table_or_dataset():
    with pytest.raises(ValueError, match='unknown table'):
        cells('3')  # Brain-Score, not an accuracy table
    with pytest.raises(ValueError, match='no .imagenet. column'):
        cells('5', 'imagenet')
    assert cells(5) == cells('5')


# ------------------------------------------------------- every number against the paper text itself

def _paper_tables():
    """{table id: [tab-separated rows]} from the paper's text file."""
    tables, current = {}, None
    for line in PAPER_TEXT.read_text().splitlines():
        m = re.match(r'Table (\d+): ', line)
        if m:
            current = m.group(1)
            tables[current] = []
        elif current and '\t' in line:
            tables[current].append(line.split('\t'))
        elif line.strip():
            current = None
    return tables


def _small_rows(rows):
    labels = {'conv', 'LC', 'LC - 4 reps', 'LC - 8 reps', 'LC - 16 reps', 'LC - ws(1)', 'LC - ws(10)', 'LC - ws(100)'}
    # the conv row's "Diff" cells read '-'; keep them so that the column positions stay fixed
    return {r[1]: [float('nan') if v.strip() == '-' else float(v) for v in r[2:] if v.strip()]
            for r in rows if r[1] in labels}


@pytest.mark.skipif(not PAPER_TEXT.exists(), reason='paper text not available')
def test_every_cell_matches_the_paper_text():
    tables = _paper_tables()
    pads = {'4': 0, '5': 4, '6': 8}
    spread_table = {'4': '7', '5': '8', '6': '9', '1': '8'}
    hparam_table = {'4': '10', '5': '11', '6': '12', '1': '11'}
    checked = 0
    for table in ('1', '4', '5', '6'):
        means = _small_rows(tables[table])
        spreads = _small_rows(tables[spread_table[table]])
        hparams = _small_rows(tables[hparam_table[table]])
        assert len(means) == (5 if table == '4' else 8)
        assert len(cells(table)) == 3 * len(means)
        for c in cells(table):
            assert c.pad == pads.get(table, 4)
            m, s, h = means[c.label], spreads[c.label], hparams[c.label]
            # mean columns: value, diff pairs; CIFAR10 top-1 | CIFAR100 top-1, top-5 | Tiny top-1, top-5
            top1_i, top5_i = {'cifar10': (0, None), 'cifar100': (1, 2), 'tinyimagenet': (3, 4)}[c.dataset]
            assert c.paper_top1 == m[2 * top1_i], c
            assert c.paper_spread == s[top1_i], c
            if top5_i is not None:
                assert c.paper_top5 == m[2 * top5_i], c
                assert c.paper_spread_top5 == s[top5_i], c
            d = SMALL.index(c.dataset)
            assert (c.lr, c.weight_decay) == (h[2 * d], h[2 * d + 1]), c
            checked += 1
    # ImageNet: Table 13 rows are (model group, connectivity, ws frequency, top-1, diff, top-5, diff)
    rows13, group = [], None
    for r in tables['13']:
        if r[1] not in ('conv', 'LC'):
            continue
        group = r[0] or group
        rows13.append((group, r[1], r[2], float(r[3]), float(r[5])))
    assert len(rows13) == len(cells('13'))
    for c, (grp, conn, freq, top1, top5) in zip(cells('13'), rows13):
        assert ('1st layer conv' in grp) == ('convstem' in c.model)
        assert c.model.startswith(conn.lower() + '_')
        assert c.sleep_every == (0 if freq == '-' else int(freq))
        assert (c.paper_top1, c.paper_top5) == (top1, top5)
        checked += 1
    rows2 = [(r[0], r[1], float(r[2]), float(r[4])) for r in tables['2'] if r[0] in ('conv', 'LC')]
    assert len(rows2) == len(cells('2'))
    for c, (conn, freq, top1, top5) in zip(cells('2'), rows2):
        assert c.model.startswith(conn.lower() + '_') and 'convstem' not in c.model
        assert c.sleep_every == (0 if freq == '-' else int(freq))
        assert (c.paper_top1, c.paper_top5) == (top1, top5)
        checked += 1
    assert checked == len(PAPER_CELLS)


# ----------------------------------------------------------------------------------- TrainConfig

@pytest.mark.parametrize('table,dataset,label,expected', [
    ('5', 'cifar10', 'LC - 8 reps',
     dict(model='lc_resnet20', reps=8, pad=4, lr=5e-4, weight_decay=1e-2, sleep_every=0)),
    ('6', 'tinyimagenet', 'LC - ws(10)',
     dict(model='lc_resnet20_ws10', reps=1, pad=8, lr=1e-3, weight_decay=1e-4, sleep_every=10)),
    ('4', 'cifar100', 'conv',
     dict(model='conv_resnet20', reps=1, pad=0, lr=1e-2, weight_decay=1e-2, sleep_every=0)),
    ('13', 'imagenet', 'LC + 1st layer conv - ws(10)',
     dict(model='lc_resnet18_half_convstem_ws10', reps=1, pad=0, lr=5e-4, weight_decay=1e-2, sleep_every=10,
          batch_size=256)),
])
def test_train_config(table, dataset, label, expected):
    config = cell_train_config(_cell(table, dataset, label))
    assert isinstance(config, TrainConfig)
    expected = dict(dict(dataset=dataset, batch_size=256 if dataset == 'imagenet' else 512, epochs=200,
                         lr_milestones=(100, 150), lr_decay=0.25, opt='adamw', split='test'), **expected)
    assert {k: getattr(config, k) for k in expected} == expected


def test_train_config_overrides(tmp_path):
    cell = _cell('5', 'cifar10', 'LC - ws(10)')
    config = cell_train_config(cell, data_dir=str(tmp_path), seed=3, output_dir='out', batch_size=16, train_subset=64)
    assert (config.data_dir, config.seed, config.output_dir, config.batch_size, config.train_subset) == \
        (str(tmp_path), 3, 'out', 16, 64)
    assert (config.lr, config.model, config.sleep_every) == (5e-4, 'lc_resnet20_ws10', 10)
    # a shorter run keeps the schedule's shape, as the paper's grid searches did (B.1, B.2)
    assert cell_train_config(cell, epochs=50).lr_milestones == (25, 37)
    assert cell_train_config(cell, epochs=20).lr_milestones == (10, 15)
    assert cell_train_config(cell, epochs=1).lr_milestones == ()
    assert cell_train_config(cell, epochs=50, lr_milestones=(40,)).lr_milestones == (40,)
    with pytest.raises(TypeError, match='unknown TrainConfig field'):
        cell_train_config(cell, learning_rate=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.lr = 1.0


# ----------------------------------------------------------------------------- comparison table

def test_format_paper_comparison():
    conv, ws1 = _cell('5', 'cifar100', 'conv'), _cell('5', 'cifar100', 'LC - ws(1)')
    rows = [summarize_runs(conv, [dict(top1=60.0, top5=85.0), dict(top1=61.0, top5=86.0)], [0, 1], ['a', 'b']),
            summarize_runs(ws1, [dict(top1=57.0, top5=82.0), dict(top1=58.0, top5=84.0)], [0, 1], ['c', 'd'])]
    assert rows[1]['top1'] == 57.5 and rows[1]['top1_spread'] == 1.0
    assert rows[1]['diff_top1'] == pytest.approx(57.5 - 58.7)
    text = format_paper_comparison(rows)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith('| table | dataset |')
    assert '| 5 | cifar100 | 4 | LC - ws(1) | 2 | 57.50 ± 0.50 | 58.7 ± 0.55 | -1.20 | -3.00 / -0.5 |' in lines[3]
    assert '83.00 ± 1.00 | 83.4 ± 0.45 | -0.40 |' in lines[3]
    assert '| conv | 2 | 60.50 ± 0.50 | 59.2 ± 0.75 | +1.30 | - |' in lines[2]


# --------------------------------------------------------------------------------- end to end

def _pickle_py2_style(obj, path):
    """Write ``obj`` the way the CIFAR site's files are: dict keys and names as bytes (python 2 str)."""
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)


def write_fake_cifar10(root: Path, per_batch: int = 16, n_test: int = 32) -> Path:
    """Tiny CIFAR10 in the real layout: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    rng = np.random.default_rng(0)
    folder = root / 'cifar-10-batches-py'
    folder.mkdir(parents=True)
    for name, n in [(f'data_batch_{i}', per_batch) for i in range(1, 6)] + [('test_batch', n_test)]:
        _pickle_py2_style({b'batch_label': name.encode(), b'labels': rng.integers(0, 10, n).tolist(),
                           b'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                           b'filenames': [f'{i}.png'.encode() for i in range(n)]}, folder / name)
    _pickle_py2_style({b'label_names': [f'class{i}'.encode() for i in range(10)], b'num_cases_per_batch': per_batch,
                       b'num_vis': 3072}, folder / 'batches.meta')
    return root


def _smoke_kwargs(tmp_path, **extra):
    return dict(dict(data_dir=str(write_fake_cifar10(tmp_path / 'data')), seeds=[0], output_root=str(tmp_path / 'runs'),
                     epochs=1, train_subset=64, eval_subset=32, val_size=16, batch_size=16, device='cpu',
                     progress=False), **extra)


def test_run_table_orchestration(tmp_path, monkeypatch):
    """Every cell of Table 1 (CIFAR10) through run_table with a stand-in for train(): folders, configs,
    aggregation over seeds, the written comparison, resuming, and refusing runs made with other settings."""
    seen = []

    def fake_train(config):
        seen.append(config)
        folder = Path(config.output_dir)
        folder.mkdir(parents=True)
        final = dict(top1=10.0 + config.reps + config.seed, top5=50.0, loss=2.0)
        (folder / 'config.json').write_text(json.dumps(dataclasses.asdict(config)))
        (folder / 'result.json').write_text(json.dumps(dict(final=final)))
        return SimpleNamespace(final=final, output_dir=str(folder))

    monkeypatch.setattr('bioconv_timm.train.sweep.train', fake_train)
    kwargs = _smoke_kwargs(tmp_path, seeds=[0, 1], verbose=False)
    out = Path(kwargs['output_root'])
    rows = run_table('1', 'cifar10', **kwargs)
    expected = cells('1', 'cifar10')
    assert len(seen) == 2 * len(expected) == 16
    for cell, row in zip(expected, rows):
        configs = [c for c in seen if c.model == cell.model and c.reps == cell.reps]
        assert [c.seed for c in configs] == [0, 1]
        for c in configs:
            assert (c.lr, c.weight_decay, c.pad, c.sleep_every, c.batch_size, c.epochs, c.train_subset,
                    c.eval_subset, c.val_size, c.device, c.data_dir, c.resume, c.progress) == \
                (cell.lr, cell.weight_decay, 4, cell.sleep_every, 16, 1, 64, 32, 16, 'cpu', kwargs['data_dir'],
                 True, False)
            assert c.output_dir == str(out / '1' / 'cifar10' / f'{cell.slug}-seed{c.seed}')
        assert row['label'] == cell.label and row['seeds'] == [0, 1]
        assert row['top1_runs'] == [10.0 + cell.reps, 11.0 + cell.reps]
        assert row['top1'] == 10.5 + cell.reps and row['top1_spread'] == 1.0
        assert row['diff_top1'] == pytest.approx(10.5 + cell.reps - cell.paper_top1)
    saved = json.loads((out / 'table1-cifar10.json').read_text())
    assert [r['label'] for r in saved] == [c.label for c in expected]
    markdown = (out / 'table1-cifar10.md').read_text()
    assert '| 1 | cifar10 | 4 | LC - 16 reps | 2 | 26.50 ± 0.50 | 85.0 ± 0.35 | -58.50 | +15.00 / -3.3 |' in markdown

    seen.clear()
    again = run_table('1', 'cifar10', **kwargs)  # everything is done: nothing is retrained
    assert not seen and [r['reused'] for r in again] == [2] * 8
    assert [r['top1'] for r in again] == [r['top1'] for r in rows]
    more = run_table('1', 'cifar10', **dict(kwargs, seeds=[0, 1, 2], labels=['LC - ws(10)']))
    assert [(c.model, c.seed) for c in seen] == [('lc_resnet20_ws10', 2)] and more[0]['reused'] == 2
    with pytest.raises(CheckpointError, match='other settings .*epochs: 1 there vs 2 now'):
        run_table('1', 'cifar10', **dict(kwargs, epochs=2))
    with pytest.raises(ValueError, match='no row'):
        run_table('1', 'cifar10', **dict(kwargs, labels=['LC - ws(5)']))


def _check_real_runs(rows, selected, out):
    assert [r['label'] for r in rows] == [c.label for c in selected]
    for cell, row in zip(selected, rows):
        folder = run_dir(out, cell, 0)
        assert folder == out / '1' / 'cifar10' / f'{cell.slug}-seed0'
        result = json.loads((folder / 'result.json').read_text())
        assert row['top1'] == pytest.approx(result['final']['top1'])
        assert 0.0 <= row['top1'] <= 100.0 and row['reused'] == 0 and row['paper_top1'] == cell.paper_top1
        config = json.loads((folder / 'config.json').read_text())
        assert (config['model'], config['reps'], config['lr'], config['weight_decay'], config['pad'],
                config['batch_size'], config['epochs'], config['sleep_every'], config['num_classes']) == \
            (cell.model, cell.reps, cell.lr, cell.weight_decay, 4, 16, 1, cell.sleep_every, 10)
        assert (folder / 'model.safetensors').exists() and (folder / 'metrics.csv').exists()


def test_run_table_end_to_end(tmp_path):
    """All 8 rows of Table 1 (CIFAR10) really trained for 1 epoch on fake CIFAR10 files (16 images, batch
    16: 33 optimizer steps in all), each cell's network as a ResNet-8 (model_kwargs, one block per stage: what is
    checked is that every cell's run is made and read back, not the depth)."""
    kwargs = _smoke_kwargs(tmp_path, train_subset=16, eval_subset=16, model_kwargs=dict(layers=(1, 1, 1)))
    rows = run_table('1', 'cifar10', **kwargs)
    out = Path(kwargs['output_root'])
    _check_real_runs(rows, cells('1', 'cifar10'), out)
    assert '| 1 | cifar10 | 4 | LC - 16 reps | 1 |' in (out / 'table1-cifar10.md').read_text()


# ------------------------------------------------------------------------------ the script

def _load_script():
    import importlib.util
    path = Path(__file__).resolve().parents[1] / 'scripts' / 'run_paper_table.py'
    spec = importlib.util.spec_from_file_location('run_paper_table', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_arguments(tmp_path, monkeypatch, capsys):
    script = _load_script()
    assert script.main(['13', '--list']) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 1 + 9 and 'lc_resnet18_half_convstem_ws100' in listing[-1]
    with pytest.raises(SystemExit):
        script.main(['2', '--dataset', 'cifar10'])
    assert script._data_dirs(['/d']) == '/d'
    assert script._data_dirs(['cifar10=/a', 'tinyimagenet=/b']) == {'cifar10': '/a', 'tinyimagenet': '/b'}

    seen = []

    def fake_train(config):
        seen.append(config)
        Path(config.output_dir).mkdir(parents=True)
        final = dict(top1=50.0, top5=80.0, loss=1.0)
        (Path(config.output_dir) / 'result.json').write_text(json.dumps(dict(final=final)))
        return SimpleNamespace(final=final)

    monkeypatch.setattr('bioconv_timm.train.sweep.train', fake_train)
    out = tmp_path / 'runs'
    tin = tmp_path / 'tin'  # data folders must exist (the settings check them)
    tin.mkdir()
    assert script.main(['6', '--data-dir', 'cifar100=/c100', '--data-dir', f'tinyimagenet={tin}', '--dataset',
                        'tinyimagenet', '--rows', 'conv', 'LC - 8 reps', '--seeds', '3', '--epochs', '20',
                        '--batch-size', '64', '--split', 'val', '--workers', '2', '--output-root', str(out)]) == 0
    assert [(c.model, c.reps, c.seed, c.data_dir, c.epochs, c.lr_milestones, c.batch_size, c.split,
             c.num_workers, c.pad, c.lr, c.weight_decay) for c in seen] == [
        ('conv_resnet20', 1, 3, str(tin), 20, (10, 15), 64, 'val', 2, 8, 5e-3, 1e-2),
        ('lc_resnet20', 8, 3, str(tin), 20, (10, 15), 64, 'val', 2, 8, 5e-4, 1e-4)]
    assert (out / 'table6-tinyimagenet.md').exists()
