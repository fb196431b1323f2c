"""Local scoring on Brain-Score's public benchmarks: :func:`score` (one model, a Table-3-shaped result) and
:func:`layer_scores` (every candidate layer of a region, as brainscore_vision's layer selection scores them)."""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import data
from .benchmarks import BENCHMARKS, REGIONS
from .commitment import VISUAL_DEGREES, require_brainscore, activations_model, model_commitment
from .data import check_data
from .errors import BrainScoreError
from .naming import check_model_name, candidate_layers, plugin_identifier
from .region_layers import load_region_layer_map
from .results import ScoreResult, write_score

__all__ = ['score', 'layer_scores']

PathLike = Union[str, 'os.PathLike[str]']


def _parse_benchmarks(benchmarks: Union[str, Sequence[str]]) -> List[str]:
    """Table 3 columns (in Table 3 order) from columns or benchmark identifiers, a list or comma-separated."""
    items = [b.strip() for b in (benchmarks.split(',') if isinstance(benchmarks, str) else benchmarks) if b.strip()]
    lookup = {k.lower(): k for k in BENCHMARKS}
    lookup.update({v.lower(): k for k, v in BENCHMARKS.items()})
    keys = []
    for item in items:
        key = lookup.get(item.lower())
        if key is None:
            raise BrainScoreError(f'unknown benchmark {item!r}; choose from {",".join(BENCHMARKS)} '
                                  f'(or their identifiers: {", ".join(BENCHMARKS.values())})')
        if key not in keys:
            keys.append(key)
    if not keys:
        raise BrainScoreError('no benchmarks given')
    return [k for k in BENCHMARKS if k in keys]  # Table 3 order


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _check_weights(weights: Optional[PathLike]) -> Optional[Path]:
    """The weights file as a Path (None for none); it must exist and be a .safetensors file."""
    if weights is None:
        return None
    path = Path(weights)
    if not path.is_file():
        raise BrainScoreError(f'weights file {path} does not exist')
    if path.suffix != '.safetensors':
        raise BrainScoreError(f'weights must be a .safetensors file (a `bioconv train` run writes model.safetensors); '
                              f'got {path.name}')
    return path


def _warn(text: str) -> None:
    """Print ``text`` to stderr between two bars of '!', where it cannot be missed."""
    bar = '!' * 100
    print(f'{bar}\n{text}\n{bar}', file=sys.stderr, flush=True)


