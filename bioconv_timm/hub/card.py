"""The model card (README.md) of a published model: huggingface_hub metadata over this package's Markdown body.

:func:`card_data` is the YAML metadata (license, tags, dataset, a ``model-index`` with the run's top-1 / top-5),
:func:`render_model_card` the whole card; :func:`render_run_card` renders a run's card from its config.json and
result.json alone, the model built on the meta device.
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from ..models import ModelSpec, model_spec
from ..paper import CITATION, PAPER_CELLS, TABLE1_TOP1, label_for_model
from ..verify import DEFAULT_ATOL, DEFAULT_RTOL, REFERENCE_FILE
from .datasets import HELD_OUT_SPLIT, HUB_DATASETS, dataset_id
from .errors import PublishError
from .run_files import read_run_files
from .source import create_source_model, repo_pretrained_tag, run_model_kwargs, source_from_files

__all__ = ['CARD_SECTIONS', 'CARD_BODY_TEMPLATE', 'LICENSE_TEXT', 'TRAINING_KEYS', 'paper_cell_for', 'format_kwargs',
           'card_data', 'model_card', 'render_model_card', 'render_run_card']

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

# This project's code and weights are MIT. The authors' repository is GPL-3.0 and none of its code is used;
# never word this so that MIT reads as the authors' license.
LICENSE_TEXT = ('MIT (this project\'s code and weights). `bioconv-timm` is an independent reimplementation; the '
                'authors\' code (https://github.com/romanpogodin/towards-bio-plausible-conv) is licensed separately '
                '(GPL-3.0) and is not part of this model.')



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


def format_kwargs(kwargs: Dict[str, Any]) -> str:
    """'layers=(1, 1, 1), stem_stride=2': timm.create_model arguments as a card (and a message) shows them."""
    return ', '.join(f'{k}={_fmt(v)}' for k, v in kwargs.items())


def _describe_arch(model, name: str, run_kwargs: Dict[str, Any]) -> str:
    """'ResNet-8, built as `lc_resnet20` with layers=(1, 1, 1), stem_stride=2: 3x3/2 stem, ...' (from the model)."""
    blocks = [len(getattr(model, n)) for n in model.stage_names]
    widths = [info['num_chs'] for info in model.feature_info[1:]]
    stem_stride = model.feature_info[0]['reduction']
    cifar_stem = not hasattr(model.maxpool, 'kernel_size')  # the 'cifar' stem has no max-pool
    stem = f'3x3/{stem_stride} stem' if cifar_stem else '7x7/2 stem + max-pool'
    return (f'ResNet-{2 * sum(blocks) + 2}, built as `{name}` with '
            f'{format_kwargs(run_kwargs)}: {stem}, {len(blocks)} stages of {"-".join(map(str, blocks))} BasicBlocks '
            f'with {"/".join(map(str, widths))} channels')


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
    dataset = dataset_id(config.get('dataset'))
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
    config, result, metrics, checked = read_run_files(run_dir)
    source = source_from_files(run_dir, None, None, config, result, metrics, checked)
    repo_tag = repo_pretrained_tag(source['model'], repo_id)
    model, _, _ = create_source_model(source, repo_tag or source['tag'], device='meta')
    return render_model_card(model, source, repo_id)


def _card_body(model, source: Dict[str, Any], repo_id: str) -> str:
    """The card's Markdown body (CARD_BODY_TEMPLATE, every section of CARD_SECTIONS)."""
    name, config = source['model'], source['config']
    spec = model_spec(name)
    cfg = model.pretrained_cfg
    in_chans, img_h, img_w = model.in_chans, *model.img_size
    mean = config.get('mean') or cfg.get('mean')
    std = config.get('std') or cfg.get('std')
    run_kwargs = run_model_kwargs(source)
    sleep_every = config.get('sleep_every') if config.get('sleep_every') is not None else spec.sleep_every
    label_names = config.get('label_names') or cfg.get('label_names')
    labels_text = f' ({", ".join(map(str, label_names))})' if label_names and len(label_names) <= 20 else ''
    params = sum(p.numel() for p in model.parameters())
    fixed = getattr(model, 'fixed_input_size', False)
    return CARD_BODY_TEMPLATE.substitute(
        repo_id=repo_id, summary=_summary(name, spec.layer_type, spec.stem_type, sleep_every, config), model=name,
        arch_text=_arch_text(model, name, spec, run_kwargs),
        connectivity=_connectivity(spec.layer_type, spec.stem_type),
        sleep_text=_sleep_text(spec.layer_type, sleep_every), in_chans=in_chans, img_h=img_h, img_w=img_w,
        mean=_fmt(tuple(mean or ())), std=_fmt(tuple(std or ())), fixed_text=' (fixed: LC layers)' if fixed else '',
        num_classes=model.num_classes, labels_text=labels_text, params=f'{params / 1e6:.2f}M',
        usage_note=('`sleep_every` is a training-time setting (`model.sleep_every`); inference needs no sleep. '
                    'Fine-tune with `bioconv train`, or change the head with '
                    f"`timm.create_model('hf-hub:{repo_id}', pretrained=True, num_classes=N)`."),
        training_text=_training_text(config, source['result'], run_kwargs),
        results_text=_results_text(source, spec.arch, run_kwargs),
        budget_limitation=_budget_limitation(config.get('dataset'), config.get('epochs')),
        citation=CITATION, license_text=LICENSE_TEXT, reference_file=REFERENCE_FILE, atol=f'{DEFAULT_ATOL:g}',
        rtol=f'{DEFAULT_RTOL:g}')


