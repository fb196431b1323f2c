"""``bioconv bench``: the LC layer vs Conv2d vs the einsum baseline, and LC vs conv training steps."""
from __future__ import annotations

import argparse
import sys

import torch

from ..bench import (IMPLS, MODES, PAPER_SHAPE_SETS, PUBLIC_SHAPE_SETS, SHAPE_SETS, BenchConfig, format_report,
                     run_benchmark)


def _shape_sets_arg(value: str) -> str:
    if value not in SHAPE_SETS and value != 'none':
        raise argparse.ArgumentTypeError(f'invalid shape set {value!r} (choose from {", ".join(PUBLIC_SHAPE_SETS)}, '
                                         'none)')
    return value


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    """The flags of ``bioconv bench`` (also ``scripts/bench_lc.py``)."""
    p = parser.add_argument
    p('--quick', action='store_true',
      help='ResNet20 shapes at B=64, 15 repeats, and the ResNet20 training step (a few minutes on 2 CPU cores)')
    p('--full', action='store_true',
      help='also the 0.5x ResNet18 training step on CPU (B=32; the LC model has 483M parameters)')
    p('--device', default='cpu', help="'cpu' (default) or 'cuda' ('cuda:1', ...)")
    p('--amp', default=None, choices=('bf16', 'fp16'), help='torch.autocast dtype (default: fp32)')
    p('--shapes', nargs='+', type=_shape_sets_arg, default=None, metavar='SET',
      help=f'layer shape sets: {", ".join(PUBLIC_SHAPE_SETS)}, or none (default: resnet20 with --quick, else '
           f'the paper\'s {", ".join(PAPER_SHAPE_SETS)}; depthwise_dilated: grouped/dilated layers, B=32)')
    p('--batch-size', type=int, default=None,
      help='layer batch size for every shape set (default: the paper\'s, 128 / 128 / 32; depthwise_dilated 32; '
           '64 with --quick)')
    p('--repeats', type=int, default=None, help='timed repeats per measurement (default 7; CUDA 10; --quick 15)')
    p('--warmup', type=int, default=1, help='untimed calls before timing (default 1)')
    p('--impls', nargs='+', choices=IMPLS, default=list(IMPLS), help='implementations to time (default: all)')
    p('--modes', nargs='+', choices=MODES, default=list(MODES), help='fwd and/or fwd+bwd (default: both)')
    p('--memory', default='auto', choices=('auto', 'subprocess', 'inprocess', 'none'),
      help='peak memory: auto = CUDA allocator peak, or CPU peak RSS in a subprocess per shape')
    p('--max-memory-gib', type=float, default=None,
      help='skip cases estimated to need more (default: 80%% of the available memory)')
    p('--min-repeat-ms', type=float, default=None,
      help='back-to-back calls per timed repeat until this long (default: 20 on CUDA, 0 on CPU)')
    p('--models', default='auto', choices=('auto', 'none', 'resnet20', 'resnet18_half', 'all'),
      help='training-step pairs (default: resnet20; all on CUDA or with --full)')
    p('--model-batch-size', type=int, default=None,
      help='training-step batch (default: ResNet20 128; ResNet18-half 256 on CUDA, 32 on CPU)')
    p('--model-img-size', type=int, default=None, help=argparse.SUPPRESS)  # smoke tests only
    p('--steps', type=int, default=None, dest='model_steps', help='timed training steps (default 10)')
    p('--optimizer', default='auto', choices=('auto', 'fused', 'foreach'),
      help='AdamW implementation (default: fused where available, else foreach)')
    p('--threads', type=int, default=None, help='torch.set_num_threads (default: torch\'s, = OMP_NUM_THREADS)')
    p('--json', dest='json_path', default=None, metavar='PATH', help='also write all records as JSON')


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    shapes = args.shapes
    if shapes is not None:
        shapes = tuple(s for s in shapes if s != 'none')
    return BenchConfig(
        quick=args.quick, full=args.full, device=args.device, amp=args.amp, shapes=shapes,
        batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup, impls=tuple(args.impls),
        modes=tuple(args.modes), memory=args.memory, max_memory_gib=args.max_memory_gib,
        min_repeat_ms=args.min_repeat_ms, models=args.models, model_batch_size=args.model_batch_size,
        model_img_size=args.model_img_size, model_steps=args.model_steps, optimizer=args.optimizer,
        threads=args.threads, json_path=args.json_path)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed flags, print the report (progress on stderr); exit status 0."""
    cfg = config_from_args(args)
    if torch.device(cfg.device).type == 'cuda' and not torch.cuda.is_available():
        print('bioconv bench: error: --device cuda, but torch sees no CUDA device', file=sys.stderr)
        return 2
    result = run_benchmark(cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_report(result))
    if cfg.json_path:
        print(f'\nJSON: {cfg.json_path}')
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        'bench', help='time the LC layer vs Conv2d (NCHW, channels-last) vs the unfold + einsum baseline, and LC vs '
                      'conv training steps',
        description='Layer timings at the paper\'s shapes (median and spread, GFLOP/s, ratios, peak memory) and '
                    'training-step images/s, in one run. Run it alone on the machine.')
    add_bench_args(p)
    p.set_defaults(func=run_from_args)
