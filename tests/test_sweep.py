"""One runner for grids of runs (bioconv_timm.train.sweep): finished runs are read back, the others trained,
one at a time or in worker processes, with the results in the order given."""
import json

import pytest

from bioconv_timm.train import TrainConfig
from bioconv_timm.train.data import DatasetError
from bioconv_timm.train.sweep import sweep

# ResNet-8s (one block per stage): what is checked is the runner, not the depth
TINY = dict(dataset='digits', train_subset=32, eval_subset=16, batch_size=16, epochs=1, progress=False,
            resume=True, model_kwargs=dict(layers=(1, 1, 1)))


def _grid(root, models=('conv_resnet20', 'lc_resnet20')):
    return [TrainConfig(model=m, output_dir=str(root / m), **TINY) for m in models]


def test_sweep_in_two_processes_equals_one_after_another(tmp_path):
    """jobs=2 trains in worker processes (one torch thread each) and gives the results of jobs=1, in order;
    a second sweep reads every finished run back."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count, so that both ways compute alike
    try:
        serial = sweep(_grid(tmp_path / 'serial'), jobs=1)
    finally:
        torch.set_num_threads(threads)
    seen = []
    parallel = sweep(_grid(tmp_path / 'parallel'), jobs=2, on_done=lambda o, left: seen.append((o.index, left)))
    assert [o.config.model for o in parallel] == ['conv_resnet20', 'lc_resnet20']
    assert [o.result['final'] for o in parallel] == [o.result['final'] for o in serial]
    assert sorted(i for i, _ in seen) == [0, 1] and sorted(left for _, left in seen) == [0, 1]
    assert not any(o.reused for o in parallel)
    again = sweep(_grid(tmp_path / 'parallel'), jobs=2)
    assert all(o.reused for o in again) and [o.result['final'] for o in again] == [o.result['final'] for o in serial]
    for o in parallel:
        assert json.loads((tmp_path / 'parallel' / o.config.model / 'result.json').read_text())['final'] == \
            o.result['final']


def test_a_failing_run_is_reported_after_the_others_end(tmp_path):
    """A run that fails in a worker raises its own error (here: no Fashion-MNIST files in its data folder)."""
    empty = tmp_path / 'empty'
    empty.mkdir()
    configs = _grid(tmp_path, models=('conv_resnet20',))
    configs.append(TrainConfig(model='conv_resnet20', **dict(TINY, dataset='fashion-mnist'), data_dir=str(empty),
                               output_dir=str(tmp_path / 'fm')))
    with pytest.raises(DatasetError):
        sweep(configs, jobs=2)
    assert (tmp_path / 'conv_resnet20' / 'result.json').exists()


def test_two_runs_of_one_sweep_cannot_share_a_folder(tmp_path):
    config = TrainConfig(model='conv_resnet20', output_dir=str(tmp_path / 'same'), **TINY)
    with pytest.raises(ValueError, match='share the folder'):
        sweep([config, config])