def _summary(name: str, layer: str, stem: str, sleep_every: Optional[int], config: Mapping[str, Any]) -> str:
    """The card's first sentence: '`lc_resnet20_ws10` (locally connected, sleep every 10 steps) trained on ...'."""
    short = dict(conv='convolutional', lc='locally connected')[layer] + (', conv stem' if stem != layer else '')
    return (f'`{name}` ({short}' + (f', sleep every {sleep_every} steps' if sleep_every and layer != 'conv' else '')
            + f') trained on {config.get("dataset") or "an unrecorded dataset"}'
            + (f' for {config.get("epochs")} epochs' if config.get('epochs') else '') + '.')


def _arch_text(model, name: str, spec: ModelSpec, run_kwargs: Dict[str, Any]) -> str:
    """The architecture line: the registry's description of ``name``, or the network actually built when the run
    changed it."""
    if not spec.is_bioresnet:  # a converted timm CNN (bioconv_timm.models.timm_cnns)
        img_h, img_w = model.img_size
        return (spec.description + f', at {img_h}x{img_w}'
                + (f', built with {format_kwargs(run_kwargs)}' if run_kwargs else ''))
    if run_kwargs:  # another depth or stem than the registered name says: describe the network that was built
        return _describe_arch(model, name, run_kwargs)
    return spec.description  # the registry's (bioconv_timm.models.registry)


def _connectivity(layer: str, stem: str) -> str:
    if layer == 'conv':
        return 'convolutional (the weight-sharing baseline)'
    if stem == 'conv':
        return 'locally connected except a convolutional stem (paper Table 13, "LC + 1st layer conv")'
    return ('locally connected: every convolution (stem and 1x1 shortcuts included) has an '
            'independent kernel at every output location')


def _sleep_text(layer: str, sleep_every: Optional[int]) -> str:
    if layer == 'conv':
        return 'none (convolutional)'
    if sleep_every:
        return (f'a sleep phase (instant weight sharing: every LC layer set to its k x k grid means) after '
                f'every {sleep_every} optimizer step{"s" if sleep_every != 1 else ""}')
    return 'none (plain LC, no weight sharing)'


# the config.json settings the Training section lists, in this order
TRAINING_KEYS = ('dataset', 'split', 'pad', 'reps', 'epochs', 'batch_size', 'opt', 'lr', 'weight_decay',
                 'lr_milestones', 'lr_decay', 'ws_lr_scale', 'sleep_every', 'sleep_mode', 'sleep_optimizer',
                 'final_sleep', 'refresh_bn', 'train_subset', 'ema', 'amp', 'seed')