def score(model_name: str, weights: Optional[PathLike] = None,
          benchmarks: Union[str, Sequence[str]] = tuple(BENCHMARKS), output_dir: Optional[PathLike] = 'runs/brainscore',
          seed: int = 0, region_layer_map: Union[None, PathLike, Mapping[str, str]] = None, batch_size: int = 64,
          download: bool = False, progress: bool = True) -> ScoreResult:
    """Score a bioconv model on Brain-Score's public benchmarks locally and write a Table-3-shaped table.

    Args:
        model_name: a registered model, e.g. 'lc_resnet18_half_ws10'.
        weights: a ``.safetensors`` file (e.g. ``runs/<run>/model.safetensors``); None scores a random-init
            model (seeded by ``seed``) and warns loudly: such scores say nothing about the paper's claim.
        benchmarks: Table 3 columns ('V1', 'V2', 'V4', 'IT', 'behavior'; comma-separated or a list) or their
            benchmark identifiers.
        output_dir: where ``brainscore-<model>.json`` and ``.md`` go (None: write nothing).
        region_layer_map: {region: layer} or a JSON file (a previous run's JSON or ``region_layer_map/<id>.json``
            works); the regions it names keep their layer. Every other scored region gets its layer chosen as
            brainscore_vision chooses it (:func:`layer_scores`: each candidate layer scored on that region's public
            benchmark, the best kept), and all those per-layer scores are recorded.
        download: let brainscore_vision download missing data (needs a network); default: stop before any work
            with a ``MissingBenchmarkData`` naming the files missing from ``BRAINIO_HOME`` (and the ImageNet file
            the layer selection reads, when a layer is to be chosen).

    Checks the extra, the data and the weights file before building the model (a ResNet18-half LC model
    holds 483M parameters), so a missing piece fails in seconds. Writes (``output_dir``):
    ``brainscore-<model>-<weights>.json`` (scores, raw scores, ceilings, region -> layer, every layer's score),
    ``.md`` (Table-3-shaped table and the per-layer table), ``-layers.csv`` (region, depth, layer, score, chosen),
    ``-layers.png`` (score against depth, one line per region) and, for trained weights,
    ``brainscore-<model>-<weights>/region_layer_map/<identifier>.json`` (the plugin folder's format).
    """
    check_model_name(model_name)
    keys = _parse_benchmarks(benchmarks)
    require_brainscore()
    given = load_region_layer_map(region_layer_map, None) or {}
    to_choose = [k for k in keys if k in REGIONS and k not in given]
    if not download:
        check_data(keys, selection=to_choose)
    weights_path = _check_weights(weights)
    layers = candidate_layers(model_name)
    mapping = load_region_layer_map(given or None, layers) or {}
    os.environ.setdefault('BS_INSTALL_DEPENDENCIES', 'no')  # the extra installed what the metrics need; never pip

    weights_sha1 = _sha1(weights_path) if weights_path else None
    identifier = _model_identifier(model_name, weights_sha1, seed)
    if weights_path is None:
        _warn(f'WARNING: no --weights given: scoring a RANDOMLY INITIALIZED {model_name} (seed {seed}).\n'
              'These numbers describe an untrained network and cannot be compared with the paper\'s Table 3. '
              'Pass --weights model.safetensors (e.g. from `bioconv train`) to score a trained model.')
    wrapper = activations_model(_create_model(model_name, weights_path, seed), identifier, batch_size=batch_size)

    import brainscore_vision

    result = ScoreResult(model=model_name, identifier=identifier, weights=str(weights_path) if weights_path else None,
                         weights_sha1=weights_sha1, random_init=weights_path is None, seed=seed,
                         benchmarks={k: BENCHMARKS[k] for k in keys}, scores={},
                         layer_choice={r: 'given' for r in REGIONS if r in mapping},
                         brainscore_vision_version=_version('brainscore-vision'))
    loaded = {key: brainscore_vision.load_benchmark(BENCHMARKS[key]) for key in keys}
    for region in to_choose:
        mapping[region] = _choose_layer(result, wrapper, layers, loaded[region], region, progress)
    commitment = model_commitment(identifier, wrapper, layers, {r: mapping[r] for r in REGIONS if r in mapping},
                                  readout_layer=layers[-1])
    for key in keys:
        _score_benchmark(result, key, loaded[key], commitment, progress)
    # the given regions (scored or not) and the chosen ones: runs on a few regions at a time add up to a full map
    result.region_layer_map = {r: mapping[r] for r in REGIONS if r in mapping}
    if output_dir is not None:
        result.files = write_score(result, Path(output_dir))
    return result


def _model_identifier(model_name: str, weights_sha1: Optional[str], seed: int) -> str:
    """The name brainscore_vision caches activations under: the weights' content, or the seed of a random init."""
    if weights_sha1 is None:
        return f'{plugin_identifier(model_name)}-randominit-seed{seed}'
    return f'{plugin_identifier(model_name)}-weights{weights_sha1[:12]}'  # activation caches keyed on content


def _create_model(model_name: str, weights_path: Optional[Path], seed: int) -> Any:
    """``timm.create_model`` with the weights file loaded (seeded first, so a random init is reproducible)."""
    import timm
    import torch

    torch.manual_seed(seed)
    kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights_path))) if weights_path else {}
    try:
        return timm.create_model(model_name, **kwargs)
    except RuntimeError as exc:
        if weights_path is None:
            raise
        raise BrainScoreError(f'cannot load {weights_path} into {model_name}: {exc}') from exc


