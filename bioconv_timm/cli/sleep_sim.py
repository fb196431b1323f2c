"""``bioconv sleep-sim``: the single-layer Hebbian sleep dynamics of section 4 (paper Figs. 4A/4B/5A/5B)."""
from __future__ import annotations

import argparse

from ..sleep.dynamics import FIGURES, run_figures


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--out-dir', default='results/sleep_fig4')
    p.add_argument('--figures', nargs='+', default=['4A', '4B', '5A', '5B'], choices=list(FIGURES))
    p.add_argument('--quick', action='store_true', help='few iterations (tests/smoke)')
    p.add_argument('--short-eq8', action='store_true',
                   help='2000 instead of the paper 10^4 iterations for 4B/5B (~1 min instead of ~5)')
    p.add_argument('--iterations', type=int, default=None, help='override iteration count')
    p.add_argument('--runs', type=int, default=10)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--x-mean', type=float, default=1.0, help='x ~ N(x_mean, 1); paper text: 1')
    p.add_argument('--no-plot', action='store_true')


def run(args: argparse.Namespace) -> int:
    run_figures(args.out_dir, quick=args.quick, which=args.figures, iterations=args.iterations,
                runs=args.runs, seed=args.seed, x_mean=args.x_mean, plot=not args.no_plot,
                full_eq8=not args.short_eq8)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sleep-sim`` (Figs. 4A/4B/5A/5B); the handler is stored as ``func``."""
    p = subparsers.add_parser('sleep-sim', help='single-layer Hebbian sleep dynamics (paper Figs. 4, 5)')
    _add_args(p)
    p.set_defaults(func=run)
    return p
