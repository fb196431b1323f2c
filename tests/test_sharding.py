"""FSDP2 sharding of LC models with the sleep phase: 2 CPU processes (gloo) against one unsharded process."""
import gc
import os
import socket
import sys
import warnings

import pytest
import torch
import torch.nn as nn

from bioconv_timm import sharding
from bioconv_timm.sleep import hook as sleep_hook
from bioconv_timm.sleep.hebbian import HebbianSleepConfig, hebbian_share_weights_
from bioconv_timm.layers import LocallyConnected2d
from bioconv_timm.sharding import fsdp_wrap, gathered_lc_layers, gathered_tensor, is_fsdp, is_fsdp_unit
from bioconv_timm.sleep import share_tensor_, share_weights_
from bioconv_timm.sleep import SleepHook

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == 'win32',
                                reason='needs torch.distributed with gloo')

WORLD = 2
STEPS = 2
SMALL_HEBBIAN = HebbianSleepConfig(iterations=3, patterns=16)
# mode -> SleepHook arguments: the instant sleep averaging AdamW's moments, the Hebbian one resetting them
HOOKS = {'instant': dict(mode='instant', optimizer_policy='average'),
         'hebbian': dict(mode='hebbian_small', optimizer_policy='reset')}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _small_model() -> nn.Module:
    # 7 output rows in the first LC layer: 4 + 3 on two ranks, so the shards are uneven
    # a per-location bias in the first LC layer, none in the second
    return nn.Sequential(LocallyConnected2d(3, 8, 3, 7, padding=1, bias=True), nn.ReLU(),
                         LocallyConnected2d(8, 8, 3, 7, stride=2, padding=1), nn.Flatten(), nn.Linear(8 * 16, 5))


def _data(step: int):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(WORLD * 4, 3, 7, 7, generator=g), torch.randint(0, 5, (WORLD * 4,), generator=g)


def _train(model: nn.Module, rank: int, world: int, mode: str) -> torch.optim.Optimizer:
    """STEPS AdamW steps on rank's share of each global batch; the SleepHook sleeps after each step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    SleepHook(model, every=1, **HOOKS[mode]).attach(optimizer)
    for step in range(STEPS):
        x, y = _data(step)
        per = x.shape[0] // world
        x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def _full_weights(model: nn.Module):
    """{(layer index, 'weight' | 'bias'): the whole tensor}."""
    return {(i, name): p.detach().clone() for i, layer in enumerate(gathered_lc_layers(model))
            for name, p in layer.named_parameters()}


def _full_moments(model: nn.Module, optimizer: torch.optim.Optimizer):
    """{(layer index, 'weight' | 'bias', 'exp_avg' | 'exp_avg_sq'): the whole AdamW moment}."""
    moments = {}
    for i, layer in enumerate([m for m in model.modules() if isinstance(m, LocallyConnected2d)]):
        for name, param in layer.named_parameters():
            for key in ('exp_avg', 'exp_avg_sq'):
                with gathered_tensor(optimizer.state[param][key]) as whole:
                    moments[i, name, key] = whole.clone()
    return moments


def _fsdp1_refused() -> bool:
    """An FSDP1-wrapped model: the sleep and the SleepHook refuse it instead of sleeping on flat shards."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # FSDP1's deprecation notice
        model = FullyShardedDataParallel(_small_model(), device_id=torch.device('cpu'), use_orig_params=True,
                                         auto_wrap_policy=ModuleWrapPolicy({LocallyConnected2d}))
    refused = 0
    for attempt in (lambda: share_weights_(model), lambda: SleepHook(model, 1)):
        try:
            attempt()
        except TypeError as exc:
            refused += 'fsdp_wrap' in str(exc)
    return refused == 2


def _sharded_run(rank: int, world: int, mode: str, out_path: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sleep_hook.register_sleep_mode('hebbian_small', lambda m: hebbian_share_weights_(m, SMALL_HEBBIAN))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        sharded = fsdp_wrap(_small_model(), device_id=torch.device('cpu'))
        optimizer = _train(sharded, rank, world, mode)
    lc = [m for m in sharded.modules() if isinstance(m, LocallyConnected2d)]
    result = dict(
        local=sum(p.to_local().numel() if hasattr(p, 'to_local') else p.numel() for p in sharded.parameters()),
        units=is_fsdp(sharded) and is_fsdp_unit(sharded) and all(is_fsdp_unit(m) for m in lc),
        local_rows=[m.weight.to_local().shape[0] for m in lc],
        dtensor_moment=type(optimizer.state[lc[0].weight]['exp_avg']).__name__,
        view_warnings=[str(w.message) for w in caught if 'view tensor' in str(w.message)],
        weights=_full_weights(sharded), moments=_full_moments(sharded, optimizer))
    if mode == 'instant':
        result['fsdp1_refused'] = _fsdp1_refused()
    if rank == 0:
        torch.save(result, out_path)


def _worker(rank: int, world: int, port: int, out_paths: dict) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=world)
    try:
        for mode, out_path in out_paths.items():  # each run seeds itself and builds its own model and optimizer
            _sharded_run(rank, world, mode, out_path)  # returns with the FSDP model (and its hold on gloo) released
            gc.collect()
            torch.distributed.barrier()  # no rank tears gloo down (or starts the next run) while another still talks
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope='module')
def sharded_results(tmp_path_factory):
    """mode -> rank 0's result of the 2-process FSDP2 run in that mode: both modes' runs in one spawn of the 2
    processes (starting them is most of the time)."""
    folder = tmp_path_factory.mktemp('fsdp2')
    out_paths = {mode: str(folder / f'{mode}-rank0.pt') for mode in HOOKS}
    torch.multiprocessing.spawn(_worker, args=(WORLD, _free_port(), out_paths), nprocs=WORLD, join=True)
    return {mode: torch.load(path, weights_only=True) for mode, path in out_paths.items()}


