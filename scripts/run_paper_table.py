"""Reproduce one of the paper's result tables: train every cell, then compare with the reported numbers.

Each cell of the table (bioconv_timm.paper.PAPER_CELLS) is trained with the paper's settings (AdamW,
200 epochs, lr / 4 at epochs 100 and 150, batch 512 CIFAR/TinyImageNet or 256 ImageNet, the
per-cell lr and weight decay of appendix B) once per seed, one process per run, one after another.
Runs land in ``<output-root>/<table>/<dataset>/<model>[-reps<n>]-seed<k>/``; a run whose
``result.json`` exists is read back, an interrupted one resumes from its ``last.pth``, so the same
command can simply be started again. At the end the comparison (measured mean ± half the max-min
spread over seeds, the paper's number, the difference, and each row's gap to conv) is printed and
written to ``<output-root>/table<id>[-<dataset>].md`` and ``.json``.

Tables: 1 (= 5), 4, 5, 6 (CIFAR10 / CIFAR100 / TinyImageNet, padding 4, 0, 4, 8), 2 and 13 (ImageNet,
0.5x ResNet18; 2 = the first five rows of 13). Table 1 and Table 5 hold the same cells; run one of them.

With the data and a GPU (one GPU per command; start several commands with different --dataset or
--rows on different GPUs to go faster)::

    # Table 1 / 5 on CIFAR10: 8 rows x 5 seeds (CIFAR files in /data/cifar-10-batches-py/)
    CUDA_VISIBLE_DEVICES=0 python scripts/run_paper_table.py 5 --dataset cifar10 --data-dir /data \\
        --output-root paper_runs --workers 8
    # all three datasets of Table 6 (padding 8), one folder each
    python scripts/run_paper_table.py 6 --data-dir cifar10=/data --data-dir cifar100=/data \\
        --data-dir tinyimagenet=/data/tiny-imagenet-200 --workers 8
    # Table 13 on ImageNet (1 run per row, as in the paper), only the weight-sharing rows
    python scripts/run_paper_table.py 13 --data-dir /data/imagenet --workers 16 \\
        --rows 'LC - ws(1)' 'LC - ws(10)' 'LC - ws(100)'
    # what would run, with each cell's hyperparameters and the paper's numbers
    python scripts/run_paper_table.py 4 --list

A quick smoke run of the machinery on CPU (no accuracy to speak of)::

    python scripts/run_paper_table.py 1 --dataset cifar10 --data-dir /data --epochs 1 --train-subset 64 \\
        --eval-subset 32 --batch-size 16 --seeds 0 --output-root /tmp/paper_smoke

Cost (paper, GTX1080/RTX5000): 1-2 h per small-scale run up to 40 h for TinyImageNet with 16 reps;
3-6 days per ImageNet run.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Sequence, Union

from bioconv_timm.paper import TABLE_DATASETS, TABLES, cells
from bioconv_timm.train.paper_runs import run_table


def _data_dirs(values: Optional[List[str]]) -> Union[None, str, Dict[str, str]]:
    """``['/data']`` -> '/data'; ``['cifar10=/a', 'tinyimagenet=/b']`` -> {'cifar10': '/a', ...}."""
    if not values:
        return None
    if len(values) == 1 and '=' not in values[0]:
        return values[0]
    out = {}
    for value in values:
        name, sep, path = value.partition('=')
        if not sep:
            raise SystemExit(f'--data-dir {value!r}: with several folders, write DATASET=PATH')
        out[name] = path
    return out


def _list(table: str, dataset: Optional[str]) -> None:
    print(f'{"dataset":<13} {"pad":>3}  {"label":<30} {"model":<32} {"reps":>4} {"lr":>7} {"wd":>7} '
          f'{"batch":>5} {"top-1":>5} {"top-5":>5} runs')
    for c in cells(table, dataset):
        top5 = '-' if c.paper_top5 is None else f'{c.paper_top5:.1f}'
        print(f'{c.dataset:<13} {c.pad:>3}  {c.label:<30} {c.model:<32} {c.reps:>4} {c.lr:>7.0e} '
              f'{c.weight_decay:>7.0e} {c.batch_size:>5} {c.paper_top1:>5.1f} {top5:>5} {c.runs}')


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('table', choices=TABLES, help='paper table id')
    parser.add_argument('--dataset', default=None,
                        help='one of the table\'s datasets (default: all): ' +
                             '; '.join(f'{t}: {",".join(d)}' for t, d in TABLE_DATASETS.items()))
    parser.add_argument('--data-dir', action='append', default=None,
                        help='dataset folder; repeat as DATASET=PATH for several datasets')
    parser.add_argument('--rows', nargs='+', default=None, help="only these rows, e.g. 'conv' 'LC - ws(10)'")
    parser.add_argument('--seeds', type=int, nargs='+', default=None,
                        help='one run per seed (default: 0..4 small-scale, 0 ImageNet, as many runs as the paper)')
    parser.add_argument('--output-root', default='paper_runs')
    parser.add_argument('--epochs', type=int, default=None, help='default 200; shorter runs compress the schedule')
    parser.add_argument('--batch-size', type=int, default=None, help='default: the paper\'s (512 / 256)')
    parser.add_argument('--train-subset', type=int, default=None)
    parser.add_argument('--eval-subset', type=int, default=None)
    parser.add_argument('--split', default=None, choices=('val', 'test'),
                        help="'val' tunes on the paper's held-out part of train (default: test)")
    parser.add_argument('--val-size', type=int, default=None)
    parser.add_argument('--device', default=None)
    parser.add_argument('--workers', type=int, default=None, help='data loader worker processes')
    parser.add_argument('--amp-dtype', default=None, choices=('bfloat16', 'float16'),
                        help='autocast dtype on GPU (the paper used float16 AMP)')
    parser.add_argument('--progress', action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument('--list', action='store_true', help='print the cells and exit')
    args = parser.parse_args(argv)

    if args.dataset is not None and args.dataset not in TABLE_DATASETS[args.table]:
        parser.error(f'table {args.table} covers {", ".join(TABLE_DATASETS[args.table])}, not {args.dataset}')
    if args.list:
        _list(args.table, args.dataset)
        return 0
    extra = {k: v for k, v in dict(split=args.split, num_workers=args.workers, amp_dtype=args.amp_dtype,
                                   progress=args.progress).items() if v is not None}
    run_table(args.table, args.dataset, data_dir=_data_dirs(args.data_dir), seeds=args.seeds,
              output_root=args.output_root, epochs=args.epochs, train_subset=args.train_subset,
              eval_subset=args.eval_subset, device=args.device, val_size=args.val_size,
              batch_size=args.batch_size, labels=args.rows, **extra)
    return 0


if __name__ == '__main__':
    sys.exit(main())
