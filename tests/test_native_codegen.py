"""The native kernels' hot loops keep their accumulators in registers on every x86 target (issue 27): a tile
larger than the target's vector registers, or an accumulator indexed with a run-time value, makes the compiler
keep the tile in memory and store it inside the loop, which halved the AVX2 build's rate on machines with one
store port. Read from the assembly the build's own flags produce (bioconv_timm.layers.native.target_flags)."""
import re
import subprocess

import pytest

from bioconv_timm.layers import native

CC = native._compiler()
VERSION = native._compiler_version(CC).lower() if CC else ''
IS_GCC = 'clang' not in VERSION and ('gcc' in VERSION or 'free software foundation' in VERSION)
pytestmark = pytest.mark.skipif(not (IS_GCC and native._is_x86()), reason='needs gcc on x86-64 (the check reads '
                                'the x86 assembly gcc writes)')

MULTIPLY_ADD = re.compile(r'\bv?(fmadd\w*|mulps)\b')
VECTOR_TO_STACK = re.compile(r'%[xyz]mm\d+, -?\d*\(%r[sb]p\)')
LABEL, JUMP, FUNCTION = re.compile(r'^\.L\d+:'), re.compile(r'^\s+j\w+\s+\.L'), re.compile(r'^([A-Za-z_][\w.]*):')


def hot_loops_storing_to_stack(assembly: str, min_products: int = 4) -> dict:
    """{function: count} of the straight-line blocks (label to jump) with at least ``min_products`` vector
    multiply-adds that also store a vector register to the stack."""
    found, function, block = {}, None, []
    for line in assembly.splitlines():
        m = FUNCTION.match(line)
        if m:
            function = m.group(1)
        if LABEL.match(line):
            block = []
        block.append(line)
        if JUMP.match(line):
            if (sum(bool(MULTIPLY_ADD.search(x)) for x in block) >= min_products
                    and any(VECTOR_TO_STACK.search(x) for x in block)):
                found[function] = found.get(function, 0) + 1
            block = []
    return found


def _assembly(flags, *extra):
    return subprocess.run([CC, *flags, *extra, '-std=gnu11', '-S', '-fPIC', str(native.SOURCE), '-o', '-'],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize('target', ['generic', 'avx2', 'avx512'])
def test_no_hot_loop_stores_an_accumulator(target):
    flags = native.target_flags(target)[0]
    assert hot_loops_storing_to_stack(_assembly(flags)) == {}, (
        f'the {target} build ({" ".join(flags)}) stores vector registers to the stack inside its multiply-add '
        'loops: a tile too large for its registers (the TILE defaults in lc_cpu.c) or an accumulator indexed '
        'with a run-time value')


def test_the_check_finds_a_tile_too_large_for_16_registers():
    """The same check on an AVX2 build forced to the AVX-512 forward tile (8 x 2 + operands = 19 registers)."""
    flags = native.target_flags('avx2')[0]
    assert hot_loops_storing_to_stack(_assembly(flags, '-DFWD_TM=8', '-DGIN_TM=8', '-DGW_TM=8'))


def test_the_microkernel_bench_builds_and_reports_a_rate():
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / 'scripts' / 'bench_microkernel.py'
    proc = subprocess.run([sys.executable, str(script), '--targets', 'generic'], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.match(r'sse2: tile \d+ x 2 vectors of 4 floats: [\d.]+ GFLOP/s', proc.stdout), proc.stdout
