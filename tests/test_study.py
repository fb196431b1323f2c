"""Study files (train.study) and their reports (train.study_report): a study is a YAML file, tuning picks each
cell's best (lr, weight decay) on the validation split, runs resume from their records, the report agrees with
them."""
import json
from pathlib import Path

import pytest

from bioconv_timm.errors import UserValueError
from bioconv_timm.train.study import (best_settings, load_records, load_study, main_runs, pending_runs, run_study,
                                      tuning_runs)
from bioconv_timm.train.study_report import close_pairs, final_lr_slope, write_report

TINY = """
name: tiny
description: two cells on digits
base: {dataset: digits, model_kwargs: {layers: [1, 1, 1]}, epochs: 2, batch_size: 32, train_subset: 64,
       eval_subset: 32, val_size: 32, progress: false, snr_at_sleep: false}
cells:
  conv: {label: conv, paper_row: conv, model: conv_resnet20}
  lc: {label: LC, paper_row: LC, model: lc_resnet20}
  lc_copy: {label: LC again, model: lc_resnet20, tune_as: lc}
tune: {lr: [1.0e-3, 4.0e-3], weight_decay: [1.0e-4], seed: 0, extend: 0}
seeds: [0, 1]
extra_seeds: {lc: [2]}
"""


def _study(tmp_path: Path, text: str = TINY):
    path = tmp_path / 'study.yaml'
    path.write_text(text + f'runs_dir: {tmp_path / "runs"}\nrecords: {tmp_path / "records"}\n')
    return load_study(path), path


def _fake(study, run, top1: float, train=(50.0, 80.0, 90.0, 90.5)):
    history = [dict(epoch=i + 1, step=10.0 * (i + 1), train_top1=t, eval_top1=top1 - 1 + i / 3)
               for i, t in enumerate(train)]
    history[-1]['eval_top1'] = top1
    rec = dict(name=run.name, phase=run.phase, cell=run.cell, seed=run.seed, settings=run.settings,
               config=dict(final_sleep=False), seconds=60.0, history=history, final=dict(top1=top1),
               top1_last_step=top1, train_top1_last_epoch=train[-1], steps=40)
    Path(study.records).mkdir(parents=True, exist_ok=True)
    (Path(study.records) / f'{run.name}.json').write_text(json.dumps(rec))


def test_tuning_picks_the_best_val_pair_and_main_runs_follow(tmp_path):
    study, _ = _study(tmp_path)
    runs = tuning_runs(study, {})
    assert sorted(r.name for r in runs) == sorted(f'tune-{c}-lr{lr:g}-wd0.0001' for c in ('conv', 'lc')
                                                  for lr in (1e-3, 4e-3))
    assert all(r.settings['split'] == 'val' for r in runs)
    assert main_runs(study, best_settings(study, {})) == []  # nothing before tuning is done
    for run, top1 in zip(runs, (70.0, 75.0, 80.0, 60.0)):  # conv: 4e-3 best; lc: 1e-3 best
        _fake(study, run, top1)
    best = best_settings(study, load_records(study))
    assert best['conv'] == {'lr': 4e-3, 'weight_decay': 1e-4}
    assert best['lc'] == best['lc_copy'] == {'lr': 1e-3, 'weight_decay': 1e-4}
    main = main_runs(study, best)
    assert [r.name for r in main if r.cell == 'lc'] == ['main-lc-seed0', 'main-lc-seed1', 'main-lc-seed2']
    assert all(r.settings['split'] == 'test' and r.config(study).split == 'test' for r in main)
    assert {r.config(study).lr for r in main if r.cell == 'lc_copy'} == {1e-3}


def test_a_best_lr_at_the_grid_edge_is_followed_one_octave(tmp_path):
    study, _ = _study(tmp_path, TINY.replace('extend: 0', 'extend: 1'))
    runs = {r.name: r for r in tuning_runs(study, {})}
    for name, run in runs.items():
        _fake(study, run, 90.0 if 'lr0.004' in name else 50.0)  # the top lr wins for both cells
    extended = {r.name for r in tuning_runs(study, load_records(study))} - set(runs)
    assert extended == {'tune-conv-lr0.008-wd0.0001', 'tune-lc-lr0.008-wd0.0001'}
    assert best_settings(study, load_records(study)) == {}  # not chosen until the extension has run


