"""FSDP sharding of LC models with the sleep phase: 2 CPU processes (gloo) against one unsharded process."""
import gc
import os
import socket
import sys

import pytest
import torch
import torch.nn as nn

import bioconv_timm
from bioconv_timm.hebbian_sleep import HebbianSleepConfig, hebbian_share_weights_
from bioconv_timm.layers import LocallyConnected2d
from bioconv_timm.sharding import fsdp_wrap, gathered_lc_layers, is_fsdp
from bioconv_timm.sleep import share_tensor_
from bioconv_timm.sleep_hook import SleepHook

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == 'win32',
                                reason='needs torch.distributed with gloo')

WORLD = 2
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _small_model() -> nn.Module:
    return nn.Sequential(LocallyConnected2d(3, 8, 3, 8, padding=1), nn.ReLU(),
                         LocallyConnected2d(8, 8, 3, 8, stride=2, padding=1), nn.Flatten(), nn.Linear(8 * 16, 5))


def _data(step: int):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(WORLD * 4, 3, 8, 8, generator=g), torch.randint(0, 5, (WORLD * 4,), generator=g)


def _train(model: nn.Module, rank: int, world: int, sleep) -> None:
    """STEPS AdamW steps on rank's quarter of each global batch, a sleep after each step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(STEPS):
        x, y = _data(step)
        per = x.shape[0] // world
        x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        sleep(model)


def _full_weights(model: nn.Module):
    return [layer.weight.detach().clone() for layer in gathered_lc_layers(model)]


def _sharded_run(rank: int, world: int, mode: str, out_path: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sharded = fsdp_wrap(_small_model(), device_id=torch.device('cpu'))
    local = sum(p.numel() for p in sharded.parameters())
    if mode == 'instant':  # through the trainer's hook, which must keep the FSDP root
        hook = SleepHook(sharded, every=1)
        sleep = lambda m: hook.sleep()  # noqa: E731
    else:
        sleep = lambda m: hebbian_share_weights_(m, HebbianSleepConfig(iterations=3, patterns=16))  # noqa: E731
    _train(sharded, rank, world, sleep)
    weights = _full_weights(sharded)
    if rank == 0:
        torch.save(dict(weights=weights, local=local, fsdp=is_fsdp(sharded)), out_path)


def _worker(rank: int, world: int, port: int, mode: str, out_path: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=world)
    try:
        _sharded_run(rank, world, mode, out_path)  # returns with the FSDP model (and its hold on gloo) released
        gc.collect()
        torch.distributed.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize('mode', ['instant', 'hebbian'])
def test_fsdp_training_with_sleep_matches_one_process(tmp_path, mode):
    out = str(tmp_path / 'rank0.pt')
    torch.multiprocessing.spawn(_worker, args=(WORLD, _free_port(), mode, out), nprocs=WORLD, join=True)
    result = torch.load(out, weights_only=True)

    torch.manual_seed(0)
    reference = _small_model()
    total = sum(p.numel() for p in reference.parameters())
    sleep = bioconv_timm.share_weights_ if mode == 'instant' else (
        lambda m: hebbian_share_weights_(m, HebbianSleepConfig(iterations=3, patterns=16)))
    _train(reference, 0, 1, sleep)

    assert result['fsdp'] and result['local'] <= total // WORLD + 64   # each rank holds about half
    for got, want in zip(result['weights'], _full_weights(reference)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    if mode == 'instant':  # shared: every module of locations holds one kernel
        for got, layer in zip(result['weights'], [m for m in reference.modules() if isinstance(m, LocallyConnected2d)]):
            shared = got.clone()
            share_tensor_(shared, layer.kernel_size)
            torch.testing.assert_close(got, shared, rtol=0, atol=1e-6)


def test_fsdp_wrap_errors():
    with pytest.raises(RuntimeError, match='init_process_group'):
        fsdp_wrap(_small_model())
    assert not is_fsdp(_small_model())
    assert len(list(gathered_lc_layers(_small_model()))) == 2


def test_sleep_hook_refuses_moment_policies_on_fsdp(monkeypatch):
    from bioconv_timm import sleep_hook
    monkeypatch.setattr(sleep_hook, 'is_fsdp', lambda m: True)
    with pytest.raises(ValueError, match="optimizer_policy='keep'"):
        sleep_hook.SleepHook(_small_model(), 10, optimizer_policy='average')
    sleep_hook.SleepHook(_small_model(), 10, optimizer_policy='keep')


def test_trainer_warns_before_a_model_outgrows_the_gpu(monkeypatch):
    import types
    import warnings

    import timm
    from bioconv_timm import train as train_mod
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
