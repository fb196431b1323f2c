"""Publish trained weights to the Hugging Face Hub as timm models, with a model card.

``publish(RUN_DIR_OR_CHECKPOINT, repo_id)`` (CLI: ``bioconv publish``) reads a run folder written by
``bioconv train`` (config.json, model.safetensors, result.json / metrics.csv) or a bare ``.safetensors``
file (then ``model_name`` is required), rebuilds the model with ``timm.create_model`` and loads the
weights strictly (safetensors only, never pickle), and writes a folder a ``timm.create_model('hf-hub:...')``
call can load: ``model.safetensors`` and ``config.json`` from ``timm.models.save_for_hf`` plus a
``README.md`` model card, a ``huggingface_hub.ModelCard`` whose metadata (license, library, tags, dataset and
a ``model-index`` with the run's top-1 / top-5 as ``EvalResult``) is written by huggingface_hub. The model is
built with the run's ``model_kwargs`` (config.json), which end up in the Hub config.json's ``model_args``.
Unless ``dry_run_dir`` (a new or empty folder) is given the folder is uploaded with ``huggingface_hub.HfApi``
(``create_repo(exist_ok=True)`` + ``upload_folder``); the token comes from ``HF_TOKEN`` or
``huggingface-cli login``. The repo id is checked with huggingface_hub's ``validate_repo_id`` first, so a dry
run refuses the ids an upload would.

Loading back (after ``import bioconv_timm``)::

    timm.create_model('hf-hub:ORG/NAME', pretrained=True)
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import string
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from ._atomic import atomic_write_text
from .errors import UserRuntimeError
from .models import model_spec
from .output_paths import check_output_folder
from .verify import DEFAULT_ATOL, DEFAULT_RTOL, REFERENCE_FILE, write_reference
from .paper import CITATION, PAPER_CELLS, TABLE1_TOP1, label_for_model

__all__ = ['PublishError', 'PublishResult', 'read_source', 'split_model_tag', 'build_model', 'export_folder',
           'card_data', 'model_card', 'render_model_card', 'render_run_card', 'publish', 'paper_cell_for',
           'validate_run_config', 'validate_run_result', 'cross_check_run', 'UPLOAD_FILES', 'LICENSE_TEXT',
           'CARD_SECTIONS', 'HubDataset', 'HUB_DATASETS', 'MODEL_KWARGS_REFUSED', 'repo_id_problem']

# What a published folder holds: timm's two files, the card, and the reference tensors verify() checks against.
UPLOAD_FILES = ('model.safetensors', 'config.json', 'README.md', REFERENCE_FILE)

# The sections a card must have (tests/test_hub.py checks every card in model_cards/).
CARD_SECTIONS = ('## Model details', '## Usage', '## Training', '## Results', '## Limitations', '## Citation',
                 '## License')

# The card's Markdown body; its YAML metadata block comes from huggingface_hub (card_data, model_card).
CARD_BODY_TEMPLATE = string.Template("""# ${repo_id}

${summary}

