"""The ``bioconv`` command line: a thin layer over the Python API."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence


def model_table(pattern: str = '*') -> List[dict]:
    """One row per registered bioconv model: name, input size, parameter count, sleep period."""
    import fnmatch

    import timm
    import torch

    from .models import MODEL_NAMES

    rows = []
    for name in MODEL_NAMES:
        if not fnmatch.fnmatch(name, pattern):
            continue
        with torch.device('meta'):  # count parameters without allocating ~500M floats
            model = timm.create_model(name)
        rows.append(dict(
            name=name,
            input_size='x'.join(str(s) for s in model.pretrained_cfg['input_size']),
            params=sum(p.numel() for p in model.parameters()),
            sleep_every=model.sleep_every,
            layer_type=model.layer_type if model.stem_type == model.layer_type else f'{model.layer_type} (conv stem)',
        ))
    return rows


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Plain-text table with a header and aligned columns."""
    cells = [[str(c) for c in columns]] + [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ['  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    rows = model_table(args.filter)
    for row in rows:
        row['params'] = f"{row['params'] / 1e6:.2f}M"
        row['sleep_every'] = '-' if row['sleep_every'] is None else row['sleep_every']
    print(format_table(rows, ['name', 'input_size', 'params', 'sleep_every', 'layer_type']))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import config_from_args, train
    train(config_from_args(args))
    return 0


def _parse_lrs(items: Sequence[str]) -> dict:
    from .compare import DEFAULT_LRS
    lrs = dict(DEFAULT_LRS)
    for item in items or ():
        key, sep, value = item.partition('=')
        if not sep or key not in lrs:
            raise SystemExit(f'--lr expects CELL=VALUE with CELL in {sorted(lrs)}, got {item!r}')
        lrs[key] = float(value)
    return lrs


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, format_compare_table, preset_config
    config = preset_config(
        args.dataset, data_dir=args.data_dir, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
        pad=args.pad, seeds=tuple(args.seeds), weight_decay=args.weight_decay, lrs=_parse_lrs(args.lr),
        train_subset=args.train_subset, eval_subset=args.eval_subset, split=args.split,
        output_dir=args.output_dir, progress=args.progress, device=args.device,
        sleep_optimizer=args.sleep_optimizer)
    rows = compare(config)
    print()
    print(format_compare_table(rows, config))
    print(f'\ntable: {config.output_dir}/compare.md, chart: {config.output_dir}/compare.png')
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from .hub import PublishError, publish
    try:
        result = publish(args.source, args.repo_id, model_name=args.model, dry_run_dir=args.dry_run,
                         private=args.private, commit_message=args.commit_message)
    except PublishError as exc:
        print(f'bioconv publish: error: {exc}', file=sys.stderr)
        return 2
    top1 = f', top-1 {result.top1:.2f}%' if result.top1 is not None else ''
    if result.uploaded:
        print(f'published {result.model_name}{top1} to https://huggingface.co/{result.repo_id} '
              f"({', '.join(result.files)})")
    else:
        print(f"dry run: wrote {', '.join(result.files)} for {result.repo_id} ({result.model_name}{top1}) to "
              f'{result.folder}; nothing uploaded')
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    """`bioconv bench`: LC layer vs Conv2d vs the einsum baseline, and LC vs conv training steps."""
    from .bench import run_from_args
    return run_from_args(args)


def _cmd_brainscore(args: argparse.Namespace) -> int:
    """`bioconv brainscore score|submission|plugins` (bioconv_timm.brainscore)."""
    from .brainscore import BrainScoreError, run_cli
    try:
        return run_cli(args)
    except BrainScoreError as exc:
        print(f'bioconv brainscore {args.brainscore_command}: error: {exc}', file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='bioconv', description='Locally connected ResNets with a sleep phase, as timm models.')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('list', help='list the registered models (input size, parameters, sleep period)')
    p.add_argument('--filter', default='*', help="shell-style name filter, e.g. 'lc_resnet20*'")
    p.set_defaults(func=_cmd_list)

    from .train import add_train_args
    p = sub.add_parser('train', help='train a model (with its sleep phase) and write a run folder')
    add_train_args(p)
    p.set_defaults(func=_cmd_train)

    from .compare import CompareConfig
    from .data import DATASETS
    d = CompareConfig()
    p = sub.add_parser('compare', help="train conv / LC / LC-reps / LC-ws(1,10,100) and print paper Table 1's shape",
                       description='Budgets per dataset (bioconv_timm.compare.PRESETS) fit ~15 min on 2 CPU cores; '
                                   'every flag overrides its preset.')
    p.add_argument('--dataset', default=d.dataset, choices=DATASETS)
    p.add_argument('--data-dir', default=None)
    p.add_argument('--arch', default=None, choices=('resnet20', 'resnet18_half'))
    p.add_argument('--epochs', type=int, default=None, help='default: the dataset preset (digits 10, fashion-mnist 15)')
    p.add_argument('--batch-size', type=int, default=None)
    p.add_argument('--pad', type=int, default=None)
    p.add_argument('--seeds', type=int, nargs='+', default=list(d.seeds))
    p.add_argument('--weight-decay', type=float, default=None)
    p.add_argument('--lr', nargs='*', metavar='CELL=LR', help='override a learning rate, e.g. lc_ws10=2e-3')
    p.add_argument('--sleep-optimizer', default=None, choices=('keep', 'average', 'reset'),
                   help='what a sleep does to the AdamW moments of LC weights')
    p.add_argument('--train-subset', type=int, default=None)
    p.add_argument('--eval-subset', type=int, default=None)
    p.add_argument('--split', default=d.split, choices=('val', 'test'))
    p.add_argument('--output-dir', default=None, help='default: runs/compare-<dataset>')
    p.add_argument('--device', default=None)
    p.add_argument('--progress', action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser('publish', help='export a run (or .safetensors file) as a timm Hub model with a model card '
                                       'and upload it')
    p.add_argument('source', metavar='RUN_DIR_OR_CHECKPOINT', help='a `bioconv train` run folder or a .safetensors file')
    p.add_argument('--repo-id', required=True, help='Hub repo ORG/NAME, e.g. bioconv-timm/lc_resnet20_ws10.digits')
    p.add_argument('--dry-run', metavar='OUT_DIR', default=None, help='write the folder to OUT_DIR, upload nothing')
    p.add_argument('--model', default=None, help='model name (needed for a bare .safetensors file)')
    p.add_argument('--private', action='store_true', help='create the repo as private')
    p.add_argument('--commit-message', default=None)
    p.set_defaults(func=_cmd_publish)

    from .bench import add_bench_args
    p = sub.add_parser('bench', help='time the LC layer vs Conv2d (NCHW, channels-last) vs the unfold + einsum '
                                     'baseline, and LC vs conv training steps',
                       description='Layer timings at the paper\'s shapes (median and spread, GFLOP/s, ratios, peak '
                                   'memory) and training-step images/s, in one run. Run it alone on the machine.')
    add_bench_args(p)
    p.set_defaults(func=_cmd_bench)

    from .brainscore import add_brainscore_args
    p = sub.add_parser('brainscore', help='Brain-Score: score locally on the public benchmarks, build a submission zip',
                       description='Needs the [brainscore] extra: pip install "bioconv-timm[brainscore]".')
    add_brainscore_args(p)
    p.set_defaults(func=_cmd_brainscore)

    from .hebbian import add_sleep_sim_parser
    add_sleep_sim_parser(sub)  # `bioconv sleep-sim`: paper Fig. 4A/4B/5A/5B
    return parser


def _tune_malloc_for_command() -> None:
    """Keep large freed blocks in glibc's heap for this ``bioconv`` process (``bioconv_timm._malloc``): LC
    training steps otherwise map, fault in and unmap their weight gradients every step. Skipped where the C
    library is not glibc, GLIBC_TUNABLES sets malloc tunables, LD_PRELOAD loads another allocator, or
    BIOCONV_MALLOC_TUNING=0."""
    from ._malloc import tune_this_process
    tune_this_process()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``bioconv`` command. Run as a command (``argv`` None: the console script, ``python -m
    bioconv_timm.cli``) it first tunes glibc malloc for this process; ``main([...])`` called from Python leaves
    the caller's allocator alone."""
    if argv is None:
        _tune_malloc_for_command()
    args = build_parser().parse_args(argv)
    from .data import DatasetError
    from .train import CheckpointError, ConfigError
    try:
        return args.func(args)
    except (DatasetError, CheckpointError, ConfigError) as exc:
        # bad input the user can fix: one clear line, no traceback
        print(f'bioconv {args.command}: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
