"""What is published: a run folder or bare ``.safetensors`` file read as a *source* dict, and its model rebuilt.

:func:`read_source` reads and checks the files (:mod:`.run_files`), :func:`build_model` rebuilds the model with
``timm.create_model`` and the run's arguments and loads the weights strictly (safetensors only, never pickle).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import PublishError
from .run_files import read_run_files

__all__ = ['read_source', 'source_from_files', 'split_model_tag', 'repo_pretrained_tag', 'run_model_kwargs',
           'create_source_model', 'build_model']


def read_source(path: Union[str, Path], model_name: Optional[str] = None) -> Dict[str, Any]:
    """What a run folder (or bare .safetensors file) holds: model name, weights path, data settings, accuracy.

    A run's config.json, result.json and metrics.csv are checked like any user input (:func:`validate_run_config`,
    :func:`validate_run_result`) and against each other and the run's checkpoint (:func:`cross_check_run`):
    a bad or inconsistent field is a :class:`PublishError` naming it, before any model is built.
    """
    path = Path(path)
    if path.is_dir():
        run_dir: Optional[Path] = path
        weights = path / 'model.safetensors'
        if not weights.is_file():
            raise PublishError(
                f'{path} has no model.safetensors: publish a finished `bioconv train` run folder (the file is written '
                'at the end of training) or pass a .safetensors file with --model.')
    elif path.is_file():
        if path.suffix != '.safetensors':
            raise PublishError(
                f'{path}: only .safetensors weights are published (pickled .pth/.bin checkpoints are never loaded). '
                'Pass the run folder, or its model.safetensors.')
        weights = path
        # a run's own model.safetensors still has its run folder around it
        run_dir = path.parent if path.name == 'model.safetensors' and (path.parent / 'config.json').is_file() else None
    else:
        raise PublishError(f'{path} does not exist: pass a `bioconv train` run folder or a .safetensors file.')
    config, result, metrics, checked = read_run_files(run_dir) if run_dir is not None else ({}, {}, None, [])
    return source_from_files(path, weights, model_name, config, result, metrics, checked)


def source_from_files(path: Path, weights: Optional[Path], model_name: Optional[str], config: Dict[str, Any],
                      result: Dict[str, Any], metrics: Optional[Dict[str, str]], checked: List[str]) -> Dict[str, Any]:
    """The source dict (see :func:`read_source`) from a run's checked files (:func:`read_run_files`);
    ``weights`` None for a card rendered without weights."""
    name, tag = split_model_tag(model_name or config.get('model') or '')
    if not name:
        raise PublishError(f'{path}: no config.json names the model; pass --model NAME (one of `bioconv list`).')
    if config.get('model') and model_name and name != split_model_tag(config['model'])[0]:
        raise PublishError(f'--model {model_name} disagrees with the run ({path}), which trained {config["model"]}.')
    top1, top5 = None, None
    final = result.get('final') or {}
    if final.get('top1') is not None:
        top1 = float(final['top1'])
        top5 = float(final['top5']) if final.get('top5') is not None else None
    elif metrics and metrics.get('eval_top1') not in (None, ''):
        top1 = float(metrics['eval_top1'])
        top5 = float(metrics['eval_top5']) if metrics.get('eval_top5') not in (None, '') else None
    return dict(path=str(path), weights=str(weights) if weights else None, model=name, tag=tag, config=config,
                result=result, metrics=metrics, top1=top1, top5=top5, checked=checked)


def split_model_tag(model_name: str) -> Tuple[str, Optional[str]]:
    """'lc_resnet20_ws10.digits' -> ('lc_resnet20_ws10', 'digits'); a tag must be registered for the model."""
    import timm

    from .. import models as _models  # noqa: F401  (registers the models)

    name, _, tag = model_name.partition('.')
    if not name or not tag:
        return name, None
    if not timm.models.is_model(name):
        raise PublishError(f'unknown model {name!r} (from --model {model_name}); `bioconv list` prints the '
                           'registered bioconv models.')
    tags = [t.split('.', 1)[1] for t in timm.list_models(name + '.*', include_tags=True)]  # published or not
    if tag not in tags:
        raise PublishError(f'--model {model_name}: {name} has no pretrained tag {tag!r}; pass --model {name} or one of '
                           + ', '.join(f'{name}.{t}' for t in tags) + ' (a tag sets the input size and classes)')
    return name, tag


def run_model_kwargs(source: Dict[str, Any]) -> Dict[str, Any]:
    """The extra timm.create_model arguments the run was trained with (e.g. layers, stem_stride)."""
    return dict(source['config'].get('model_kwargs') or {})


def _model_kwargs(source: Dict[str, Any]) -> Dict[str, Any]:
    config = source['config']
    kwargs = run_model_kwargs(source)  # the architecture the weights were trained as, recorded in model_args
    kwargs.update({k: config[k] for k in ('num_classes', 'in_chans', 'img_size') if config.get(k) is not None})
    if 'img_size' in kwargs and isinstance(kwargs['img_size'], list):
        kwargs['img_size'] = tuple(kwargs['img_size'])
    return kwargs


def create_source_model(source: Dict[str, Any], pretrained_tag: Optional[str] = None, device: Optional[str] = None):
    """``timm.create_model`` of the source's model with the run's arguments (on ``device``: 'meta' costs no
    memory); returns (model, the full name, the arguments)."""
    import timm
    import torch

    from .. import models as _models  # noqa: F401  (registers the models)

    name = source['model']
    if not timm.models.is_model(name):
        raise PublishError(f'unknown model {name!r}; `bioconv list` prints the registered bioconv models.')
    kwargs = _model_kwargs(source)
    pretrained_tag = pretrained_tag or source.get('tag')
    full_name = f'{name}.{pretrained_tag}' if pretrained_tag else name
    try:
        with torch.device(device or 'cpu'):
            model = timm.create_model(full_name, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise PublishError(f'cannot build {name} with {kwargs}: {exc}') from exc
    return model, full_name, kwargs


def _weight_shapes(path: str) -> Dict[str, Tuple[int, ...]]:
    """{name: shape} from a safetensors file's header, without reading the tensors."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework='pt') as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise PublishError(f'cannot read {path}: {exc}. The file is truncated or corrupt; '
                           'train again or copy it again.') from exc