def test_weight_decays_are_tried_at_the_best_lr_and_the_best_of_all_is_chosen(tmp_path):
    study, _ = _study(tmp_path, TINY.replace('weight_decay: [1.0e-4]', 'weight_decay: [1.0e-4, 1.0e-2]'))
    first = tuning_runs(study, {})
    assert {r.settings['weight_decay'] for r in first} == {1e-4}  # the lr stage first
    for run in first:
        _fake(study, run, {(0.001, 'conv'): 70.0, (0.004, 'conv'): 72.0, (0.001, 'lc'): 66.0,
                           (0.004, 'lc'): 65.0}[run.settings['lr'], run.cell])
    second = [r for r in tuning_runs(study, load_records(study)) if r not in first]
    assert sorted((r.cell, r.settings['lr'], r.settings['weight_decay']) for r in second) == [
        ('conv', 0.004, 0.01), ('lc', 0.001, 0.01)]
    assert best_settings(study, load_records(study)) == {}  # not before the weight-decay stage has run
    _fake(study, second[0], 73.0 if second[0].cell == 'conv' else 60.0)
    _fake(study, second[1], 73.0 if second[1].cell == 'conv' else 60.0)
    best = best_settings(study, load_records(study))
    assert best['conv'] == {'lr': 0.004, 'weight_decay': 0.01} and best['lc'] == {'lr': 0.001, 'weight_decay': 1e-4}


def test_pending_runs_finish_a_cell_before_the_next_and_extra_seeds_come_last(tmp_path):
    study, _ = _study(tmp_path)
    assert [r.name for r in pending_runs(study, {})][:2] == ['tune-conv-lr0.001-wd0.0001', 'tune-conv-lr0.004-wd0.0001']
    for run in tuning_runs(study, {}):
        _fake(study, run, 70.0)
    names = [r.name for r in pending_runs(study, load_records(study))]
    assert names == ['main-conv-seed0', 'main-conv-seed1', 'main-lc-seed0', 'main-lc-seed1', 'main-lc_copy-seed0',
                     'main-lc_copy-seed1', 'main-lc-seed2']
    assert [r.name for r in pending_runs(study, load_records(study), phases=('tune',))] == []


@pytest.mark.parametrize('edit, words', [
    (('epochs: 2', 'epochs: -2'), 'epochs'),
    (('tune_as: lc', 'tune_as: nope'), "'nope' is not a cell"),
    (('extra_seeds: {lc: [2]}', 'extra_seeds: {ghost: [2]}'), 'ghost'),
    (('seeds: [0, 1]', ''), 'missing seeds'),
])
def test_a_bad_study_file_is_refused_before_training_naming_the_file(tmp_path, edit, words):
    with pytest.raises(Exception) as info:
        _study(tmp_path, TINY.replace(*edit))
    assert 'study.yaml' in str(info.value) or 'epochs' in str(info.value)
    assert words in str(info.value)
    assert not (tmp_path / 'runs').exists()


def test_an_unreadable_study_file_is_a_user_error(tmp_path):
    with pytest.raises(UserValueError, match='cannot read study file'):
        load_study(tmp_path / 'missing.yaml')
    (tmp_path / 'bad.yaml').write_text('name: [unclosed')
    with pytest.raises(UserValueError, match='not YAML'):
        load_study(tmp_path / 'bad.yaml')


def test_a_tiny_study_trains_records_resumes_and_reports(tmp_path):
    study, path = _study(tmp_path)
    log = []
    records = run_study(study, jobs=1, log=log.append)
    names = set(records)
    assert {'tune-lc-lr0.001-wd0.0001', 'main-conv-seed1', 'main-lc-seed2', 'main-lc_copy-seed0'} <= names
    rec = records['main-lc-seed0']
    assert rec['steps'] == 4 and len(rec['history']) == 2 and rec['config']['seed'] == 0
    assert rec['top1_last_step'] == rec['history'][-1]['eval_top1']
    again = []
    assert set(run_study(study, jobs=1, log=again.append)) == names and again == []  # nothing retrained
    report = write_report(study, str(path)).read_text()
    assert '## 1. Tuning on the validation split' in report and '## 3. Against LC, paired by seed' in report
    lc = [r['top1_last_step'] for n, r in records.items() if n.startswith('main-lc-seed')]
    assert '| LC | ' in report and f'{sum(lc) / 3:.2f}' in report
    assert Path(study.records).with_suffix('.png').exists()


