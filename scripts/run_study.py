"""Run a study file (``studies/*.yaml``) and write its report: tuning on the validation split, then every cell on
every seed (``bioconv_timm.train.study``); finished runs are skipped, interrupted ones resume.

    python scripts/run_study.py studies/fashion_mnist_shifted.yaml --jobs 2
    python scripts/run_study.py studies/fashion_mnist_shifted.yaml --report-only
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from bioconv_timm.train.study import load_study, run_study


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('study', help='a study file, e.g. studies/fashion_mnist_shifted.yaml')
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time, one torch thread each')
    parser.add_argument('--phases', nargs='+', default=['tune', 'main'], choices=['tune', 'main'])
    parser.add_argument('--cells', nargs='+', metavar='CELL', help='train only these cells (default: all)')
    parser.add_argument('--report-only', action='store_true', help='rewrite the report from the records')
    args = parser.parse_args(argv)
    study = load_study(args.study)
    if not args.report_only:
        os.environ['OMP_NUM_THREADS'] = '1'
        run_study(study, jobs=args.jobs, phases=tuple(args.phases), cells=tuple(args.cells) if args.cells else None,
                  log=lambda text: print(f'{time.strftime("%H:%M:%S")} {text}', flush=True))
    from bioconv_timm.train.study_report import write_report
    print(write_report(study, args.study).read_text())
    return 0


if __name__ == '__main__':
    sys.exit(main())