def _choose_layer(result: ScoreResult, wrapper: Any, layers: Sequence[str], benchmark: Any, region: str,
                  progress: bool) -> str:
    """The layer of ``region``, as brainscore_vision chooses it (the best of :func:`layer_scores`); every layer's
    score and the time taken are recorded in ``result``."""
    start = time.time()
    if progress:
        print(f'[{region}] choosing a layer: {len(layers)} candidate layers on {BENCHMARKS[region]} ...',
              file=sys.stderr, flush=True)
    per_layer = layer_scores(wrapper, layers, benchmark, region)
    result.layer_scores[region] = per_layer
    chosen = max(per_layer, key=per_layer.__getitem__)  # the first best, in depth order
    result.layer_choice[region] = 'chosen'
    result.seconds[f'{region} layers'] = round(time.time() - start, 1)
    if progress:
        print(f'[{region}] ' + ', '.join(f'{layer} {v:.3f}' for layer, v in per_layer.items())
              + f' -> {chosen}', file=sys.stderr, flush=True)
    return chosen


def _score_benchmark(result: ScoreResult, key: str, benchmark: Any, commitment: Any, progress: bool) -> None:
    """Score ``commitment`` on one Table 3 column's benchmark; its score, raw score, ceiling and time go into
    ``result``."""
    from brainscore_core.benchmarks import score_benchmark

    start = time.time()
    if progress:
        print(f'[{key}] {BENCHMARKS[key]} ...', file=sys.stderr, flush=True)
    value = score_benchmark(benchmark, commitment)
    result.scores[key] = float(value.values)
    result.raw[key] = _attr_float(value, 'raw')
    result.ceilings[key] = _attr_float(value, 'ceiling')
    result.seconds[key] = round(time.time() - start, 1)
    if progress:
        print(f'[{key}] score {result.scores[key]:.3f} ({result.seconds[key]:.0f} s)', file=sys.stderr, flush=True)


def layer_scores(wrapper: Any, layers: Sequence[str], benchmark: Any, region: str) -> Dict[str, float]:
    """{layer: score} of every candidate layer on a region's benchmark, in ``layers`` (depth) order.

    These are the numbers brainscore_vision's layer selection (``LayerSelection``) ranks and then throws away:
    each layer alone is committed to the region and scored on the benchmark, its activations reduced to their
    first ``SELECTION_PCA_COMPONENTS`` principal components on ImageNet validation images (brainscore_vision's
    ``LayerPCA``, which reads :func:`imagenet_pca_file`). The best layer is the one Brain-Score would commit;
    its final score (``score``) uses the full activations, so it can differ from its entry here.
    """
    from brainscore_vision.model_helpers.activations.pca import LayerPCA
    from brainscore_vision.model_helpers.brain_transformation.neural import LayerScores

    components = data.SELECTION_PCA_COMPONENTS
    suffix = f'-pca_{components}'
    identifier = wrapper.identifier
    handle = LayerPCA.hook(wrapper, n_components=components)
    wrapper.identifier = identifier + suffix  # cached activations of the reduced model under their own name
    try:
        scoring = LayerScores(model_identifier=identifier + suffix, activations_model=wrapper,
                              visual_degrees=VISUAL_DEGREES)
        scores = scoring(benchmark=benchmark, layers=list(layers), benchmark_identifier=region, prerun=True)
    finally:
        handle.remove()
        wrapper.identifier = identifier
    return {str(layer): float(scores.sel(layer=layer).values) for layer in layers}


def _attr_float(score_value: Any, attr: str) -> Optional[float]:
    """A scalar attribute of a brainscore Score ('raw', 'ceiling') as float; None if absent or not scalar."""
    try:
        return float(getattr(score_value, 'attrs', {})[attr])
    except (KeyError, TypeError, ValueError):
        return None


def _version(dist: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None