def test_final_lr_slope_and_close_pairs():
    lrs = (1.0, 1.0, 1.0, 0.5, 0.5, 0.1, 0.1, 0.1)
    train = (10, 50, 80, 89, 90, 92, 92.5, 93)
    rec = dict(history=[dict(step=100 * (i + 1), lr=lr, train_top1=t) for i, (lr, t) in enumerate(zip(lrs, train))])
    assert final_lr_slope(rec) == pytest.approx((93 - 92) / 200 * 1000)  # epochs 6..8 at lr 0.1: the jump left out
    rec['history'][-1]['lr'] = 0.01   # one epoch at the final rate: no slope to take
    assert final_lr_slope(rec) is None
    by_cell = {'lc': {0: 80.0, 1: 81.0, 2: 80.5}, 'far': {0: 85.0, 1: 86.1, 2: 85.4},
               'near': {0: 80.5, 1: 80.5, 2: 81.0}}
    assert [c for c, *_ in close_pairs(by_cell)] == ['near']


def test_a_non_finite_metric_is_recorded_as_null_not_refused(tmp_path):
    from bioconv_timm.train.run_log import read_history, write_csv
    # ws(1)'s -log SNR is -inf after every sleep (all copies equal): the record keeps the run, with null there
    write_csv(tmp_path / 'metrics.csv', [dict(epoch=1, neg_log_snr=float('-inf'), eval_top1=''),
                                         dict(epoch=2, neg_log_snr=float('nan'), eval_top1=2.5)])
    assert read_history(tmp_path) == [dict(epoch=1.0, neg_log_snr=None, eval_top1=None),
                                      dict(epoch=2.0, neg_log_snr=None, eval_top1=2.5)]


def test_a_study_can_reuse_another_studys_tuning_and_says_so(tmp_path):
    source, _ = _study(tmp_path)
    for run, top1 in zip(tuning_runs(source, {}), (70.0, 75.0, 80.0, 60.0)):  # conv: 4e-3 best; lc: 1e-3 best
        _fake(source, run, top1)
    longer = tmp_path / 'longer.yaml'
    longer.write_text(TINY.replace('name: tiny', 'name: longer').replace('epochs: 2', 'epochs: 4').replace(
        'tune: {lr: [1.0e-3, 4.0e-3], weight_decay: [1.0e-4], seed: 0, extend: 0}', 'tune: {from: study.yaml}')
        + f'runs_dir: {tmp_path / "runs_long"}\nrecords: {tmp_path / "records_long"}\n')
    study = load_study(longer)
    assert tuning_runs(study, {}) == []
    best = best_settings(study, {})
    assert best['conv'] == {'lr': 4e-3, 'weight_decay': 1e-4} and best['lc_copy'] == best['lc']
    assert {r.cell for r in pending_runs(study, {})} == {'conv', 'lc', 'lc_copy'}
    assert all(r.config(study).epochs == 4 for r in pending_runs(study, {}))
    for run in main_runs(study, best):
        _fake(study, run, 85.0)  # conv and LC equal in every seed: no gap to take a fraction of
    report = write_report(study, longer).read_text()
    assert 'no gap' in report
    assert 'reuses the tuning of the study `tiny`' in report and '**80.00 (90.5)**' in report

    longer.write_text(longer.read_text().replace('lc_copy: {label: LC again, model: lc_resnet20, tune_as: lc}',
                                                 'lc_new: {label: new, model: lc_resnet20}'))
    with pytest.raises(UserValueError, match='tune from study.yaml: its study has no cell lc_new'):
        load_study(longer)


def test_run_study_trains_only_the_cells_asked_for_and_the_tuning_they_reuse(tmp_path):
    study, _ = _study(tmp_path)
    with pytest.raises(UserValueError, match="no cell ghost; its cells: conv, lc, lc_copy"):
        run_study(study, jobs=1, cells=('ghost',))
    records = run_study(study, jobs=1, log=lambda _: None, cells=('lc_copy',))
    assert {r['cell'] for r in records.values()} == {'lc', 'lc_copy'}
    assert {r['phase'] for r in records.values() if r['cell'] == 'lc'} == {'tune'}
