"""Export a published model's folder and upload it: :func:`publish`, :func:`export_folder`, :func:`repo_id_problem`.

The folder holds what ``timm.create_model('hf-hub:...')`` loads (``model.safetensors`` and ``config.json`` from
``timm.models.save_for_hf``), the model card (:mod:`.card`) and the reference tensors that
``bioconv_timm.verify.verify`` checks a download against. The upload goes through ``huggingface_hub.HfApi``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from .._atomic import atomic_write_text
from ..output_paths import check_output_folder
from ..verify import REFERENCE_FILE, write_reference
from .card import format_kwargs, render_model_card
from .errors import PublishError
from .source import build_model, read_source, repo_pretrained_tag, run_model_kwargs

__all__ = ['UPLOAD_FILES', 'PublishResult', 'export_folder', 'repo_id_problem', 'publish']

# What a published folder holds: timm's two files, the card, and the reference tensors verify() checks against.
UPLOAD_FILES = ('model.safetensors', 'config.json', 'README.md', REFERENCE_FILE)


@dataclass
class PublishResult:
    """What :func:`publish` did: the repo, the files exported, and whether (and as which commit) they went up."""
    repo_id: str
    folder: str                               # the exported folder (dry run: the given folder)
    files: List[str]                          # file names in the folder (what is / would be uploaded)
    uploaded: bool
    model_name: str
    top1: Optional[float] = None
    commit: Any = None                        # what upload_folder returned
    source: Dict[str, Any] = field(default_factory=dict)



def _check_empty_folder(out_dir: Union[str, Path]) -> Path:
    """The folder to export into: new or empty, so nothing of the user's is overwritten or deleted, and writable
    (tried, not guessed from permission bits), so a bad folder fails before the model is built."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PublishError(f'{out} is a file, not a folder: pass an empty or new folder to write the Hub files to.')
    if out.is_dir():
        present = sorted(p.name for p in out.iterdir())
        if present:
            shown = ', '.join(present[:5]) + (f' (+{len(present) - 5} more)' if len(present) > 5 else '')
            raise PublishError(f'{out} is not empty ({shown}): pass an empty or new folder; publish writes '
                               f'{", ".join(UPLOAD_FILES)} and never overwrites or deletes files.')
    return check_output_folder(out, PublishError, flag='--dry-run ')


def export_folder(model, source: Dict[str, Any], repo_id: str, out_dir: Union[str, Path]) -> List[str]:
    """Write model.safetensors + config.json (``timm.models.save_for_hf``), the reference tensors
    ``test/rand_tensors.safetensors`` (:func:`bioconv_timm.verify.write_reference`) and README.md into ``out_dir``.

    ``out_dir`` must be new or empty (a PublishError otherwise); returns the paths written, relative to it.
    """
    from timm.models import save_for_hf

    out = _check_empty_folder(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = source['config']
    # pool_size follows the built network (model_kwargs may change the stem stride or depth)
    pretrained_cfg: Dict[str, Any] = dict(input_size=(model.in_chans, *model.img_size),
                                          pool_size=tuple(model.feature_size))
    if config.get('mean') and config.get('std'):
        pretrained_cfg.update(mean=tuple(config['mean']), std=tuple(config['std']))
    if config.get('label_names'):
        pretrained_cfg['label_names'] = list(config['label_names'])
    model_config: Dict[str, Any] = dict(pretrained_cfg=pretrained_cfg)
    if config.get('label_names'):
        model_config['label_names'] = list(config['label_names'])
    data_config = {k: v for k, v in pretrained_cfg.items() if k in ('input_size', 'mean', 'std')}
    save_for_hf(model, str(out), model_config=model_config, safe_serialization=True, data_config=data_config)
    write_reference(model, out, out / 'model.safetensors')  # what verify() compares a download with
    atomic_write_text(out / 'README.md', render_model_card(model, source, repo_id))
    # the folder was empty: everything in it is ours
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file())
    if written != sorted(UPLOAD_FILES):
        raise PublishError(f'exporting wrote {written} to {out}, expected {sorted(UPLOAD_FILES)}; '
                           'is this timm version supported?')
    return written


@contextlib.contextmanager
def _hold_run_folder(path: Union[str, Path]) -> Iterator[None]:
    """Hold the run folder ``path`` is (or whose model.safetensors it is) while publish reads it: the lock that
    ``bioconv train`` holds for its whole life, so a run still writing there is refused with one line naming it.
    A folder we cannot write (a read-only copy) cannot be written by a run either, and is read without the lock."""
    from ..run_folder import hold_run_folder
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / 'config.json').is_file() and os.access(folder, os.W_OK):
        with hold_run_folder(folder, 'publish', create=False):
            yield
    else:
        yield


