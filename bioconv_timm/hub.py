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

import csv
import json
import string
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._atomic import atomic_write_text
from .errors import UserRuntimeError
from .models import model_spec
from .paper import CITATION, PAPER_CELLS, TABLE1_TOP1, label_for_model
from .timm_models import TIMM_FAMILIES

__all__ = ['PublishError', 'PublishResult', 'read_source', 'split_model_tag', 'build_model', 'export_folder',
           'card_data', 'model_card', 'render_model_card', 'publish', 'paper_cell_for', 'UPLOAD_FILES',
           'LICENSE_TEXT', 'CARD_SECTIONS']

UPLOAD_FILES = ('model.safetensors', 'config.json', 'README.md')

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

# Readable dataset names for the model-index (the dataset ids are the run's `dataset`, as `bioconv train` spells it).
DATASET_NAMES = {'digits': 'digits (scikit-learn handwritten digits on a 24x24 canvas)',
                 'fashion-mnist': 'Fashion-MNIST', 'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100',
                 'tinyimagenet': 'Tiny ImageNet', 'imagenet': 'ImageNet-1k'}

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


def read_source(path: Union[str, Path], model_name: Optional[str] = None) -> Dict[str, Any]:
    """What a run folder (or bare .safetensors file) holds: model name, weights path, data settings, accuracy."""
    path = Path(path)
    if path.is_dir():
        weights = path / 'model.safetensors'
        if not weights.is_file():
            raise PublishError(
                f'{path} has no model.safetensors: publish a finished `bioconv train` run folder (the file is written '
                'at the end of training) or pass a .safetensors file with --model.')
        config = _read_json(path / 'config.json') or {}
        result = _read_json(path / 'result.json') or {}
        metrics = _last_metrics(path / 'metrics.csv')
    elif path.is_file():
        if path.suffix != '.safetensors':
            raise PublishError(
                f'{path}: only .safetensors weights are published (pickled .pth/.bin checkpoints are never loaded). '
                'Pass the run folder, or its model.safetensors.')
        weights = path
        # a run's own model.safetensors still has its run folder around it
        config = (_read_json(path.parent / 'config.json') or {}) if path.name == 'model.safetensors' else {}
        result = (_read_json(path.parent / 'result.json') or {}) if config else {}
        metrics = _last_metrics(path.parent / 'metrics.csv') if config else None
    else:
        raise PublishError(f'{path} does not exist: pass a `bioconv train` run folder or a .safetensors file.')

    name, tag = split_model_tag(model_name or config.get('model') or '')
    if not name:
        raise PublishError(f'{path}: no config.json names the model; pass --model NAME (one of `bioconv list`).')
    if config.get('model') and model_name and name != split_model_tag(config['model'])[0]:
        raise PublishError(f'--model {model_name} disagrees with the run ({path}), which trained {config["model"]}.')
    if not isinstance(config.get('model_kwargs') or {}, dict):
        raise PublishError(f'{path}: model_kwargs in config.json must be an object of timm.create_model arguments, '
                           f'got {config["model_kwargs"]!r}')
    top1, top5 = None, None
    final = result.get('final') or {}
    if final.get('top1') is not None:
        top1 = float(final['top1'])
        top5 = float(final['top5']) if final.get('top5') is not None else None
    elif metrics and metrics.get('eval_top1') not in (None, ''):
        top1 = float(metrics['eval_top1'])
        top5 = float(metrics['eval_top5']) if metrics.get('eval_top5') not in (None, '') else None
    return dict(path=str(path), weights=str(weights), model=name, tag=tag, config=config, result=result,
                metrics=metrics, top1=top1, top5=top5)


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


