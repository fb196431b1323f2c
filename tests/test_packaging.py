"""What the packaging promises, checked from pyproject.toml, the package folder and the README without
building anything (.ci/run builds the sdist and wheel, runs `twine check` and installs the wheel into a fresh
environment away from the source tree)."""
import ast
import fnmatch
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip('tomli')

import bioconv_timm
from bioconv_timm.layers import native

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'bioconv_timm'
PYPROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())
README = (ROOT / 'README.md').read_text()


def _install_section() -> str:
    return README.split('## Install and test', 1)[1].split('\n## ', 1)[0]


def _package_data_globs():
    return PYPROJECT['tool']['setuptools']['package-data']['bioconv_timm']


def _data_files():
    """Every file under bioconv_timm/ that is not Python source or bytecode."""
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob('*')
                  if p.is_file() and '__pycache__' not in p.parts and p.suffix not in ('.py', '.pyc'))


def test_package_data_ships_every_non_python_file_of_the_package():
    files = _data_files()
    assert 'layers/csrc/lc_cpu.c' in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in _package_data_globs())]
    assert not missing, f'not in [tool.setuptools.package-data] (so not in the wheel): {missing}'


def test_the_native_kernel_source_is_package_data():
    # native.py compiles this file at run time from wherever the package is installed
    assert native.SOURCE.is_file()
    assert native.SOURCE.resolve().is_relative_to(Path(bioconv_timm.__file__).resolve().parent)
    relative = native.SOURCE.resolve().relative_to(Path(bioconv_timm.__file__).resolve().parent).as_posix()
    assert any(fnmatch.fnmatch(relative, g) for g in _package_data_globs())


def test_license_is_an_spdx_expression_built_by_a_setuptools_that_reads_it():
    assert PYPROJECT['project']['license'] == 'MIT'  # not the deprecated {text = ...} table
    requires = {Requirement(r).name: Requirement(r) for r in PYPROJECT['build-system']['requires']}
    setuptools = requires['setuptools'].specifier
    assert '77.0' in setuptools and '76.9' not in setuptools  # 77: PEP 639 license expressions


def test_every_module_parses_at_the_python_floor_of_requires_python():
    spec = SpecifierSet(PYPROJECT['project']['requires-python'])
    floor = min((Version(f'3.{minor}') for minor in range(6, 20) if Version(f'3.{minor}') in spec))
    assert floor == Version('3.10')
    assert Version('.'.join(map(str, sys.version_info[:2]))) in spec
    for path in sorted(PACKAGE.rglob('*.py')):
        ast.parse(path.read_text(), filename=str(path), feature_version=(floor.major, floor.minor))


def test_the_brainscore_extra_states_its_python_requirement():
    extras = PYPROJECT['project']['optional-dependencies']
    assert [Requirement(r).name for r in extras['brainscore']] == ['brainscore-vision']
    try:
        needs = metadata.metadata('brainscore-vision')['Requires-Python']
    except metadata.PackageNotFoundError:
        needs = '>=3.11'  # brainscore-vision 2.4's, when it is not installed here
    # brainscore-vision needs more than the core's floor, and the README says so where it installs the extra
    assert SpecifierSet(needs) == SpecifierSet('>=3.11')
    assert '3.10' in SpecifierSet(PYPROJECT['project']['requires-python'])
    assert 'Python >= 3.11' in _install_section() and 'brainscore' in _install_section()


def test_dev_extra_has_what_the_packaging_check_runs():
    names = {Requirement(r).name for r in PYPROJECT['project']['optional-dependencies']['dev']}
    assert {'pytest', 'build', 'twine'} <= names


def _readme_commands():
    block = re.search(r'```bash\n(.*?)```', _install_section(), flags=re.S).group(1)
    return [line.split('#', 1)[0].strip() for line in block.splitlines() if line.split('#', 1)[0].strip()]


def test_readme_installs_with_one_command_and_tests_with_one():
    assert _readme_commands() == ['pip install -e ".[dev,brainscore]"', 'pytest']


def test_ci_runs_the_readme_commands_as_written():
    ci_lines = [line.strip() for line in (ROOT / '.ci' / 'run').read_text().splitlines()]
    install, test = _readme_commands()
    assert install in ci_lines  # with CI's fresh virtual environment activated
    assert test in ci_lines


def test_ci_and_the_test_suite_leave_no_gigabytes_behind():
    # A stop's CI once failed with "No space left on device": earlier .ci/run work folders (venvs, wheels) and
    # pytest's kept tmp_path folders (training tests write checkpoints, ~15 GB a session) had filled the disk.
    assert PYPROJECT['tool']['pytest']['ini_options'].get('tmp_path_retention_policy') == 'failed'
    ci_lines = [line.strip() for line in (ROOT / '.ci' / 'run').read_text().splitlines()]
    trap = ci_lines.index('trap \'rm -rf "$WORK"\' EXIT')
    assert ci_lines.index('WORK="$(mktemp -d)"') < trap < next(i for i, line in enumerate(ci_lines)
                                                             if line.startswith('python3 -m venv'))


def test_readme_states_the_torch_floor_of_pyproject():
    torch = next(Requirement(r) for r in PYPROJECT['project']['dependencies'] if Requirement(r).name == 'torch')
    assert str(torch.specifier) == '>=2.4'
    install = re.findall(r'torch\s*>=\s*([0-9.]+)', _install_section())
    assert install and set(install) == {'2.4'}, install
    # elsewhere a feature may need more (FSDP2: 2.6), never less than the floor
    stated = [Version(v) for v in re.findall(r'torch\s*>=\s*([0-9.]+)', README)]
    assert min(stated) == Version('2.4'), stated