def _load_source(path: Union[str, Path], repo_id: str, model_name: Optional[str]) -> Tuple[Dict[str, Any], Any]:
    """The checked source (read_source) and its model with the weights loaded, for publishing under ``repo_id``."""
    source = read_source(path, model_name)
    repo_tag = repo_pretrained_tag(source['model'], repo_id)
    if repo_tag and source['tag'] and repo_tag != source['tag']:
        raise PublishError(f'--model {source["model"]}.{source["tag"]} and --repo-id {repo_id} name different tags; '
                           'publish the weights under the tag they were trained for.')
    if repo_tag and run_model_kwargs(source):
        # a registered tag loads by name with the default architecture, which these weights do not fit
        raise PublishError(
            f'{repo_id} is the registered tag {source["model"]}.{repo_tag}, which loads as the default '
            f'{source["model"]}, but the run was trained with model_kwargs {format_kwargs(run_model_kwargs(source))}; '
            f'publish it under another repo name (e.g. {repo_id.split("/")[0]}/{source["model"]}-custom.{repo_tag}), '
            "which timm.create_model('hf-hub:...') rebuilds from its config.json.")
    return source, build_model(source, repo_tag or source['tag'])


def repo_id_problem(repo_id: str, config: Any = None) -> Optional[str]:
    """What is wrong with ``repo_id`` as a Hub model repo (ORG/NAME, by the Hub's own rules, so that a dry run
    refuses what an upload would), or None. Also a ``check`` for settings (``bioconv_timm.settings``)."""
    if repo_id.count('/') != 1 or not all(repo_id.split('/')):
        return 'must be ORG/NAME (e.g. bioconv-timm/lc_resnet20_ws10.digits)'
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return f'is not a valid Hub repo id: {exc}'
    return None


def publish(path: Union[str, Path], repo_id: str, *, model_name: Optional[str] = None,
            dry_run_dir: Optional[Union[str, Path]] = None, api: Any = None, private: bool = False,
            commit_message: Optional[str] = None, token: Optional[str] = None) -> PublishResult:
    """Export a run (or .safetensors file) as a timm Hub folder and upload it to ``repo_id``.

    ``dry_run_dir``: write the folder there (it must be new or empty: nothing is overwritten or deleted) and
    upload nothing; ``timm.create_model('local-dir:DRY_RUN_DIR', pretrained=True)`` loads it, and
    ``bioconv_timm.verify.verify('local-dir:DRY_RUN_DIR')`` checks it. ``api``: an object with huggingface_hub's
    ``create_repo`` / ``upload_folder`` (default ``HfApi(token=token)``; the token then comes from HF_TOKEN or the
    saved login). The run folder is held (``bioconv_timm.run_folder``) while it is read, and its files are checked
    (:func:`read_source`) before the model is built.
    """
    problem = repo_id_problem(repo_id)
    if problem:
        raise PublishError(f'--repo-id {repo_id!r} {problem}')
    if dry_run_dir is not None:
        _check_empty_folder(dry_run_dir)  # before the (slow) model build
    with _hold_run_folder(path):  # a run still training there stops us (its files may change under us)
        source, model = _load_source(path, repo_id, model_name)
    if dry_run_dir is not None:
        files = export_folder(model, source, repo_id, dry_run_dir)
        return PublishResult(repo_id=repo_id, folder=str(dry_run_dir), files=files, uploaded=False,
                             model_name=source['model'], top1=source['top1'], source=source)
    if api is None:
        from huggingface_hub import HfApi
        from timm import __version__ as timm_version
        api = HfApi(token=token, library_name='timm', library_version=timm_version)
    with tempfile.TemporaryDirectory(prefix='bioconv-publish-') as tmp:
        files = export_folder(model, source, repo_id, tmp)
        repo = api.create_repo(repo_id=repo_id, repo_type='model', private=private, exist_ok=True)
        repo_id = getattr(repo, 'repo_id', None) or repo_id
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=tmp, repo_type='model', allow_patterns=list(UPLOAD_FILES),
            commit_message=commit_message or f'Add {source["model"]} weights (bioconv-timm)')
    return PublishResult(repo_id=repo_id, folder='', files=files, uploaded=True, model_name=source['model'],
                         top1=source['top1'], commit=commit, source=source)