This is a [timm](https://github.com/huggingface/pytorch-image-models) model from the `bioconv-timm`
package, a reimplementation (authors' code: https://github.com/romanpogodin/towards-bio-plausible-conv) of
*Towards Biologically Plausible Convolutional Networks* (Pogodin, Mehta, Lillicrap and Latham, NeurIPS 2021,
[arXiv:2106.13031](https://arxiv.org/abs/2106.13031)). Convolutions need weight sharing, which neurons
cannot do; locally connected (LC) layers have an independent kernel at every location and are plausible
but learn worse. The paper closes most of the gap with a periodic *sleep phase* that equalizes the weights
of neighbouring neurons ("dynamic weight sharing").

## Model details

- **Architecture:** `${model}` (${arch_text})
- **Connectivity:** ${connectivity}
- **Sleep period:** ${sleep_text}
- **Input:** ${in_chans} x ${img_h} x ${img_w}, normalized with mean ${mean} and std ${std}${fixed_text}
- **Classes:** ${num_classes}${labels_text}
- **Parameters:** ${params}
- **Weights:** `model.safetensors` (safetensors only)

## Usage

```python
import bioconv_timm  # registers the bioconv models with timm; timm has no plugin discovery
import timm
import torch

model = timm.create_model('hf-hub:${repo_id}', pretrained=True).eval()
data_config = timm.data.resolve_model_data_config(model)   # mean/std/input size of this checkpoint
x = torch.randn(1, ${in_chans}, ${img_h}, ${img_w})          # a normalized image batch
probs = model(x).softmax(dim=-1)
```

${usage_note}

Offline, from a copy of this repo's files in a folder: `timm.create_model('local-dir:PATH', pretrained=True)`
(timm's `local-dir:` scheme) loads the same weights.

**Check a download.** `${reference_file}` holds a seeded random input and this model's outputs on it (the
file and keys timm's own inference test reads). This reloads the model through timm, reruns the input and
compares (|difference| <= ${atol} + ${rtol} x |reference|, and the SHA-256 of `model.safetensors`); a
mismatch raises an error naming the largest difference:

```python
from bioconv_timm.verify import verify
print(verify('hf-hub:${repo_id}').summary())   # or verify('local-dir:PATH')
```

## Training

${training_text}

## Results

${results_text}

## Limitations

- ${budget_limitation}
- Locally connected weights are tied to the input size: the model only accepts ${img_h}x${img_w} inputs.
  `in_chans=` (the LC stem is adapted like timm's conv stems) and `num_classes=` (a new classifier) can be
  changed when loading; `img_size=` cannot.
- LC layers store a kernel per output location: the model is much larger and slower than its
  convolutional counterpart. It is a research model for studying biologically plausible learning, not a
  production classifier.

## Citation

```bibtex
${citation}
```

## License

${license_text}
""")


class HubDataset(NamedTuple):
    """How a training dataset appears in a card's metadata."""
    name: str                 # readable name (model-index ``dataset.name``)
    hub_id: Optional[str]     # the Hugging Face dataset id (``datasets:``, model-index ``dataset.type``); None: none
    test_split: str           # the split of ``hub_id`` that ``split='test'`` evaluates on


# The one table of datasets a run can name (bioconv_timm.train.data.DATASETS; a test keeps them equal). The ids are
# the Hub's canonical dataset repos, so the model-index links the card to the dataset page and its leaderboards;
# digits (scikit-learn's 8x8 digits on our 24x24 canvas) has no Hub dataset and keeps our own name.
HUB_DATASETS: Dict[str, HubDataset] = {
    'digits': HubDataset('digits (scikit-learn handwritten digits on a 24x24 canvas)', None, 'test'),
    'fashion-mnist': HubDataset('Fashion-MNIST', 'zalando-datasets/fashion_mnist', 'test'),
    # ours (no Hub dataset): each Fashion-MNIST item at a fixed random position on a 40x40 canvas
    'fashion-mnist-shifted': HubDataset('Fashion-MNIST shifted (each item at a fixed random place on a 40x40 '
                                        'canvas)', None, 'test'),
    'cifar10': HubDataset('CIFAR-10', 'uoft-cs/cifar10', 'test'),
    'cifar100': HubDataset('CIFAR-100', 'uoft-cs/cifar100', 'test'),
    'tinyimagenet': HubDataset('Tiny ImageNet', 'zh-plus/tiny-imagenet', 'valid'),     # our 'test': the official val
    'imagenet': HubDataset('ImageNet-1k', 'ILSVRC/imagenet-1k', 'validation'),      # our 'test': the official val
}
# a run with split='val' was evaluated on a held-out part of the training set
HELD_OUT_SPLIT = 'train (held-out part)'

# This project's code and weights are MIT. The authors' repository is GPL-3.0 and none of its code is used;
# never word this so that MIT reads as the authors' license.
LICENSE_TEXT = ('MIT (this project\'s code and weights). `bioconv-timm` is an independent reimplementation; the '
                'authors\' code (https://github.com/romanpogodin/towards-bio-plausible-conv) is licensed separately '
                '(GPL-3.0) and is not part of this model.')


class PublishError(UserRuntimeError):
    """The run folder or checkpoint cannot be published as the named model."""


@dataclass
class PublishResult:
    repo_id: str
    folder: str                               # the exported folder (dry run: the given folder)
    files: List[str]                          # file names in the folder (what is / would be uploaded)
    uploaded: bool
    model_name: str
    top1: Optional[float] = None
    commit: Any = None                        # what upload_folder returned
    source: Dict[str, Any] = field(default_factory=dict)


# --- reading a run ---------------------------------------------------------------------------

def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PublishError(f'{path} is not valid JSON ({exc}); was the run interrupted? Re-run `bioconv train`.') from exc


def _last_metrics(path: Path) -> Optional[Dict[str, str]]:
    if not path.is_file():
        return None
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else None


# --- checking a run's files like any user input ------------------------------------------------------------
#
# A run folder's JSON files are user-editable text. Everything publish reads from them goes onto the Hub (the model's
# arguments, mean/std, label names, the card's numbers), so each field is checked for type and range by one table of
# rules, and what the run recorded twice (config.json and the config inside last.pth; config.json and result.json)
# must agree.

Rule = Callable[[Any, Mapping[str, Any]], Optional[str]]  # (value, whole document) -> what is wrong, or None

# timm.create_model arguments a run's model_kwargs may not carry to the Hub: the dataset sets the first three,
# the rest would change how a Hub load behaves (weights from elsewhere, another size cap, a feature extractor)
MODEL_KWARGS_REFUSED = frozenset({'num_classes', 'in_chans', 'img_size', 'pretrained', 'pretrained_cfg',
                                  'pretrained_cfg_overlay', 'pretrained_strict', 'checkpoint_path', 'cache_dir',
                                  'features_only', 'feature_cfg', 'max_params', 'scriptable', 'exportable'})
MAX_IN_CHANS = 64
MAX_NUM_CLASSES = 100_000


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(lo: int, hi: Optional[int] = None) -> Rule:
    def rule(value: Any, doc: Mapping[str, Any]) -> Optional[str]:
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            return f'must be an integer {f"in {lo}..{hi}" if hi is not None else f">= {lo}"}'
        return None
    return rule


def _real_in(lo: float, hi: Optional[float] = None, lo_open: bool = False, hi_open: bool = False) -> Rule:
    def rule(value: Any, doc: Mapping[str, Any]) -> Optional[str]:
        low_ok = _is_real(value) and (value > lo if lo_open else value >= lo)
        high_ok = hi is None or (_is_real(value) and (value < hi if hi_open else value <= hi))
        if not (low_ok and high_ok):
            span = (('(' if lo_open else '[') + f'{lo:g}, ' + (f'{hi:g}' if hi is not None else 'inf')
                    + (')' if hi_open or hi is None else ']'))
            return f'must be a finite number in {span}'
        return None
    return rule


def _one_of(choices: Sequence[str]) -> Rule:
    def rule(value: Any, doc: Mapping[str, Any]) -> Optional[str]:
        return None if isinstance(value, str) and value in choices else f'must be one of {", ".join(choices)}'
    return rule


def _optional(inner: Rule) -> Rule:
    def rule(value: Any, doc: Mapping[str, Any]) -> Optional[str]:
        return None if value is None else inner(value, doc)
    return rule


def _boolean(value: Any, doc: Mapping[str, Any]) -> Optional[str]:
    return None if isinstance(value, bool) else 'must be true or false'


def _known_model(value: Any, doc: Mapping[str, Any]) -> Optional[str]:
    from .models import MODEL_SPECS
    name = value.split('.', 1)[0] if isinstance(value, str) else None
    if name not in MODEL_SPECS:
        return 'must name a registered bioconv model (`bioconv list`)'
    return None


def _model_kwargs_rule(value: Any, doc: Mapping[str, Any]) -> Optional[str]:
    if not isinstance(value, dict):
        return 'must be an object of timm.create_model arguments'
    refused = sorted(set(value) & MODEL_KWARGS_REFUSED)
    if refused:
        return f'may not set {", ".join(refused)} (set by the dataset or by the loader, never by a run)'
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        if not key.isidentifier() or not all(v is None or isinstance(v, (str, bool)) or _is_real(v) for v in items):
            return f'must map argument names to numbers, texts, true/false or lists of them ({key!r} does not)'
    return None


def _per_channel(positive: bool) -> Rule:
    def rule(value: Any, doc: Mapping[str, Any]) -> Optional[str]:
        if not isinstance(value, list) or not value or not all(_is_real(v) and (v > 0 or not positive) for v in value):
            return 'must be a list of finite numbers' + (' > 0' if positive else '')
        in_chans = doc.get('in_chans')
        if _is_int(in_chans) and len(value) != in_chans:
            return f'has {len(value)} value(s), in_chans={in_chans} needs one per input channel'
        return None
    return rule


def _label_names(value: Any, doc: Mapping[str, Any]) -> Optional[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and len(v) <= 200 for v in value):
        return 'must be a list of class names (texts)'
    num_classes = doc.get('num_classes')
    if _is_int(num_classes) and len(value) != num_classes:
        return f'has {len(value)} name(s), num_classes={num_classes} needs one per class'
    return None


def _config_rules() -> Dict[str, Rule]:
    """{config.json field: its rule} for what config.json holds besides the TrainConfig fields (those are checked
    by TrainConfig's own declarations, :func:`_check_training_settings`): the dataset's shapes and statistics,
    and two checks the Hub needs on top of training's (a bioconv model; model_kwargs a Hub load may carry)."""
    return {
        'model': _known_model, 'model_kwargs': _model_kwargs_rule,
        'num_classes': _int_in(1, MAX_NUM_CLASSES), 'in_chans': _int_in(1, MAX_IN_CHANS),
        'mean': _per_channel(positive=False), 'std': _per_channel(positive=True), 'label_names': _label_names,
        'world_size': _int_in(1),
    }


def _check_training_settings(config: Mapping[str, Any], where: str, fix: str) -> None:
    """config.json's TrainConfig fields checked by TrainConfig itself (every setting is declared once, in
    ``bioconv_timm.train.config``), except those that name the machine the run ran on (its folders and device),
    which are no property of the weights and need not exist here."""
    import dataclasses

    from .settings import ConfigError, declared_fields
    from .train.config import TrainConfig

    machine = {f.name for f, decl in declared_fields(TrainConfig) if decl.path or f.name == 'device'}
    names = {f.name for f in dataclasses.fields(TrainConfig)} - machine
    try:
        TrainConfig(**{k: v for k, v in config.items() if k in names})
    except ConfigError as exc:
        raise PublishError(f'{where}: {exc}. {fix}') from None


_PERCENT = _real_in(0, 100)
_RESULT_RULES: Dict[str, Rule] = {
    'model': _known_model, 'dataset': _one_of(tuple(HUB_DATASETS)), 'best_top1': _optional(_PERCENT),
    'steps': _int_in(0), 'sleeps': _int_in(0), 'epochs': _int_in(1), 'final_sleep': _boolean,
    'refresh_bn': _boolean, 'world_size': _int_in(1),
}
_FINAL_RULES: Dict[str, Rule] = {'top1': _optional(_PERCENT), 'top5': _optional(_PERCENT),
                                 'loss': _optional(_real_in(0))}


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


def _apply_rules(doc: Any, rules: Mapping[str, Rule], where: str, fix: str, prefix: str = '') -> None:
    if not isinstance(doc, dict):
        raise PublishError(f'{where} must hold a JSON object, got {_short(doc)}. {fix}')
    for key, rule in rules.items():
        if key in doc:
            problem = rule(doc[key], doc)
            if problem:
                raise PublishError(f'{where}: "{prefix}{key}": {_short(doc[key])} {problem}. {fix}')


def validate_run_config(config: Any, where: Union[str, Path] = 'config.json') -> None:
    """Check a run's config.json field by field, as any user input: the training settings by TrainConfig's own
    declarations (types, ranges, choices), the rest here (a bioconv model, ``mean``/``std`` finite and one per
    input channel, ``label_names`` one per class, model_kwargs a Hub load may carry); raise :class:`PublishError`
    naming the first bad field. Unknown fields are ignored; a missing field means its default."""
    fix = ('config.json is written by `bioconv train`: restore the run\'s own file (its last.pth holds the same '
           'settings) or train again.')
    _apply_rules(config, _config_rules(), str(where), fix)
    if 'model' not in config:
        raise PublishError(f'{where} names no "model"; {fix}')
    _check_training_settings(config, str(where), fix)


def validate_run_result(result: Any, where: Union[str, Path] = 'result.json') -> None:
    """Check a run's result.json (the accuracies in %, steps, sleeps) like :func:`validate_run_config`."""
    fix = 'result.json is written at the end of `bioconv train`: restore the run\'s own file or train again.'
    _apply_rules(result, _RESULT_RULES, str(where), fix)
    if 'final' in result:
        _apply_rules(result['final'], _FINAL_RULES, str(where), fix, prefix='final.')


def _metrics_row(row: Optional[Dict[str, str]], where: Path) -> None:
    """The last metrics.csv row's accuracies must read as percentages."""
    for key in ('eval_top1', 'eval_top5'):
        text = (row or {}).get(key)
        if text in (None, ''):
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 <= value <= 100):
            raise PublishError(f'{where}: {key} {text!r} in the last row is not a percentage; restore the run\'s own '
                               'metrics.csv or train again.')


# config.json fields the run's checkpoint records too and that describe the weights or go on the card. Not here:
# where and how a run ran (paths, device, workers, eval_every) and final_sleep / refresh_bn, which a resumed run
# may change without writing another checkpoint (result.json records those two).
CHECKPOINT_CROSS_FIELDS = ('model', 'model_kwargs', 'dataset', 'split', 'img_size', 'pad', 'reps', 'train_subset',
                           'eval_subset', 'val_size', 'epochs', 'batch_size', 'lr', 'weight_decay', 'opt',
                           'lr_milestones', 'lr_decay', 'ws_lr_scale', 'drop_rate', 'sleep_every', 'sleep_mode',
                           'sleep_optimizer', 'ema', 'ema_decay', 'amp', 'seed')
RESULT_CROSS_FIELDS = ('model', 'dataset', 'epochs', 'final_sleep', 'refresh_bn', 'world_size')


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (a checkpoint's tuples are config.json's lists)."""
    def norm(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v
    return json.dumps(norm(a), sort_keys=True) == json.dumps(norm(b), sort_keys=True)


def _checkpoint_config(path: Path) -> Optional[Dict[str, Any]]:
    """The run settings stored in a training checkpoint (read with ``weights_only=True``; memory-mapped, so the
    optimizer state is not read into memory)."""
    import torch
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as exc:  # truncated, not a zip, or not loadable safely: all mean "not the run's checkpoint"
        raise PublishError(f'cannot read {path} to check config.json against it ({type(exc).__name__}: {exc}); '
                           'publish a run folder as `bioconv train` left it, or remove the broken checkpoint.') from exc
    config = ckpt.get('config') if isinstance(ckpt, dict) else None
    return config if isinstance(config, dict) else None


def cross_check_run(run_dir: Union[str, Path], config: Mapping[str, Any], result: Mapping[str, Any]) -> List[str]:
    """Check that a run folder's files describe one run: config.json against the settings in ``last.pth`` (the
    checkpoint the weights came from) and against result.json. Raises :class:`PublishError` naming the field and
    both files at the first disagreement; returns the names of the files checked against config.json."""
    run_dir = Path(run_dir)
    checked = []
    hint = ('were files copied between runs, or config.json edited? Publish a folder that one `bioconv train` run '
            'wrote (train again into a new --output-dir if unsure).')
    ckpt_path = run_dir / 'last.pth'
    if ckpt_path.is_file():
        saved = _checkpoint_config(ckpt_path)
        if saved is not None:
            _agree(config, saved, CHECKPOINT_CROSS_FIELDS, run_dir / 'config.json', ckpt_path, hint)
            checked.append('last.pth')
    if result:
        _agree(config, result, RESULT_CROSS_FIELDS, run_dir / 'config.json', run_dir / 'result.json', hint)
        checked.append('result.json')
    return checked


def _agree(config: Mapping[str, Any], other: Mapping[str, Any], keys: Sequence[str], config_path: Path,
           other_path: Path, hint: str) -> None:
    """Raise PublishError at the first of ``keys`` on which config.json and ``other_path`` disagree."""
    for key in keys:
        if key in other and key in config and not _same(other[key], config[key]):
            raise PublishError(f'{config_path} and {other_path} disagree on {key}: {_short(config[key])} in '
                               f'{config_path.name}, {_short(other[key])} in {other_path.name}; {hint}')


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
    config, result, metrics, checked = _run_files(run_dir) if run_dir is not None else ({}, {}, None, [])
    return _source(path, weights, model_name, config, result, metrics, checked)


def _run_files(run_dir: Path) -> Tuple[Dict[str, Any], Dict[str, Any], Optional[Dict[str, str]], List[str]]:
    """A run folder's config.json, result.json and last metrics.csv row, each checked, and checked against each
    other and last.pth; also the names of the files checked."""
    config = _read_json(run_dir / 'config.json') or {}
    result = _read_json(run_dir / 'result.json') or {}
    metrics = _last_metrics(run_dir / 'metrics.csv')
    checked: List[str] = []
    if (run_dir / 'config.json').is_file():
        validate_run_config(config, run_dir / 'config.json')
        checked.append('config.json')
    if (run_dir / 'result.json').is_file():
        validate_run_result(result, run_dir / 'result.json')
    _metrics_row(metrics, run_dir / 'metrics.csv')
    if config:
        checked += cross_check_run(run_dir, config, result)
    return config, result, metrics, checked


def _source(path: Path, weights: Optional[Path], model_name: Optional[str], config: Dict[str, Any],
            result: Dict[str, Any], metrics: Optional[Dict[str, str]], checked: List[str]) -> Dict[str, Any]:
    """The source dict (see read_source) from a run's checked files."""
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

    from . import models as _models  # noqa: F401  (registers the models)

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


def _run_model_kwargs(source: Dict[str, Any]) -> Dict[str, Any]:
    """The extra timm.create_model arguments the run was trained with (e.g. layers, stem_stride)."""
    return dict(source['config'].get('model_kwargs') or {})


def _model_kwargs(source: Dict[str, Any]) -> Dict[str, Any]:
    config = source['config']
    kwargs = _run_model_kwargs(source)  # the architecture the weights were trained as, recorded in model_args
    kwargs.update({k: config[k] for k in ('num_classes', 'in_chans', 'img_size') if config.get(k) is not None})
    if 'img_size' in kwargs and isinstance(kwargs['img_size'], list):
        kwargs['img_size'] = tuple(kwargs['img_size'])
    return kwargs


def _create(source: Dict[str, Any], pretrained_tag: Optional[str] = None, device: Optional[str] = None):
    """``timm.create_model`` of the source's model with the run's arguments (on ``device``: 'meta' costs no
    memory); returns (model, the full name, the arguments)."""
    import timm
    import torch

    from . import models as _models  # noqa: F401  (registers the models)

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

    meta, full_name, kwargs = _create(source, pretrained_tag, device='meta')
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
    model, _, _ = _create(source, pretrained_tag)
    try:
        state = load_file(source['weights'], device='cpu')
    except (SafetensorError, OSError) as exc:
        raise PublishError(f"cannot read {source['weights']}: {exc}. The file is truncated or corrupt; "
                           'train again or copy it again.') from exc
    model.load_state_dict(state, strict=True)
    return model.eval()


# --- the model card --------------------------------------------------------------------------

def paper_cell_for(model_name: str, dataset: Optional[str], pad: Optional[int], reps: int = 1):
    """The paper's cell (bioconv_timm.paper.PAPER_CELLS) for the same model, dataset, padding and reps."""
    if not dataset:
        return None
    for cell in PAPER_CELLS:
        if cell.model == model_name and cell.dataset == dataset and (pad is None or cell.pad == pad) \
                and cell.reps == (reps or 1):
            return cell
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return '(' + ', '.join(_fmt(v) for v in value) + (',)' if len(value) == 1 else ')')
    if isinstance(value, float):
        return f'{value:g}'
    return str(value)


def _fmt_kwargs(kwargs: Dict[str, Any]) -> str:
    return ', '.join(f'{k}={_fmt(v)}' for k, v in kwargs.items())


def _describe_arch(model, name: str, run_kwargs: Dict[str, Any]) -> str:
    """'ResNet-8, built as `lc_resnet20` with layers=(1, 1, 1), stem_stride=2: 3x3/2 stem, ...' (from the model)."""
    blocks = [len(getattr(model, n)) for n in model.stage_names]
    widths = [info['num_chs'] for info in model.feature_info[1:]]
    stem_stride = model.feature_info[0]['reduction']
    cifar_stem = not hasattr(model.maxpool, 'kernel_size')  # the 'cifar' stem has no max-pool
    stem = f'3x3/{stem_stride} stem' if cifar_stem else '7x7/2 stem + max-pool'
    return (f'ResNet-{2 * sum(blocks) + 2}, built as `{name}` with '
            f'{_fmt_kwargs(run_kwargs)}: {stem}, {len(blocks)} stages of {"-".join(map(str, blocks))} BasicBlocks '
            f'with {"/".join(map(str, widths))} channels')


def _dataset_id(dataset: Optional[str]) -> Optional[str]:
    """The Hub dataset id of a run's dataset ('cifar10' -> 'uoft-cs/cifar10'), or our own name where the Hub has
    none ('digits')."""
    if not dataset:
        return None
    entry = HUB_DATASETS.get(dataset)
    return (entry.hub_id or dataset) if entry else dataset


def _card_tags(layer: str, sleep_every: Optional[int]) -> List[str]:
    tags = ['image-classification', 'timm', 'bioconv-timm', 'biologically-plausible']
    if layer == 'lc':
        tags.append('locally-connected')
    if sleep_every and layer != 'conv':
        tags.append('weight-sharing')
    return tags


def card_data(model, source: Dict[str, Any], repo_id: str):
    """The card's metadata as a ``huggingface_hub.ModelCardData``: license, library, tags, dataset, and a
    ``model-index`` (``EvalResult``: image classification on the run's dataset and split, top-1 as ``accuracy``
    and top-5 as ``top_5_accuracy``, in %) when the run recorded a final top-1. The dataset is named by its Hub
    id where it has one (:data:`HUB_DATASETS`), so the Hub indexes the card under that dataset."""
    from huggingface_hub import EvalResult, ModelCardData

    config = source['config']
    spec = model_spec(source['model'])
    sleep_every = config.get('sleep_every') if config.get('sleep_every') is not None else spec.sleep_every
    dataset = _dataset_id(config.get('dataset'))
    entry = HUB_DATASETS.get(config.get('dataset') or '')
    eval_results = []
    top1, top5 = source.get('top1'), source.get('top5')
    if top1 is not None and dataset:
        split = config.get('split', 'test')
        hub_split = HELD_OUT_SPLIT if split == 'val' else (entry.test_split if entry else split)
        common = dict(task_type='image-classification', task_name='Image Classification', dataset_type=dataset,
                      dataset_name=entry.name if entry else dataset, dataset_split=hub_split)
        eval_results.append(EvalResult(metric_type='accuracy', metric_name='Top-1 accuracy (%)',
                                       metric_value=round(top1, 2), **common))
        # with 5 classes or fewer "top-5" is every class (trivially 100%): not a result worth listing
        if top5 is not None and getattr(model, 'num_classes', 0) > 5:
            eval_results.append(EvalResult(metric_type='top_5_accuracy', metric_name='Top-5 accuracy (%)',
                                           metric_value=round(top5, 2), **common))
    return ModelCardData(
        library_name='timm', license='mit', pipeline_tag='image-classification',
        tags=_card_tags(spec.layer_type, sleep_every), datasets=[dataset] if dataset else None, metrics=['accuracy'],
        model_name=repo_id.rsplit('/', 1)[-1] if eval_results else None, eval_results=eval_results or None)


def model_card(model, source: Dict[str, Any], repo_id: str):
    """The README.md model card (a ``huggingface_hub.ModelCard``) for ``model`` trained as described by ``source``
    (see read_source): huggingface_hub's YAML metadata (:func:`card_data`) over this package's Markdown body."""
    from huggingface_hub import ModelCard

    metadata = card_data(model, source, repo_id).to_yaml()
    return ModelCard(f'---\n{metadata}\n---\n\n{_card_body(model, source, repo_id)}')


def render_model_card(model, source: Dict[str, Any], repo_id: str) -> str:
    """The README.md model card for ``model`` trained as described by ``source`` (see read_source), as text."""
    return str(model_card(model, source, repo_id))


def render_run_card(run_dir: Union[str, Path], repo_id: str) -> str:
    """The README.md that ``publish(run_dir, repo_id)`` writes, from the run's config.json and result.json alone.

    A card depends on the architecture and on what the run recorded, never on weight values, so the model is
    built on the meta device and no weights file is needed: ``model_cards/records/<tag>/`` keeps the two files of
    each committed card's run, and a test rebuilds every card from them with the current code.
    """
    run_dir = Path(run_dir)
    if not (run_dir / 'config.json').is_file():
        raise PublishError(f'{run_dir} has no config.json: pass a `bioconv train` run folder.')
    config, result, metrics, checked = _run_files(run_dir)
    source = _source(run_dir, None, None, config, result, metrics, checked)
    repo_tag = _pretrained_tag(source['model'], repo_id)
    model, _, _ = _create(source, repo_tag or source['tag'], device='meta')
    return render_model_card(model, source, repo_id)


def _card_body(model, source: Dict[str, Any], repo_id: str) -> str:
    """The card's Markdown body (CARD_BODY_TEMPLATE, every section of CARD_SECTIONS)."""
    name = source['model']
    config = source['config']
    result = source['result']
    spec = model_spec(name)
    arch, layer, stem, sleep = spec.arch, spec.layer_type, spec.stem_type, spec.sleep_every
    cfg = model.pretrained_cfg
    in_chans, img_h, img_w = model.in_chans, *model.img_size
    mean = config.get('mean') or cfg.get('mean')
    std = config.get('std') or cfg.get('std')
    dataset = config.get('dataset')
    run_kwargs = _run_model_kwargs(source)
    if not spec.is_bioresnet:  # a converted timm CNN (bioconv_timm.models.timm_cnns)
        arch_text = (spec.description + f', at {img_h}x{img_w}'
                     + (f', built with {_fmt_kwargs(run_kwargs)}' if run_kwargs else ''))
    elif run_kwargs:  # another depth or stem than the registered name says: describe the network that was built
        arch_text = _describe_arch(model, name, run_kwargs)
    else:
        arch_text = spec.description  # the registry's (bioconv_timm.models.registry)
    if layer == 'conv':
        connectivity = 'convolutional (the weight-sharing baseline)'
    elif stem == 'conv':
        connectivity = 'locally connected except a convolutional stem (paper Table 13, "LC + 1st layer conv")'
    else:
        connectivity = 'locally connected: every convolution (stem and 1x1 shortcuts included) has an ' \
                       'independent kernel at every output location'
    sleep_every = config.get('sleep_every') if config.get('sleep_every') is not None else sleep
    if layer == 'conv':
        sleep_text = 'none (convolutional)'
    elif sleep_every:
        sleep_text = (f'a sleep phase (instant weight sharing: every LC layer set to its k x k grid means) after '
                      f'every {sleep_every} optimizer step{"s" if sleep_every != 1 else ""}')
    else:
        sleep_text = 'none (plain LC, no weight sharing)'
    label_names = config.get('label_names') or cfg.get('label_names')
    labels_text = f' ({", ".join(map(str, label_names))})' if label_names and len(label_names) <= 20 else ''
    params = sum(p.numel() for p in model.parameters())
    short = dict(conv='convolutional', lc='locally connected')[layer] + (', conv stem' if stem != layer else '')
    summary = (f'`{name}` ({short}' + (f', sleep every {sleep_every} steps' if sleep_every and
                                                            layer != 'conv' else '') +
               f') trained on {dataset or "an unrecorded dataset"}' +
               (f' for {config.get("epochs")} epochs' if config.get('epochs') else '') + '.')

    # training
    if config:
        keys = ('dataset', 'split', 'pad', 'reps', 'epochs', 'batch_size', 'opt', 'lr', 'weight_decay', 'lr_milestones',
                'lr_decay', 'ws_lr_scale', 'sleep_every', 'sleep_mode', 'sleep_optimizer', 'final_sleep', 'refresh_bn',
                'train_subset', 'ema', 'amp', 'seed')
        rows = '\n'.join(f'| {k} | {_fmt(config.get(k)) if config.get(k) not in (None, [], ()) else "default"} |'
                         for k in keys if k in config)
        if run_kwargs:
            rows = f'| model_kwargs | {_fmt_kwargs(run_kwargs)} |\n' + rows
        steps = result.get('steps')
        training_text = (
            'Trained with `bioconv train` (timm AdamW, multistep lr schedule, sleep hook after every N-th optimizer '
            'step); the run\'s config.json:\n\n| setting | value |\n|---|---|\n' + rows +
            (f'\n\n{steps} optimizer steps, {result.get("sleeps", 0)} sleeps.' if steps is not None else ''))
        if dataset == 'digits':
            training_text += ('\n\n**Data:** `digits` is scikit-learn\'s 1,797 real handwritten 8x8 digits, '
                              'enlarged 2x and pasted at a fixed random position on a 24x24 canvas (1,437 train / '
                              '360 test), embedded in the package (`bioconv_timm.train.data`).')
    else:
        training_text = ('Published from a bare weights file: the training data and hyperparameters were not '
                         'recorded with it.')

    # results
    top1 = source.get('top1')
    measured = f'{top1:.2f}%' if top1 is not None else 'not recorded'
    split = config.get('split', 'test')
    results_text = (f'| | top-1 |\n|---|---|\n| this checkpoint, {dataset or "?"} {split} set | {measured} |\n')
    # the paper's cells are the registered architectures; a run with model_kwargs is another network
    cell = None if run_kwargs else paper_cell_for(name, dataset, config.get('pad'), config.get('reps') or 1)
    if cell is not None:
        results_text += (f'| paper, Table {cell.table} ({cell.dataset}, pad {cell.pad}, "{cell.label}", mean of '
                         f'{cell.runs} runs) | {cell.paper_top1:.1f}% |\n')
    else:
        results_text += f'\nThe paper reports no number for {dataset or "this dataset"}'
        if run_kwargs:
            results_text += f' or for this architecture ({name} with {_fmt_kwargs(run_kwargs)})'
        elif arch == 'resnet20':
            label = label_for_model(name, config.get('reps') or 1)
            if label in TABLE1_TOP1:
                results_text += (f'; for context, the same cell ("{label}") on CIFAR10 with padding 4 reached '
                                 f'{TABLE1_TOP1[label]:.1f}% top-1 there (paper Table 1)')
        results_text += '. The two numbers are not comparable.\n'
    if result.get('best_top1') is not None and top1 is not None:
        results_text += f'\nBest top-1 during training: {float(result["best_top1"]):.2f}%.'
    epochs = config.get('epochs')
    if dataset == 'digits' or (epochs is not None and epochs < 50):
        budget_limitation = (f'A small demonstration run ({epochs} epochs on {dataset}), far from the paper\'s '
                             'budget (200 epochs on CIFAR/TinyImageNet): under-trained, do not read its accuracy '
                             'as a reproduction of the paper.')
    else:
        budget_limitation = 'One training run (one seed); the paper reports the mean of 5 runs.'

    fixed = getattr(model, 'fixed_input_size', False)
    return CARD_BODY_TEMPLATE.substitute(
        repo_id=repo_id, summary=summary, model=name, arch_text=arch_text, connectivity=connectivity,
        sleep_text=sleep_text, in_chans=in_chans, img_h=img_h, img_w=img_w, mean=_fmt(tuple(mean or ())),
        std=_fmt(tuple(std or ())), fixed_text=' (fixed: LC layers)' if fixed else '', num_classes=model.num_classes,
        labels_text=labels_text, params=f'{params / 1e6:.2f}M',
        usage_note=('`sleep_every` is a training-time setting (`model.sleep_every`); inference needs no sleep. '
                    'Fine-tune with `bioconv train`, or change the head with '
                    f"`timm.create_model('hf-hub:{repo_id}', pretrained=True, num_classes=N)`."),
        training_text=training_text, results_text=results_text.rstrip(), budget_limitation=budget_limitation,
        citation=CITATION, license_text=LICENSE_TEXT, reference_file=REFERENCE_FILE, atol=f'{DEFAULT_ATOL:g}',
        rtol=f'{DEFAULT_RTOL:g}')


# --- exporting and uploading -----------------------------------------------------------------

def _pretrained_tag(model_name: str, repo_id: str) -> Optional[str]:
    """'bioconv-timm/lc_resnet20_ws10.digits' -> 'digits' when that tag is registered for the model."""
    import timm
    repo_name = repo_id.rsplit('/', 1)[-1]
    if not repo_name.startswith(model_name + '.'):
        return None
    tag = repo_name[len(model_name) + 1:]
    return tag if f'{model_name}.{tag}' in timm.list_models(model_name + '.*', include_tags=True) else None


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
    from .run_folder import hold_run_folder
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
    repo_tag = _pretrained_tag(source['model'], repo_id)
    if repo_tag and source['tag'] and repo_tag != source['tag']:
        raise PublishError(f'--model {source["model"]}.{source["tag"]} and --repo-id {repo_id} name different tags; '
                           'publish the weights under the tag they were trained for.')
    if repo_tag and _run_model_kwargs(source):
        # a registered tag loads by name with the default architecture, which these weights do not fit
        raise PublishError(
            f'{repo_id} is the registered tag {source["model"]}.{repo_tag}, which loads as the default '
            f'{source["model"]}, but the run was trained with model_kwargs {_fmt_kwargs(_run_model_kwargs(source))}; '
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
