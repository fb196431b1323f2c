"""The command line starts at once: ``--help``, every ``<command> --help``, ``bioconv list`` and a bad flag import
neither torch nor timm (~5 s and ~10 s to import), and ``import bioconv_timm`` still registers the models with timm.

Each case runs in a fresh interpreter and asserts on the modules it loaded, never on wall time (shared machines).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from bioconv_timm.cli import COMMAND_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ('torch', 'timm', 'torchvision')

# calls bioconv's main in this interpreter, then reports its exit status and the heavy packages it loaded
_PROBE = """
import json, sys
from bioconv_timm.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(%r))
print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)
""" % (HEAVY,)


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-c', code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def bioconv(*argv: str) -> Tuple[int, List[str], str]:
    """(exit status, heavy packages imported, stderr without the probe's line) of ``bioconv argv``."""
    proc = _run(_PROBE, *argv)
    lines = proc.stderr.strip().splitlines()
    assert lines, proc.stderr
    report = json.loads(lines[-1])
    return report['code'], report['heavy'], '\n'.join(lines[:-1])


def _help_argvs() -> List[List[str]]:
    return [['--help']] + [name.split() + ['--help'] for name in COMMAND_SETTINGS] + [['brainscore', '--help']]


@pytest.mark.parametrize('argv', _help_argvs(), ids=lambda a: ' '.join(a))
def test_help_imports_no_torch_or_timm(argv):
    code, heavy, err = bioconv(*argv)
    assert code == 0, err
    assert heavy == [], f'bioconv {" ".join(argv)} imported {heavy}'


def test_list_reads_the_registry_without_torch():
    code, heavy, err = bioconv('list', '--filter', 'lc_resnet20*')
    assert (code, heavy) == (0, []), err


@pytest.mark.parametrize('argv, message', [
    (['train', '--epochs', '-1'], 'epochs (--epochs) = -1 must be >= 1'),
    (['train', '--dataset', 'mnist'], "dataset (--dataset) = 'mnist' is not one of"),
    (['train', '--seed', '-1'], 'seed (--seed) = -1'),  # after --opt and --model in field order: checks run last
    (['train', '--epochs', 'x'], "invalid int value: 'x'"),
    (['compare', '--seeds', '-1'], 'seeds (--seeds)'),
    (['bench', '--threads', '0'], 'threads (--threads) = 0'),
    (['bench', '--shapes', 'none', '--models', 'none'], 'leaves nothing to time with --shapes none'),
    (['sleep-sim', '--runs', '0'], 'runs (--runs) = 0'),
    (['list', '--filter', 'no_such_model*'], 'matches no registered model'),
    (['export', 'lc_resnet20', 'out.onnx', '--opset', '3'], 'opset (--opset) = 3'),
])
def test_a_bad_flag_is_reported_before_torch_is_imported(argv, message):
    code, heavy, err = bioconv(*argv)
    assert code == 2 and message in err, err
    assert len(err.splitlines()) == 1, err
    assert heavy == [], f'bioconv {" ".join(argv)} imported {heavy} before reporting: {err}'


def test_our_model_names_are_checked_without_timm():
    """A registered bioconv name is answered from the registry; another name still asks timm."""
    code = ("import sys\n"
            "from bioconv_timm.settings import registered_model_problem as p\n"
            "assert p('lc_resnet18_half_ws10.in1k') is None and 'timm' not in sys.modules\n"
            "assert p('no_such_model') and p('resnet50') is None and 'timm' in sys.modules\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize('first', ['bioconv_timm', 'timm', 'bioconv_timm.models'])
def test_import_bioconv_timm_registers_the_models_with_timm(first):
    """Importing the package loads no torch, yet timm finds our models whichever is imported first."""
    code = (f"import sys, importlib\n"
            f"importlib.import_module({first!r})\n"
            "import bioconv_timm\n"
            f"assert {first!r} == 'timm' or not {{'torch', 'timm'}} & set(sys.modules), sorted(sys.modules)\n"
            "import timm\n"
            "model = timm.create_model('lc_resnet20', num_classes=10)\n"
            "assert type(model).__name__ == 'BioResNet'\n"
            "assert set(bioconv_timm.MODEL_NAMES) <= set(timm.list_models())\n"
            "assert bioconv_timm.LocallyConnected2d.__name__ == 'LocallyConnected2d'\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr


def test_the_public_names_load_on_first_use():
    code = ("import sys, bioconv_timm\n"
            "assert 'torch' not in sys.modules\n"
            "missing = [n for n in bioconv_timm.__all__ if getattr(bioconv_timm, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert set(bioconv_timm.__all__) <= set(dir(bioconv_timm))\n"
            "assert bioconv_timm.layers.native.get_backend()  # a submodule, as before\n"
            "try:\n    bioconv_timm.no_such_name\nexcept AttributeError:\n    pass\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr


def test_the_builtin_sleep_modes_are_the_hooks():
    """The settings list the sleep modes without torch (sleep.modes); the hook implements the same ones."""
    from bioconv_timm.sleep import BUILTIN_SLEEP_MODES, SLEEP_MODES
    assert set(BUILTIN_SLEEP_MODES) <= set(SLEEP_MODES)
