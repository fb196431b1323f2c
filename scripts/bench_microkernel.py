"""The forward micro-kernel alone, per build target: one thread, its operands in L1, GFLOP/s (issue 27).

The layer-level bench (``bioconv bench``) times whole layers, where memory and the kernel copies weigh in; this
times the register tile that every forward product goes through (``fwd_tile`` in ``layers/csrc/lc_cpu.c``,
compiled with that file's flags for each target), so that a tile change can be judged on its own.

    python scripts/bench_microkernel.py                      # generic, avx2, avx512 (where the CPU has them)
    python scripts/bench_microkernel.py --define FWD_TM=8    # the same with a tile override, for every target
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from bioconv_timm.layers import native

HARNESS = r'''
#include "%(source)s"
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(void) {
    /* a 3 x 3 kernel over 32 channels, rows of 6 * 32 * 32 floats apart as in a 32 x 32 x 32 batch */
    const i64 C = 32, KH = 3, R = 3 * C, COP = FWD_TN * VW, xstride = 32 * 32 * C, rowstride = 32 * C;
    float *x = aligned_alloc(64, (FWD_TM * xstride + KH * rowstride) * 4), *wt = aligned_alloc(64, KH * R * COP * 4);
    float *o = aligned_alloc(64, FWD_TM * COP * 4);
    for (i64 i = 0; i < FWD_TM * xstride + KH * rowstride; i++) x[i] = 0.001f * (i %% 7);
    for (i64 i = 0; i < KH * R * COP; i++) wt[i] = 0.001f * (i %% 5);
    double best = 0;
    for (int trial = 0; trial < 5; trial++) {
        const long reps = 50000;
        double t0 = now();
        for (long r = 0; r < reps; r++) {
            __asm__ volatile("" ::: "memory");   /* every call computes: nothing is hoisted out of the loop */
            fwd_tile(FWD_TM, FWD_TN, x, xstride, rowstride, wt, COP, R, 0, KH, 1, 0, 0, R, o, COP, COP);
        }
        double rate = 2.0 * FWD_TM * COP * KH * R * reps / (now() - t0) / 1e9;
        best = rate > best ? rate : best;
    }
    printf("%%s: tile %%d x %%d vectors of %%d floats: %%.1f GFLOP/s (best of 5; check %%g)\n", lc_isa(), FWD_TM, FWD_TN,
           VW, best, o[0]);
    return 0;
}
'''


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--targets', nargs='+', default=['generic', 'avx2', 'avx512'], choices=['generic', 'avx2', 'avx512'])
    parser.add_argument('--define', nargs='*', default=[], metavar='NAME=VALUE', help='tile overrides, e.g. FWD_TM=8')
    args = parser.parse_args(argv)
    cc = native._compiler()
    if cc is None or not native._is_x86():
        print('needs a C compiler on x86-64', file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        harness = Path(tmp) / 'microkernel.c'
        harness.write_text(HARNESS % dict(source=native.SOURCE))
        for target in args.targets:
            try:
                native._check_cpu(target)  # the instructions the target needs, as the kernels' loader checks them
            except native.NativeBuildError as exc:
                print(f'{target}: skipped ({exc})')
                continue
            flags = [f for f in native.target_flags(target)[0] if f != '-fopenmp']
            exe = Path(tmp) / target
            subprocess.run([cc, *flags, *(f'-D{d}' for d in args.define), '-std=gnu11', str(harness), '-o', str(exe)],
                           check=True, capture_output=True)
            print(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == '__main__':
    sys.exit(main())
