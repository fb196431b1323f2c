"""``bioconv verify``: load a published model and check its outputs against the reference it was published with."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .._lazy import lazy_function

repo_id_problem = lazy_function('bioconv_timm.hub', 'repo_id_problem')  # hub imports torch: only when checked
from ..settings import setting, validate_settings
from .flags import add_setting_flags, settings_from_args


def _source_problem(source: str, config: Any) -> Optional[str]:
    if source.startswith('hf-hub:'):
        repo = source[len('hf-hub:'):].split('@')[0]
        problem = repo_id_problem(repo)
        return f'names {repo!r}, which {problem}' if problem else None
    folder = Path(source[len('local-dir:'):] if source.startswith('local-dir:') else source)
    if not folder.is_dir():
        return ('is not hf-hub:ORG/NAME[@REV] and not an existing folder (local-dir:PATH, as `bioconv publish '
                '--dry-run` writes it)')
    return None


@dataclass
class VerifyConfig:
    """What ``bioconv verify`` checks (:func:`bioconv_timm.verify.verify`); every field declared once."""
    source: str = setting(help='hf-hub:ORG/NAME[@REV] (Hub or its offline cache), local-dir:PATH or a folder '
                          'written by `bioconv publish --dry-run`', flag='source', metavar='SOURCE',
                          check=_source_problem, valid='hf-hub:ORG/NAME, local-dir:PATH, a folder')
    atol: float = setting(1e-4, help='absolute tolerance per output element (timm\'s)', ge=0, le=1)
    rtol: float = setting(1e-3, help='relative tolerance per output element (timm\'s)', ge=0, le=1)
    hash: bool = setting(True, help='also compare the SHA-256 of model.safetensors with the published one')

    def __post_init__(self) -> None:
        validate_settings(self)


SETTINGS = {'verify': VerifyConfig}  # the settings class of each command (docs/flags.md, tests)


def run(args: argparse.Namespace) -> int:
    cfg = settings_from_args(args, VerifyConfig)
    from ..verify import verify  # imports timm and torch: once the flags are judged
    result = verify(cfg.source, atol=cfg.atol, rtol=cfg.rtol, check_hash=cfg.hash)
    print(result.summary())
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('verify', help='check a published model against the reference outputs stored with it',
                              description='Loads SOURCE with timm.create_model(SOURCE, pretrained=True), runs the '
                                          'stored reference input (test/rand_tensors.safetensors) and compares '
                                          'the outputs; exit status 2 with the largest difference on a mismatch.')
    add_setting_flags(p, VerifyConfig)
    p.set_defaults(func=run)
