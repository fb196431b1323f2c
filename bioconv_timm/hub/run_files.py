"""A run folder's files as publishing reads them: config.json, result.json, metrics.csv and last.pth.

The files are user-editable text and everything publish reads from them goes onto the Hub, so each field is checked
by one table of rules (:func:`validate_run_config`, :func:`validate_run_result`), and what the run recorded twice
must agree (:func:`cross_check_run`). :func:`read_run_files` reads and checks a whole folder.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .datasets import HUB_DATASETS
from .errors import PublishError

__all__ = ['Rule', 'MODEL_KWARGS_REFUSED', 'MAX_IN_CHANS', 'MAX_NUM_CLASSES', 'CHECKPOINT_CROSS_FIELDS',
           'RESULT_CROSS_FIELDS', 'validate_run_config', 'validate_run_result', 'cross_check_run', 'read_run_files']


# --- reading a run ---------------------------------------------------------------------------

def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PublishError(f'{path} is not valid JSON ({exc}); was the run interrupted? '
                           'Re-run `bioconv train`.') from exc


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
    from ..models import MODEL_SPECS
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

    from ..settings import ConfigError, declared_fields
    from ..train.config import TrainConfig

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


def read_run_files(run_dir: Path) -> Tuple[Dict[str, Any], Dict[str, Any], Optional[Dict[str, str]], List[str]]:
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
