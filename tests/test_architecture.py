"""The package's shape, read from its source with ``ast``: no import cycles, and the library free of the CLI.

Every import counts, also those inside functions (a lazy import only hides a cycle). The command line lives in
``bioconv_timm.cli``; ``__main__`` modules are entry points and may call it.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

import bioconv_timm

PACKAGE_ROOT = Path(bioconv_timm.__file__).resolve().parent


def module_names(root: Path) -> Dict[str, Path]:
    """{dotted module name: file} of every .py file under the package folder ``root``."""
    out = {}
    for path in sorted(root.rglob('*.py')):
        parts = list(path.relative_to(root.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        out['.'.join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The modules of the package that ``name`` imports (a name imported from a package counts as its submodule
    when there is one), and 'argparse' when it imports argparse."""
    is_package = path.name == '__init__.py'
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split('.') if is_package else name.split('.')[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = '.'.join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ''
            targets = [f'{source}.{a.name}' if f'{source}.{a.name}' in modules else source for a in node.names]
        else:
            continue
        for target in targets:
            if target == 'argparse' or target.startswith('argparse.'):
                found.add('argparse')
            while target and target not in modules and '.' in target:
                target = target.rsplit('.', 1)[0]  # `import a.b.c` of a name inside a module
            if target in modules and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> Dict[str, Set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cli_violations(graph: Dict[str, Set[str]], package: str) -> List[str]:
    """Library modules (outside ``<package>.cli``, not a ``__main__``) that import the CLI or argparse."""
    cli = f'{package}.cli'
    bad = []
    for name, targets in sorted(graph.items()):
        if name == cli or name.startswith(cli + '.') or name.endswith('.__main__'):
            continue
        for target in sorted(targets):
            if target == 'argparse' or target == cli or target.startswith(cli + '.'):
                bad.append(f'{name} imports {target}')
    return bad


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph(PACKAGE_ROOT))
    assert not found, 'import cycles: ' + '; '.join(' <-> '.join(c) for c in found)


def test_no_library_module_imports_the_cli_or_argparse():
    graph = import_graph(PACKAGE_ROOT)
    assert 'bioconv_timm.cli' in graph and 'bioconv_timm.train.loop' in graph  # the walk sees the real layout
    assert not cli_violations(graph, 'bioconv_timm')


def test_argparse_lives_in_the_cli_package():
    graph = import_graph(PACKAGE_ROOT)
    users = sorted(name for name, targets in graph.items() if 'argparse' in targets)
    assert users and all(name.startswith('bioconv_timm.cli') for name in users), users


def _write_package(root: Path, files: Dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / 'pkg' / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / 'pkg'


def test_the_checks_find_a_lazy_cycle_and_a_library_importing_the_cli(tmp_path):
    pkg = _write_package(tmp_path, {
        '__init__.py': '',
        'train/__init__.py': 'from .loop import train\n',
        'train/loop.py': 'def train():\n    from ..hub import publish  # lazy: still a cycle\n',
        'hub.py': 'from .train import train\n',
        'cli/__init__.py': 'import argparse\nfrom ..train import train\n',
        'bench.py': 'import argparse\n',
        'report.py': 'def main():\n    from .cli import main\n',
        'train/__main__.py': 'from ..cli import main\n',
    })
    graph = import_graph(pkg)
    assert cycles(graph) == [['pkg.hub', 'pkg.train', 'pkg.train.loop']]
    assert cli_violations(graph, 'pkg') == ['pkg.bench imports argparse', 'pkg.report imports pkg.cli']


@pytest.mark.parametrize('source, expected', [
    ('from . import native', {'pkg.layers.native'}),        # a submodule imported by name from its package
    ('from .locally_connected import f', {'pkg.layers.locally_connected'}),
    ('from .. import models', {'pkg.models'}),
    ('import pkg.models.x', {'pkg.models'}),                # a dotted name inside a module
])
def test_import_resolution(tmp_path, source, expected):
    pkg = _write_package(tmp_path, {'__init__.py': '', 'models.py': '', 'layers/__init__.py': source + '\n',
                                    'layers/native.py': '', 'layers/locally_connected.py': ''})
    assert import_graph(pkg)['pkg.layers'] == expected