def _training_text(config: Mapping[str, Any], result: Mapping[str, Any], run_kwargs: Dict[str, Any]) -> str:
    """The Training section: the run's settings as a table, its steps and sleeps; or why there are none."""
    if not config:
        return ('Published from a bare weights file: the training data and hyperparameters were not '
                'recorded with it.')
    rows = '\n'.join(f'| {k} | {_fmt(config.get(k)) if config.get(k) not in (None, [], ()) else "default"} |'
                     for k in TRAINING_KEYS if k in config)
    if run_kwargs:
        rows = f'| model_kwargs | {format_kwargs(run_kwargs)} |\n' + rows
    steps = result.get('steps')
    text = ('Trained with `bioconv train` (timm AdamW, multistep lr schedule, sleep hook after every N-th optimizer '
            'step); the run\'s config.json:\n\n| setting | value |\n|---|---|\n' + rows +
            (f'\n\n{steps} optimizer steps, {result.get("sleeps", 0)} sleeps.' if steps is not None else ''))
    if config.get('dataset') == 'digits':
        text += ('\n\n**Data:** `digits` is scikit-learn\'s 1,797 real handwritten 8x8 digits, '
                 'enlarged 2x and pasted at a fixed random position on a 24x24 canvas (1,437 train / '
                 '360 test), embedded in the package (`bioconv_timm.train.data`).')
    return text


def _results_text(source: Dict[str, Any], arch: str, run_kwargs: Dict[str, Any]) -> str:
    """The Results section: this checkpoint's top-1 beside the paper's number for the same cell, if it has one."""
    name, config, result = source['model'], source['config'], source['result']
    dataset = config.get('dataset')
    top1 = source.get('top1')
    measured = f'{top1:.2f}%' if top1 is not None else 'not recorded'
    text = (f'| | top-1 |\n|---|---|\n| this checkpoint, {dataset or "?"} {config.get("split", "test")} set | '
            f'{measured} |\n')
    # the paper's cells are the registered architectures; a run with model_kwargs is another network
    cell = None if run_kwargs else paper_cell_for(name, dataset, config.get('pad'), config.get('reps') or 1)
    if cell is not None:
        text += (f'| paper, Table {cell.table} ({cell.dataset}, pad {cell.pad}, "{cell.label}", mean of '
                 f'{cell.runs} runs) | {cell.paper_top1:.1f}% |\n')
    else:
        text += _no_paper_number(name, arch, dataset, config.get('reps') or 1, run_kwargs)
    if result.get('best_top1') is not None and top1 is not None:
        text += f'\nBest top-1 during training: {float(result["best_top1"]):.2f}%.'
    return text.rstrip()


def _no_paper_number(name: str, arch: str, dataset: Optional[str], reps: int, run_kwargs: Dict[str, Any]) -> str:
    """Why the paper has no number to compare with, and the nearest one it has for context (ResNet20 cells)."""
    text = f'\nThe paper reports no number for {dataset or "this dataset"}'
    if run_kwargs:
        text += f' or for this architecture ({name} with {format_kwargs(run_kwargs)})'
    elif arch == 'resnet20':
        label = label_for_model(name, reps)
        if label in TABLE1_TOP1:
            text += (f'; for context, the same cell ("{label}") on CIFAR10 with padding 4 reached '
                     f'{TABLE1_TOP1[label]:.1f}% top-1 there (paper Table 1)')
    return text + '. The two numbers are not comparable.\n'


def _budget_limitation(dataset: Optional[str], epochs: Optional[int]) -> str:
    """The first Limitations item: how far this run's training budget is from the paper's."""
    if dataset == 'digits' or (epochs is not None and epochs < 50):
        return (f'A small demonstration run ({epochs} epochs on {dataset}), far from the paper\'s '
                'budget (200 epochs on CIFAR/TinyImageNet): under-trained, do not read its accuracy '
                'as a reproduction of the paper.')
    return 'One training run (one seed); the paper reports the mean of 5 runs.'