def build_model(source: Dict[str, Any], pretrained_tag: Optional[str] = None):
    """``timm.create_model`` the source's model and load its weights strictly (safetensors only).

    The model is built with the run's ``model_kwargs`` (e.g. ``layers=(1, 1, 1), stem_stride=2``) and its
    num_classes / in_chans / img_size; timm records them as the model's args, so ``save_for_hf`` writes them
    to config.json and an ``hf-hub:`` load rebuilds the same architecture. ``pretrained_tag`` (default: the
    tag of ``--model NAME.TAG``) supplies the input size and classes a bare weights file does not record.
    The architecture is first built on the meta device and compared with the weights file's header, so a
    config.json that does not describe the weights (another size, depth or class count) costs no memory.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta, full_name, kwargs = create_source_model(source, pretrained_tag, device='meta')
    have = _weight_shapes(source['weights'])
    own = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    missing = sorted(set(own) - set(have))
    unexpected = sorted(set(have) - set(own))
    shapes = [f'{k}: checkpoint {have[k]} vs model {own[k]}'
              for k in sorted(set(own) & set(have)) if have[k] != own[k]]
    if missing or unexpected or shapes:
        def _few(items: Sequence[str]) -> str:
            return ', '.join(items[:8]) + (f' (+{len(items) - 8} more)' if len(items) > 8 else '')
        parts = []
        if missing:
            parts.append(f'missing keys: {_few(missing)}')
        if unexpected:
            parts.append(f'unexpected keys: {_few(unexpected)}')
        if shapes:
            parts.append(f'shape mismatches: {_few(shapes)}')
        if source['config'].get('model'):
            # the model, its model_kwargs and sizes all come from the run's config.json: another --model cannot help
            run = Path(source['path'])
            config_path = (run if run.is_dir() else run.parent) / 'config.json'
            hint = (f"The run's {config_path} does not describe these weights: were the weights or config.json "
                    'copied from another run?')
        else:
            hint = ('Pass the --model the weights were trained as (NAME.TAG, e.g. lc_resnet20_ws10.digits, for a '
                    "tag's input size and classes), or publish the run folder so model_kwargs / num_classes / "
                    'in_chans / img_size come from its config.json.')
        raise PublishError(
            f"the weights in {source['weights']} do not fit {full_name} built with {kwargs or 'its defaults'} "
            f"({'; '.join(parts)}). {hint}")
    del meta
    model, _, _ = create_source_model(source, pretrained_tag)
    try:
        state = load_file(source['weights'], device='cpu')
    except (SafetensorError, OSError) as exc:
        raise PublishError(f"cannot read {source['weights']}: {exc}. The file is truncated or corrupt; "
                           'train again or copy it again.') from exc
    model.load_state_dict(state, strict=True)
    return model.eval()


def repo_pretrained_tag(model_name: str, repo_id: str) -> Optional[str]:
    """'bioconv-timm/lc_resnet20_ws10.digits' -> 'digits' when that tag is registered for the model."""
    import timm
    repo_name = repo_id.rsplit('/', 1)[-1]
    if not repo_name.startswith(model_name + '.'):
        return None
    tag = repo_name[len(model_name) + 1:]
    return tag if f'{model_name}.{tag}' in timm.list_models(model_name + '.*', include_tags=True) else None
