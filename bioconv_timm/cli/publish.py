"""``bioconv publish``: a run (or a .safetensors file) as a timm model on the Hugging Face Hub, with its card."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .._lazy import lazy_function

# bioconv_timm.hub imports torch: loaded when a repo id is checked or the upload runs, not for --help
publish = lazy_function('bioconv_timm.hub', 'publish')
repo_id_problem = lazy_function('bioconv_timm.hub', 'repo_id_problem')
from ..settings import one_line_problem, registered_model_problem, setting, validate_settings
from .flags import add_setting_flags, settings_from_args

def _source_problem(path: str, config: Any) -> Optional[str]:
    source = Path(path)
    if not source.exists():
        return 'does not exist; pass a `bioconv train` run folder or a .safetensors file'
    if source.is_file() and source.suffix != '.safetensors':
        return 'is a file but not a .safetensors file; pass a run folder or a .safetensors file'
    return None


@dataclass
class PublishConfig:
    """What ``bioconv publish`` uploads (:func:`bioconv_timm.hub.publish`); every field declared once."""
    source: str = setting(help='a `bioconv train` run folder or a .safetensors file', flag='source',
                          check=_source_problem, metavar='RUN_DIR_OR_CHECKPOINT', valid='an existing run folder '
                          'or .safetensors file')
    repo_id: str = setting(help='Hub repo ORG/NAME, e.g. bioconv-timm/lc_resnet20_ws10.digits',
                           check=repo_id_problem, valid='ORG/NAME')
    dry_run: Optional[str] = setting(None, help='write the folder to OUT_DIR, upload nothing', path='dir_out',
                                     metavar='OUT_DIR', default_help='upload')
    model: Optional[str] = setting(None, help='model name (needed for a bare .safetensors file)', check=registered_model_problem,
                                   valid='a name `bioconv list` prints', default_help="the run's")
    private: bool = setting(False, help='create the repo as private')
    commit_message: Optional[str] = setting(None, help='the Hub commit message', check=one_line_problem, valid='one line',
                                            default_help='names the model and its top-1')

    def __post_init__(self) -> None:
        validate_settings(self)


SETTINGS = {'publish': PublishConfig}  # the settings class of each command (docs/flags.md, tests)


def run(args: argparse.Namespace) -> int:
    cfg = settings_from_args(args, PublishConfig)
    result = publish(cfg.source, cfg.repo_id, model_name=cfg.model, dry_run_dir=cfg.dry_run, private=cfg.private,
                     commit_message=cfg.commit_message)
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
    add_setting_flags(p, PublishConfig)
    p.set_defaults(func=run)
