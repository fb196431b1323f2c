import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bioconv_timm import _malloc
from bioconv_timm.cli import main
from bioconv_timm.models import model_table


def test_model_table_rows():
    rows = {r['name']: r for r in model_table()}
    assert rows['lc_resnet20_ws10']['sleep_every'] == 10
    assert rows['lc_resnet20']['sleep_every'] is None
    assert rows['lc_resnet20']['input_size'] == '3x32x32'
    assert rows['lc_resnet18_half_ws100']['input_size'] == '3x224x224'
    assert 40.4e6 < rows['lc_resnet20']['params'] < 41e6
    assert rows['lc_resnet18_half_convstem']['layer_type'] == 'lc (conv stem)'


def test_bioconv_list_prints_table(capsys):
    assert main(['list', '--filter', 'lc_resnet20*']) == 0
    out = capsys.readouterr().out
    assert 'lc_resnet20_ws100' in out and '40.81M' in out and 'conv_resnet20' not in out


def test_console_entry_point_runs_as_module():
    result = subprocess.run([sys.executable, '-m', 'bioconv_timm.cli', 'list', '--filter', 'conv_*'],
                            capture_output=True, text=True, check=True)
    assert 'conv_resnet18_half' in result.stdout


# ------------------------------------------------------------------ glibc malloc tuning of `bioconv` commands

GLIBC = _malloc.glibc_version()
TCMALLOC = '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4'


@pytest.mark.parametrize('env, glibc, tuned', [
    ({}, '2.36', True),
    ({'PATH': '/usr/bin'}, '2.17', True),
    ({}, None, False),                                                               # musl, macOS
    ({'BIOCONV_MALLOC_TUNING': '0'}, '2.36', False),                                 # opt-out
    ({'BIOCONV_MALLOC_TUNING': 'off'}, '2.36', False),
    ({'BIOCONV_MALLOC_TUNING': '1'}, '2.36', True),
    ({'GLIBC_TUNABLES': 'glibc.malloc.trim_threshold=0'}, '2.36', False),            # the user's malloc tunables
    ({'GLIBC_TUNABLES': 'glibc.cpu.hwcaps=-AVX512F'}, '2.36', True),                 # not about malloc
    ({'LD_PRELOAD': TCMALLOC}, '2.36', False),                                       # another allocator
    ({'LD_PRELOAD': '/opt/lib/libfaketime.so.1 /usr/lib/libjemalloc.so.2'}, '2.36', False),
    ({'LD_PRELOAD': 'libmimalloc.so:libfoo.so'}, '2.36', False),
    ({'LD_PRELOAD': '/opt/lib/libfaketime.so.1'}, '2.36', True),
])
def test_malloc_tuning_decision(env, glibc, tuned):
    plan = _malloc.tuning_plan(env, glibc)
    assert plan == ({'M_MMAP_MAX': 0, 'M_TRIM_THRESHOLD': 2 ** 31 - 1} if tuned else None)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', 'LD_PRELOAD', _malloc.OPT_OUT)}
    env.update(OMP_NUM_THREADS='1', **extra)
    return env


def _bench_allocator(command, tmp_path, env):
    out = tmp_path / 'bench.json'
    proc = subprocess.run(command + ['bench', '--shapes', 'tiny', '--impls', 'conv_cl', '--modes', 'fwd',
                                     '--repeats', '1', '--memory', 'none', '--models', 'none', '--json', str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    allocator = json.loads(out.read_text())['meta']['allocator']
    assert f"allocator: {allocator['summary']}" in proc.stdout.splitlines()[:3]  # in the report's header
    return allocator


@pytest.mark.skipif(GLIBC is None, reason='the C library is not glibc')
def test_bioconv_command_keeps_large_blocks_in_the_heap(tmp_path):
    script = Path(sys.executable).with_name('bioconv')  # the installed console script
    allocator = _bench_allocator([str(script)], tmp_path, _clean_env())
    assert allocator['setting'] == 'bioconv mallopt'
    assert allocator['mallopt'] == {'M_MMAP_MAX': 0, 'M_TRIM_THRESHOLD': 2 ** 31 - 1}
    assert allocator['large_blocks'] == 'heap'  # probed in the running command: a 64 MiB block is not mmapped


@pytest.mark.skipif(GLIBC is None, reason='the C library is not glibc')
def test_bioconv_command_opt_out_keeps_glibc_defaults(tmp_path):
    allocator = _bench_allocator([sys.executable, '-m', 'bioconv_timm.cli'], tmp_path,
                                 _clean_env(BIOCONV_MALLOC_TUNING='0'))
    assert allocator['setting'] == 'opted out' and allocator['mallopt'] is None
    assert allocator['large_blocks'] == 'mmap'


@pytest.mark.skipif(GLIBC is None, reason='the C library is not glibc')
def test_bioconv_command_leaves_the_users_glibc_tunables(tmp_path):
    allocator = _bench_allocator([sys.executable, '-m', 'bioconv_timm.cli'], tmp_path,
                                 _clean_env(GLIBC_TUNABLES=_malloc.GLIBC_TUNABLES_LINE))
    assert allocator['setting'] == 'GLIBC_TUNABLES' and allocator['mallopt'] is None
    assert allocator['glibc_tunables'] == _malloc.GLIBC_TUNABLES_LINE
    assert allocator['large_blocks'] == 'heap'  # the documented line for your own scripts does the same


def test_main_called_from_python_leaves_the_callers_allocator_alone(capsys):
    assert main(['list', '--filter', 'conv_resnet20']) == 0
    assert _malloc.describe()['mallopt'] is None


def test_bioconv_export_writes_an_onnx_file_that_matches(tmp_path, capsys):
    """`bioconv export MODEL OUT.onnx`: one line with the file, its size and the onnxruntime check."""
    pytest.importorskip('onnxruntime')
    from bioconv_timm.cli import main
    out = tmp_path / 'conv.onnx'
    assert main(['export', 'conv_resnet20', str(out), '--img-size', '16']) == 0
    line = capsys.readouterr().out.strip()
    assert out.is_file() and line.startswith(f'wrote {out} (') and 'onnxruntime matches PyTorch at batch' in line
    assert main(['export', 'conv_resnet20', str(tmp_path)]) == 2  # a folder, not a file: refused before work
    assert 'is a folder: pass the name of the file to write, e.g.' in capsys.readouterr().err