def build_model(source: Dict[str, Any], pretrained_tag: Optional[str] = None):
    """``timm.create_model`` the source's model and load its weights strictly (safetensors only).

    The model is built with the run's ``model_kwargs`` (e.g. ``layers=(1, 1, 1), stem_stride=2``) and its
    num_classes / in_chans / img_size; timm records them as the model's args, so ``save_for_hf`` writes them
    to config.json and an ``hf-hub:`` load rebuilds the same architecture. ``pretrained_tag`` (default: the
    tag of ``--model NAME.TAG``) supplies the input size and classes a bare weights file does not record.
    """
    import timm
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from . import models as _models  # noqa: F401  (registers the models)

    name = source['model']
    if not timm.models.is_model(name):
        raise PublishError(f'unknown model {name!r}; `bioconv list` prints the registered bioconv models.')
    kwargs = _model_kwargs(source)
    pretrained_tag = pretrained_tag or source.get('tag')
    full_name = f'{name}.{pretrained_tag}' if pretrained_tag else name
    try:
        model = timm.create_model(full_name, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise PublishError(f'cannot build {name} with {kwargs}: {exc}') from exc
    try:
        state = load_file(source['weights'], device='cpu')
    except (SafetensorError, OSError) as exc:
        raise PublishError(f"cannot read {source['weights']}: {exc}. The file is truncated or corrupt; "
                           'train again or copy it again.') from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
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
    return dataset.replace('_', '-') if dataset else None


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
    and top-5 as ``top_5_accuracy``, in %) when the run recorded a final top-1."""
    from huggingface_hub import EvalResult, ModelCardData

    config = source['config']
    spec = model_spec(source['model'])
    sleep_every = config.get('sleep_every') if config.get('sleep_every') is not None else spec.sleep_every
    dataset = _dataset_id(config.get('dataset'))
    eval_results = []
    top1, top5 = source.get('top1'), source.get('top5')
    if top1 is not None and dataset:
        common = dict(task_type='image-classification', task_name='Image Classification', dataset_type=dataset,
                      dataset_name=DATASET_NAMES.get(dataset, dataset), dataset_split=config.get('split', 'test'))
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
    if not spec.is_bioresnet:  # a converted timm CNN (bioconv_timm.timm_models)
        arch_text = (TIMM_FAMILIES[arch].description + f', at {img_h}x{img_w}'
                     + (f', built with {_fmt_kwargs(run_kwargs)}' if run_kwargs else ''))
    elif run_kwargs:  # another depth or stem than the registered name says: describe the network that was built
        arch_text = _describe_arch(model, name, run_kwargs)
    else:
        arch_text = dict(resnet20='CIFAR ResNet20: 3x3 stem, 3 stages of 3 BasicBlocks with 16/32/64 channels',
                         resnet18_half='ResNet18 at half width: 7x7/2 stem + max-pool, 2-2-2-2 BasicBlocks, '
                                       '32/64/128/256 channels')[arch]
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
        citation=CITATION, license_text=LICENSE_TEXT)


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
    """The folder to export into: new or empty, so nothing of the user's is overwritten or deleted."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PublishError(f'{out} is a file, not a folder: pass an empty or new folder to write the Hub files to.')
    if out.is_dir():
        present = sorted(p.name for p in out.iterdir())
        if present:
            shown = ', '.join(present[:5]) + (f' (+{len(present) - 5} more)' if len(present) > 5 else '')
            raise PublishError(f'{out} is not empty ({shown}): pass an empty or new folder; publish writes '
                               f'{", ".join(UPLOAD_FILES)} and never overwrites or deletes files.')
    return out


def export_folder(model, source: Dict[str, Any], repo_id: str, out_dir: Union[str, Path]) -> List[str]:
    """Write model.safetensors + config.json (``timm.models.save_for_hf``) and README.md into ``out_dir``.

    ``out_dir`` must be new or empty (a PublishError otherwise); returns the names of the files written.
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
    atomic_write_text(out / 'README.md', render_model_card(model, source, repo_id))
    written = sorted(p.name for p in out.iterdir())  # the folder was empty: everything in it is ours
    if written != sorted(UPLOAD_FILES):
        raise PublishError(f'exporting wrote {written} to {out}, expected {sorted(UPLOAD_FILES)}; '
                           'is this timm version supported?')
    return written


def publish(path: Union[str, Path], repo_id: str, *, model_name: Optional[str] = None,
            dry_run_dir: Optional[Union[str, Path]] = None, api: Any = None, private: bool = False,
            commit_message: Optional[str] = None, token: Optional[str] = None) -> PublishResult:
    """Export a run (or .safetensors file) as a timm Hub folder and upload it to ``repo_id``.

    ``dry_run_dir``: write the folder there (it must be new or empty: nothing is overwritten or deleted) and
    upload nothing. ``api``: an object with huggingface_hub's ``create_repo`` / ``upload_folder`` (default
    ``HfApi(token=token)``; the token then comes from HF_TOKEN or the saved login).
    """
    if repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise PublishError(f'--repo-id must be ORG/NAME (e.g. bioconv-timm/lc_resnet20_ws10.digits), got {repo_id!r}')
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(repo_id)  # the Hub's own rules, so that a dry run refuses what an upload would
    except HFValidationError as exc:
        raise PublishError(f'--repo-id {repo_id!r} is not a valid Hub repo id: {exc}') from exc
    if dry_run_dir is not None:
        _check_empty_folder(dry_run_dir)  # before the (slow) model build
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
    model = build_model(source, repo_tag or source['tag'])
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
