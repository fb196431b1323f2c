"""``bioconv publish``: a run (or a .safetensors file) as a timm model on the Hugging Face Hub, with its card."""
from __future__ import annotations

import argparse
import sys

from ..hub import PublishError, publish


def run(args: argparse.Namespace) -> int:
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


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('publish', help='export a run (or .safetensors file) as a timm Hub model with a model card '
                                       'and upload it')
    p.add_argument('source', metavar='RUN_DIR_OR_CHECKPOINT', help='a `bioconv train` run folder or a .safetensors file')
    p.add_argument('--repo-id', required=True, help='Hub repo ORG/NAME, e.g. bioconv-timm/lc_resnet20_ws10.digits')
    p.add_argument('--dry-run', metavar='OUT_DIR', default=None, help='write the folder to OUT_DIR, upload nothing')
    p.add_argument('--model', default=None, help='model name (needed for a bare .safetensors file)')
    p.add_argument('--private', action='store_true', help='create the repo as private')
    p.add_argument('--commit-message', default=None)
    p.set_defaults(func=run)