@pytest.mark.parametrize('mode', ['instant', 'hebbian'])
def test_fsdp2_training_with_sleep_matches_one_process(sharded_results, monkeypatch, mode):
    result = sharded_results[mode]

    monkeypatch.setitem(sleep_hook.SLEEP_MODES, 'hebbian_small', lambda m: hebbian_share_weights_(m, SMALL_HEBBIAN))
    torch.manual_seed(0)
    reference = _small_model()
    total = sum(p.numel() for p in reference.parameters())
    optimizer = _train(reference, 0, 1, mode)

    assert result['units'] and result['local_rows'] == [4, 2]  # one unit per LC layer; rank 0 holds 4 of 7 rows
    # rank 0 holds the first ceil(n / 2) of each parameter's n rows: about half of everything
    assert result['local'] == sum(-(-p.shape[0] // WORLD) * p[0].numel() for p in reference.parameters()) < 0.54 * total
    assert result['dtensor_moment'] == 'DTensor' and result['view_warnings'] == []
    want = {**_full_weights(reference), **_full_moments(reference, optimizer)}
    got = {**result['weights'], **result['moments']}
    assert len(got) == 3 + 3 * 2 and set(got) == set(want)  # weight, bias, weight; two moments of each
    for key, value in got.items():
        assert value.shape == want[key].shape, key
        torch.testing.assert_close(value, want[key], rtol=1e-4, atol=1e-5, msg=str(key))
    layers = [m for m in reference.modules() if isinstance(m, LocallyConnected2d)]
    if mode == 'instant':  # weights and their AdamW moments shared: every module of locations holds one value
        for key, value in got.items():
            if key[1] == 'weight':
                shared = value.clone()
                share_tensor_(shared, layers[key[0]].kernel_size)
                torch.testing.assert_close(value, shared, rtol=0, atol=1e-6, msg=str(key))
        assert result['fsdp1_refused']
    else:  # 'reset' zeroed the moments at the last sleep
        assert all(bool((m == 0).all()) for m in result['moments'].values())


def test_fsdp_wrap_errors(monkeypatch):
    with pytest.raises(RuntimeError, match='init_process_group'):
        fsdp_wrap(_small_model())
    with pytest.raises(ValueError, match='no LocallyConnected2d'):
        fsdp_wrap(nn.Linear(2, 2))
    from torch.distributed.fsdp import MixedPrecision
    with pytest.raises(TypeError, match='MixedPrecisionPolicy'):  # FSDP1's class
        fsdp_wrap(_small_model(), mixed_precision=MixedPrecision(param_dtype=torch.bfloat16))
    assert not is_fsdp(_small_model())
    assert len(list(gathered_lc_layers(_small_model()))) == 2
    plain = torch.ones(3)
    with gathered_tensor(plain) as whole:  # an unsharded tensor is its own whole
        assert whole is plain
    monkeypatch.setattr(sharding, '_fsdp2', lambda: None)  # a torch without FSDP2 (< 2.6)
    with pytest.raises(RuntimeError, match='torch >= 2.6'):
        fsdp_wrap(_small_model())
    assert not is_fsdp(_small_model()) and share_weights_(_small_model()) == 2


def test_lc_output_views_refuse_inplace_ops():
    """Why fsdp_wrap may silence FSDP2's 'returned a view tensor' warning for LC units: an in-place op on the
    view (which would drop FSDP2's pre-backward hook) is an error, never a silent wrong gradient."""
    layer = LocallyConnected2d(3, 4, 3, 6, padding=1)
    out = layer(torch.randn(2, 3, 6, 6, requires_grad=True))
    if out._base is None:
        pytest.skip('this backend returns no view')
    with pytest.raises(RuntimeError, match='view and is being modified inplace'):
        out.relu_()


def test_trainer_warns_before_a_model_outgrows_the_gpu(monkeypatch):
    import types
    import warnings

    import timm
    from bioconv_timm.train import loop as train_mod
    model = timm.create_model('lc_resnet20')
    cfg = train_mod.TrainConfig(model='lc_resnet20', batch_size=128)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'small GPU')
    for gib, expect in ((0.5, True), (80, False)):
        monkeypatch.setattr(torch.cuda, 'get_device_properties',
                            lambda device=None, gib=gib: types.SimpleNamespace(total_memory=int(gib * 2 ** 30)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            train_mod._warn_if_too_big(model, cfg, torch.device('cuda', 0), use_amp=True, world=1)
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert bool(messages) == expect, messages
        if expect:
            assert 'lc_resnet20 with batch 128' in messages[0] and 'fsdp_wrap' in messages[0]
