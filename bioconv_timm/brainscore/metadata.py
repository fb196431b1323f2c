"""A model plugin's ``metadata.yml``: the fields Brain-Score stores about a model (brain-score.org's model page),
written by ``plugin_files`` and checked in a submission zip by ``check_submission_zip``.

Brain-Score's CI writes this file itself after merging a plugin that has none (brainscore_core's
``plugin_management.handle_metadata``, with brainscore_vision's ``VisionDomainPlugin.create_model_metadata``), and
then its ``huggingface_link`` is ``https://huggingface.co/<identifier>`` only if that page answers, which for a
``bioconv_<model>`` identifier it never does. A plugin that ships the file keeps its values (they are validated,
not recomputed), so ours ships one: the computed fields as Brain-Score computes them (the timm model's
parameters and modules, counted on the meta device) and the Hub repo the plugin loads as ``huggingface_link``.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ['METADATA_FILES', 'MODEL_METADATA_FIELDS', 'model_metadata', 'metadata_yaml', 'metadata_problems']

# The two names Brain-Score reads (``metadata.yml`` first); a plugin holding both is refused by its metadata check.
# A new file gets the first, as Brain-Score's own generator names it.
METADATA_FILES: Tuple[str, ...] = ('metadata.yml', 'metadata.yaml')

# The keys a ``models:`` entry may have (brainscore_core's legacy metadata schema), in the order Brain-Score writes
# them, each with the longest string its database column holds (None: not a string column).
MODEL_METADATA_FIELDS: Dict[str, Optional[int]] = {
    'architecture': 100,
    'model_family': 100,
    'total_parameter_count': None,
    'trainable_parameter_count': None,
    'total_layers': None,
    'trainable_layers': None,
    'model_size_mb': None,
    'training_dataset': 100,
    'task_specialization': 100,
    'brainscore_link': 256,
    'huggingface_link': 256,
    'extra_notes': 1000,
    'runnable': None,
}
_TOP_LEVEL = ('models', 'benchmarks')  # what brainscore_core's check allows at the top of the file
BRAINSCORE_TREE = 'https://github.com/brain-score/vision/tree/master/brainscore_vision/models/'
HUGGINGFACE = 'https://huggingface.co/'
# a Hub tag -> the training data set, by the id brainscore_core's dataset vocabulary uses where it has one
_TAG_DATASETS = {'in1k': 'imagenet-1k', 'cifar10': 'cifar-10', 'digits': 'digits'}


def model_family(arch: str) -> str:
    """The family word of a bioconv architecture: 'resnet18_half' -> 'resnet', 'mobilenetv3_small_050' ->
    'mobilenet', 'convnext_atto' -> 'convnext' (the words brain-score.org groups models by)."""
    match = re.match(r'[a-z]+?(?=v?\d|_|$)', arch)
    return match.group(0) if match else arch


def model_metadata(model: Any, identifier: str, model_name: str, hub_repo: str,
                   note: Optional[str] = None) -> Dict[str, Any]:
    """The ``models: {identifier: ...}`` entry of a plugin's metadata for ``model`` (a timm model; the meta
    device is enough): counts as Brain-Score's generator makes them (every parameter tensor, every module, the
    root included, trainable layers = trainable parameter tensors of 2 or more dimensions, size = parameter
    bytes / 1e6), the Hub repo the plugin downloads as ``huggingface_link``, the training data from its tag (``.in1k``:
    ``imagenet-1k``; none for a repo without a known tag)."""
    from ..models import model_spec

    params = list(model.parameters())
    repo_name = hub_repo.split('/', 1)[1]
    tag = repo_name.rsplit('.', 1)[1] if '.' in repo_name else None
    notes = [f'{model_name} of Pogodin et al., NeurIPS 2021 (arXiv:2106.13031), from bioconv-timm'
             + (f' ({note})' if note else '') + f'; weights: {HUGGINGFACE}{hub_repo}']
    return {
        'architecture': 'DCNN',  # convolutional or locally connected layers; no attention, no recurrence
        'model_family': model_family(model_spec(model_name).arch),
        'total_parameter_count': sum(p.numel() for p in params),
        'trainable_parameter_count': sum(p.numel() for p in params if p.requires_grad),
        'total_layers': sum(1 for _ in model.modules()),
        'trainable_layers': sum(1 for p in params if p.requires_grad and p.dim() > 1),
        'model_size_mb': round(sum(p.element_size() * p.numel() for p in params) / 1e6, 2),
        'training_dataset': _TAG_DATASETS.get(tag),  # None for a repo without a known tag
        'task_specialization': None,
        'brainscore_link': BRAINSCORE_TREE + identifier,
        'huggingface_link': HUGGINGFACE + hub_repo,
        'extra_notes': ' '.join(notes),
        'runnable': True,
    }


def metadata_yaml(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """The YAML of ``{'models': entries}`` as Brain-Score writes it: block style, keys in order, indent 4."""
    import yaml
    return yaml.safe_dump({'models': {k: dict(v) for k, v in entries.items()}}, default_flow_style=False,
                          sort_keys=False, indent=4, width=1000)


def metadata_problems(text: str, where: str, identifiers: List[str]) -> List[str]:
    """What Brain-Score's metadata check (and its database) would refuse in a plugin's metadata file, plus an
    entry for a model the plugin does not register (``identifiers``): Brain-Score would create that model's
    database entry from the metadata alone. A ``schema_version: '2.0'`` file is left to Brain-Score's own check."""
    import yaml
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f'{where}: not YAML ({str(exc).splitlines()[0]})']
    if not isinstance(data, dict):
        return [f'{where}: must be a YAML mapping with a models: section']
    if data.get('schema_version') == '2.0':
        return []
    problems = [f'{where}: top-level key {key!r} is not allowed (only models: or benchmarks:)'
                for key in data if key not in _TOP_LEVEL]
    models = data.get('models')
    if not isinstance(models, dict) or not models:
        return problems + [f'{where}: needs a models: section mapping each registered identifier to its fields']
    for name, entry in models.items():
        if name not in identifiers:
            problems.append(f'{where}: models: names {name!r}, which the plugin does not register '
                            f'(it registers {", ".join(identifiers) or "nothing"})')
        if not isinstance(entry, dict):
            problems.append(f'{where}: models: {name!r} must map field names to values')
            continue
        extra = [key for key in entry if key not in MODEL_METADATA_FIELDS]
        if extra:
            problems.append(f'{where}: models: {name!r} has keys Brain-Score does not allow: {", ".join(map(str, extra))} '
                            f'(allowed: {", ".join(MODEL_METADATA_FIELDS)})')
        for key, limit in MODEL_METADATA_FIELDS.items():
            value = entry.get(key)
            if limit is not None and value is not None and len(str(value)) > limit:
                problems.append(f'{where}: models: {name!r}: {key} is {len(str(value))} characters, more than the '
                                f'{limit} Brain-Score stores')
    return problems
