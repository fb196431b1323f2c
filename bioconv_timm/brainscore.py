"""Brain-Score (``brainscore_vision`` 2.4) for the bioconv models: plugin folders, local scoring, submission zips.

Paper section 5.4 / Table 3 scored the ImageNet-trained 0.5x ResNet18s (conv, LC, LC with weight sharing every
1, 10 and 100 batches) on brain-score.org: V1, V2, V4, IT and behavior, and their average. This module gives:

* ``plugin_files(model_name)`` -- the one template of a submission-ready ``brainscore_vision`` model plugin
  (``__init__.py`` registering ``model_registry['bioconv_<model>']``, ``model.py`` with ``get_model`` /
  ``get_layers`` built on ``timm.create_model``, ``test.py``, ``requirements.txt``, and
  ``region_layer_map/<id>.json`` only when a mapping is given). ``write_plugins()`` writes the committed
  ``brainscore_plugin/`` folder from it (``bioconv brainscore plugins``), so the folders cannot drift.
* ``score(model_name, weights=...)`` -- builds brainscore_vision's ``ModelCommitment`` around a timm model and
  runs the public benchmarks (``BENCHMARKS``) on data already in ``BRAINIO_HOME``; before anything expensive it
  checks that every data file is there (``missing_benchmark_data``, and the ImageNet file of the layer
  selection) and stops with a message naming the missing ones. Without weights it scores a random-init model
  and says so loudly. Each region's layer is chosen the way brainscore_vision chooses it, and every candidate
  layer's score is kept: the output holds a per-layer table (JSON, CSV, Markdown), a plot of score against
  depth per region (PNG) and ``region_layer_map/<identifier>.json`` in the plugin folder format.
* ``build_submission(...)`` / ``check_submission_zip(...)`` -- the zip brain-score.org accepts: one root
  folder holding ``models/<identifier>/`` with ``__init__.py`` and ``test.py`` (explicit directory entries,
  as the website's upload check reads them), at most 50 MB, no weight files (weights are downloaded from the
  Hugging Face Hub by ``model.py``).

Nothing here imports ``brainscore_vision`` at module import time: the package works without the
``[brainscore]`` extra, and the functions that need it say how to install it.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import re
import stat
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .paper import CITATION

__all__ = [
    'PLUGIN_MODELS', 'BENCHMARKS', 'TABLE_COLUMNS', 'PAPER_TABLE3', 'VISUAL_DEGREES', 'BEHAVIORAL_READOUT_LAYER',
    'MAX_SUBMISSION_BYTES', 'INSTALL_HINT', 'BrainScoreError', 'MissingBenchmarkData', 'SubmissionError',
    'plugin_identifier', 'model_name_from_identifier', 'candidate_layers', 'activations_model', 'model_commitment',
    'DataFile', 'benchmark_data_files', 'missing_benchmark_data', 'brainio_home', 'imagenet_pca_file',
    'SELECTION_PCA_COMPONENTS', 'ScoreResult', 'score', 'layer_scores', 'format_score_table',
    'format_layer_table', 'plot_layer_scores', 'region_layer_map_path', 'committed_region_layer_map',
    'plugin_files', 'write_plugins',
    'build_submission', 'check_submission_zip',
]

PathLike = Union[str, 'os.PathLike[str]']

# The five models of the paper's Table 3, one plugin folder each.
PLUGIN_MODELS: Tuple[str, ...] = (
    'conv_resnet18_half', 'lc_resnet18_half', 'lc_resnet18_half_ws1', 'lc_resnet18_half_ws10',
    'lc_resnet18_half_ws100')
IDENTIFIER_PREFIX = 'bioconv_'

# Table 3's columns and the public benchmark that stands in for each locally (brain-score.org used the private
# halves of the same data sets: FreemanZiemba2013 V1/V2, MajajHong2015 V4/IT, Rajalingham2018 behavior).
BENCHMARKS: Dict[str, str] = {
    'V1': 'FreemanZiemba2013public.V1-pls',
    'V2': 'FreemanZiemba2013public.V2-pls',
    'V4': 'MajajHong2015public.V4-pls',
    'IT': 'MajajHong2015public.IT-pls',
    'behavior': 'Rajalingham2018public-i2n',
}
REGIONS: Tuple[str, ...] = ('V1', 'V2', 'V4', 'IT')
TABLE_COLUMNS: Tuple[str, ...] = ('average', 'V1', 'V2', 'V4', 'IT', 'behavior')

# Paper Table 3 (brain-score.org, private data, at submission time): average, V1, V2, V4, IT, behavior.
PAPER_TABLE3: Dict[str, Dict[str, Any]] = {
    'conv_resnet18_half': dict(label='conv', scores=(.357, .493, .313, .459, .370, .148), link='brain-score.org/model/876'),
    'lc_resnet18_half': dict(label='LC', scores=(.349, .542, .291, .448, .354, .108), link='brain-score.org/model/877'),
    'lc_resnet18_half_ws1': dict(label='LC, ws 1', scores=(.396, .512, .339, .468, .406, .255),
                                 link='brain-score.org/model/880'),
    'lc_resnet18_half_ws10': dict(label='LC, ws 10', scores=(.385, .508, .322, .478, .399, .216),
                                  link='brain-score.org/model/878'),
    'lc_resnet18_half_ws100': dict(label='LC, ws 100', scores=(.351, .523, .293, .467, .370, .101),
                                   link='brain-score.org/model/879'),
}

VISUAL_DEGREES = 8  # brainscore_vision's default for ModelCommitment: the model's field of view
BEHAVIORAL_READOUT_LAYER = 'global_pool'  # the average pool, as in the paper's ResNets ("avgpool")
MAX_SUBMISSION_BYTES = 50 * 1000 * 1000  # brain-score.org's upload limit (50 MB)
WEIGHT_SUFFIXES = ('.safetensors', '.pth', '.pt', '.ckpt', '.bin', '.h5', '.hdf5', '.npz', '.npy', '.pkl',
                   '.pickle', '.onnx', '.tar', '.mat')
MAX_PLUGIN_FILE_BYTES = 1_000_000  # no code file of a plugin is this big; a bigger file is data or weights
INSTALL_HINT = 'pip install "bioconv-timm[brainscore]"  (from a checkout: pip install -e ".[brainscore]")'
DEFAULT_REQUIREMENT = 'bioconv-timm>=0.1.0'

BIBTEX = CITATION  # the paper's BibTeX, one copy for the Hub model cards and the plugins


class BrainScoreError(RuntimeError):
    """A problem the user can fix (missing extra, missing data, bad arguments); the CLI prints it in one block."""


class MissingBenchmarkData(BrainScoreError):
    """Benchmark data files are not in BRAINIO_HOME, or the layer selection's ImageNet file is missing (raised
    before any model is built)."""

    def __init__(self, message: str, missing: Sequence['DataFile'], missing_selection: Optional[Path] = None) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.missing_selection = missing_selection  # the ImageNet file of the layer selection, if it is missing


class SubmissionError(BrainScoreError):
    """A submission zip breaks one of brain-score.org's rules (``problems`` lists each)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


# --- names and layers --------------------------------------------------------------------------

def plugin_identifier(model_name: str) -> str:
    """'lc_resnet18_half_ws10' -> 'bioconv_lc_resnet18_half_ws10' (Brain-Score identifiers have no hyphens)."""
    _check_model_name(model_name)
    return IDENTIFIER_PREFIX + model_name


def model_name_from_identifier(identifier: str) -> str:
    if not identifier.startswith(IDENTIFIER_PREFIX):
        raise BrainScoreError(f'{identifier!r} is not a bioconv Brain-Score identifier ({IDENTIFIER_PREFIX}<model>)')
    name = identifier[len(IDENTIFIER_PREFIX):]
    _check_model_name(name)
    return name


def _check_model_name(model_name: str) -> None:
    from .models import MODEL_NAMES
    if model_name not in MODEL_NAMES:
        raise BrainScoreError(f'unknown model {model_name!r}; registered models: {", ".join(MODEL_NAMES)}')


def candidate_layers(model_or_name: Any) -> List[str]:
    """Layers Brain-Score may commit to a region: the stem output, every residual block's output, the avgpool.

    The stem output is the max-pool of the ImageNet stem (the ReLU ``act1`` for the CIFAR stem); a block's
    output (``layer2.1``) is its final ReLU; ``global_pool`` is the average pool that also serves as the
    behavioral readout. Accepts a model or a registered name (built on the meta device: no memory).
    """
    model = model_or_name
    if isinstance(model_or_name, str):
        import timm
        import torch
        _check_model_name(model_or_name)
        with torch.device('meta'):
            model = timm.create_model(model_or_name)
    import torch.nn as nn
    stem = 'act1' if isinstance(getattr(model, 'maxpool', None), (nn.Identity, type(None))) else 'maxpool'
    layers = [stem]
    for stage in model.stage_names:
        layers.extend(f'{stage}.{i}' for i in range(len(getattr(model, stage))))
    layers.append(BEHAVIORAL_READOUT_LAYER)
    return layers


# --- brainscore_vision wrappers ------------------------------------------------------------------

def _require_brainscore() -> None:
    if importlib.util.find_spec('brainscore_vision') is None:
        raise BrainScoreError(f'brainscore_vision is not installed. Install the Brain-Score extra: {INSTALL_HINT}')


@functools.lru_cache(maxsize=None)
def _wrapper_class() -> type:
    """PytorchWrapper whose 'logits' layer is the classifier.

    brainscore_vision finds 'logits' by walking to the last registered submodule; in BioResNet that is
    ``head_drop`` (applied before ``fc``), which would hand back the pooled features instead of the logits.
    """
    from brainscore_vision.model_helpers.activations.pytorch import PytorchWrapper

    class BioconvPytorchWrapper(PytorchWrapper):
        def _output_layer(self):  # noqa: D401 - brainscore_vision's hook name
            return self._model.get_classifier()

    return BioconvPytorchWrapper


def activations_model(model: Any, identifier: str, batch_size: int = 64) -> Any:
    """brainscore_vision ``PytorchWrapper`` around a bioconv timm model, preprocessing from its pretrained cfg.

    Images are resized to the cfg's input size (224 for the ResNet18-half family, 32 for ResNet20) and
    normalized with its mean/std (ImageNet / CIFAR-10), as brainscore_vision's ``load_preprocess_images`` does.
    """
    _require_brainscore()
    from brainscore_vision.model_helpers.activations.pytorch import load_preprocess_images

    cfg = model.pretrained_cfg
    _, height, width = cfg['input_size']
    if height != width:
        raise BrainScoreError(f'brainscore_vision preprocessing needs a square input, the model has {height}x{width}')
    preprocessing = functools.partial(load_preprocess_images, image_size=height,
                                      normalize_mean=tuple(cfg['mean']), normalize_std=tuple(cfg['std']))
    wrapper = _wrapper_class()(identifier=identifier, model=model.eval(), preprocessing=preprocessing,
                               batch_size=batch_size)
    wrapper.image_size = height
    return wrapper


def model_commitment(identifier: str, wrapper: Any, layers: Sequence[str],
                     region_layer_map: Optional[Mapping[str, str]] = None) -> Any:
    """brainscore_vision ``ModelCommitment``: regions -> layers (given, or chosen on the public benchmarks),
    ``global_pool`` as behavioral readout, 8 degrees of visual field."""
    _require_brainscore()
    from brainscore_vision.model_helpers.brain_transformation import ModelCommitment
    return ModelCommitment(identifier=identifier, activations_model=wrapper, layers=list(layers),
                           behavioral_readout_layer=BEHAVIORAL_READOUT_LAYER,
                           region_layer_map=dict(region_layer_map) if region_layer_map else None,
                           visual_degrees=VISUAL_DEGREES)


# --- benchmark data in BRAINIO_HOME ----------------------------------------------------------------

@dataclass(frozen=True)
class DataFile:
    """One file brainscore_vision reads from ``BRAINIO_HOME/<sha1>/<filename>`` (downloaded there from S3)."""
    kind: str        # 'assembly' or 'stimulus set'
    name: str        # brainscore_vision registry name, e.g. 'MajajHong2015.public' or 'hvm-public'
    filename: str    # e.g. 'assy_dicarlo_MajajHong2015_public.nc'
    sha1: str

    def path(self, home: Optional[PathLike] = None) -> Path:
        return Path(home if home is not None else brainio_home()) / self.sha1 / self.filename


# From brainscore_vision 2.4.2's data plugins (data/freemanziemba2013, data/majajhong2015,
# data/rajalingham2018); tests/test_brainscore.py checks them against the installed brainscore_vision.
_STIMULUS_SETS: Dict[str, Tuple[str, str]] = {  # registry name -> (csv sha1, zip sha1)
    'FreemanZiemba2013.aperture-public': ('194c9b301a4e3e9cff02481d4c19b39331d52660',
                                          '3a6fec1fc28c212882d6833e267ea8654d289611'),
    'hvm-public': ('5ca7a3da00d8e9c694a9cd725df5ba0ad6d735af', '8aa44e038d7b551efa8077467622f9d48d72e473'),
    'objectome.public': ('47884e17106a3be471d6481279cab33889b80850', '064f2955f98e63867755fee2e3ead8cddf6bfab8'),
}
_ASSEMBLIES: Dict[str, Tuple[str, str, str]] = {  # registry name -> (S3 identifier, sha1, stimulus set)
    'FreemanZiemba2013.public': ('movshon.FreemanZiemba2013.public', '761c08f796db4e342555cdb60eef23a4f19ead43',
                                 'FreemanZiemba2013.aperture-public'),
    'MajajHong2015.public': ('dicarlo.MajajHong2015.public', '13d28ca0ce88ee550b54db3004374ae19096e9b9',
                             'hvm-public'),
    'Rajalingham2018.public': ('dicarlo.Rajalingham2018.public', '34c6a8b6f7c523589c1861e4123232e5f7c7df4c',
                               'objectome.public'),
}
BENCHMARK_DATASETS: Dict[str, str] = {  # Table 3 column -> assembly its public benchmark loads
    'V1': 'FreemanZiemba2013.public', 'V2': 'FreemanZiemba2013.public',
    'V4': 'MajajHong2015.public', 'IT': 'MajajHong2015.public',
    'behavior': 'Rajalingham2018.public',  # its fitting stimuli are the same objectome.public set
}


def _stimulus_set_files(name: str) -> List[DataFile]:
    csv_sha1, zip_sha1 = _STIMULUS_SETS[name]
    stem = 'stimulus_' + name.replace('.', '_')
    return [DataFile('stimulus set', name, f'{stem}.csv', csv_sha1), DataFile('stimulus set', name, f'{stem}.zip', zip_sha1)]


def _assembly_files(name: str) -> List[DataFile]:
    s3_identifier, sha1, stimulus_set = _ASSEMBLIES[name]
    return [DataFile('assembly', name, 'assy_' + s3_identifier.replace('.', '_') + '.nc', sha1)] \
        + _stimulus_set_files(stimulus_set)


def benchmark_data_files(key: str) -> List[DataFile]:
    """The files the public benchmark of a Table 3 column ('V1', ..., 'behavior') reads.

    The region benchmarks also choose the model's layer for their region from the same data (when no
    region-layer map is given), so they need nothing else.
    """
    if key not in BENCHMARKS:
        raise BrainScoreError(f'unknown benchmark {key!r}; choose from {", ".join(BENCHMARKS)}')
    return _assembly_files(BENCHMARK_DATASETS[key])


def brainio_home() -> Path:
    """Where brainscore_vision keeps downloaded data: ``$BRAINIO_HOME``, default ``~/.brainio``."""
    return Path(os.path.expanduser(os.environ.get('BRAINIO_HOME', '~/.brainio')))


def missing_benchmark_data(keys: Iterable[str], home: Optional[PathLike] = None) -> Dict[str, List[DataFile]]:
    """{column: [files not in BRAINIO_HOME]} for the given Table 3 columns; empty if everything is there."""
    home = Path(home) if home is not None else brainio_home()
    missing = {}
    for key in keys:
        files = [f for f in benchmark_data_files(key) if not f.path(home).is_file()]
        if files:
            missing[key] = files
    return missing


# brainscore_vision chooses a region's layer on PCA-reduced activations: per layer, the principal components of
# its responses to 1000 ImageNet validation images (model_helpers/activations/pca.py), read from one HDF5 file.
SELECTION_PCA_COMPONENTS = 1000


def imagenet_pca_file() -> Path:
    """The ImageNet validation file brainscore_vision's layer selection reads: ``$MT_IMAGENET_PATH``, default
    ``$MT_HOME/imagenet2012.hdf5`` (``MT_HOME`` default ``~/.model-tools``); it downloads it there when missing."""
    home = os.path.expanduser(os.environ.get('MT_HOME', '~/.model-tools'))
    return Path(os.path.expanduser(os.environ.get('MT_IMAGENET_PATH', os.path.join(home, 'imagenet2012.hdf5'))))


def _missing_data_message(missing: Mapping[str, List[DataFile]], home: Path,
                          selection: Sequence[str] = (), selection_file: Optional[Path] = None) -> str:
    by_file: Dict[DataFile, List[str]] = {}
    for key, files in missing.items():
        for f in files:
            by_file.setdefault(f, []).append(key)
    lines = [f'Brain-Score benchmark data is missing from BRAINIO_HOME={home} (nothing was computed; the model was '
             'not built). brainscore_vision would download these files from the Brain-Score S3 store, which this '
             'run does not do (offline; pass --download where a network exists). Missing:'
             if missing else 'Brain-Score data is missing (nothing was computed; the model was not built):']
    for f, keys in by_file.items():
        used_by = ', '.join(f'{k} ({BENCHMARKS[k]})' for k in keys)
        lines.append(f'  - {f.kind} {f.name}: {f.path(home)}  [needed by {used_by}]')
    if missing:
        datasets = sorted({BENCHMARK_DATASETS[k] for k in missing})
        lines.append('Fetch them on a machine with internet access, e.g. with the [brainscore] extra installed: '
                     f'python -c "import brainscore_vision as b; [b.load_dataset(d) for d in {datasets!r}]" '
                     '(or `bioconv brainscore score ... --download`), then copy its BRAINIO_HOME folder (~/.brainio) '
                     'here or point BRAINIO_HOME at it; or score only the benchmarks you have with --benchmarks.')
    if selection_file is not None:
        lines.append(f'  - ImageNet validation images (imagenet2012-val.hdf5) of the layer selection: '
                     f'{selection_file}  [needed to choose the layer of {", ".join(selection)}]')
        lines.append('brainscore_vision chooses a region\'s layer on the principal components of each layer\'s '
                     'responses to ImageNet images and downloads that file on first use (run once with --download '
                     'where a network exists, then copy it, or set MT_IMAGENET_PATH to a copy); or fix the layers '
                     'with --region-layer-map (e.g. the region_layer_map/<identifier>.json of an earlier run).')
    return '\n'.join(lines)


def _check_data(keys: Sequence[str], selection: Sequence[str] = ()) -> None:
    """Raise MissingBenchmarkData naming every missing file: the benchmarks' data, and the layer selection's
    ImageNet file when a region's layer is to be chosen (``selection``)."""
    home = brainio_home()
    missing = missing_benchmark_data(keys, home)
    selection_file = imagenet_pca_file() if selection and not imagenet_pca_file().is_file() else None
    if missing or selection_file is not None:
        raise MissingBenchmarkData(_missing_data_message(missing, home, selection, selection_file),
                                   sorted({f for files in missing.values() for f in files}, key=lambda f: f.filename),
                                   selection_file)


# --- local scoring ---------------------------------------------------------------------------------

@dataclass
class ScoreResult:
    """Scores of one model on the public benchmarks, shaped like the paper's Table 3."""
    model: str
    identifier: str
    weights: Optional[str]
    weights_sha1: Optional[str]
    random_init: bool
    seed: int
    benchmarks: Dict[str, str]
    scores: Dict[str, float]                     # column -> ceiled score
    raw: Dict[str, Optional[float]] = field(default_factory=dict)
    ceilings: Dict[str, Optional[float]] = field(default_factory=dict)
    region_layer_map: Dict[str, str] = field(default_factory=dict)
    # region -> {candidate layer: score} in depth order, for the regions whose layer was chosen here
    layer_scores: Dict[str, Dict[str, float]] = field(default_factory=dict)
    layer_choice: Dict[str, str] = field(default_factory=dict)  # region -> 'chosen' | 'given'
    seconds: Dict[str, float] = field(default_factory=dict)
    brainscore_vision_version: Optional[str] = None
    files: List[str] = field(default_factory=list)

    @property
    def average(self) -> Optional[float]:
        """Mean of V1, V2, V4, IT and behavior (the paper's "average score"); None unless all five were scored."""
        if not all(k in self.scores for k in BENCHMARKS):
            return None
        return sum(self.scores[k] for k in BENCHMARKS) / len(BENCHMARKS)

    def row(self) -> Dict[str, Optional[float]]:
        return {'average': self.average, **{k: self.scores.get(k) for k in BENCHMARKS}}

    def to_dict(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), 'average': self.average}

    def layer_rows(self) -> List[Dict[str, Any]]:
        """One row per (region, candidate layer): region, depth (0 = the stem), layer, score, chosen."""
        return [dict(region=region, depth=depth, layer=layer, score=value,
                     chosen=self.region_layer_map.get(region) == layer)
                for region, scores in self.layer_scores.items()
                for depth, (layer, value) in enumerate(scores.items())]


def _parse_benchmarks(benchmarks: Union[str, Sequence[str]]) -> List[str]:
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
    if weights is None:
        return None
    path = Path(weights)
    if not path.is_file():
        raise BrainScoreError(f'weights file {path} does not exist')
    if path.suffix != '.safetensors':
        raise BrainScoreError(f'weights must be a .safetensors file (a `bioconv train` run writes model.safetensors); '
                              f'got {path.name}')
    return path


def _load_region_layer_map(source: Union[None, PathLike, Mapping[str, str]], layers: Optional[Sequence[str]],
                           complete: bool = False) -> Optional[Dict[str, str]]:
    """{region: layer} from a mapping or a JSON file (a plain map, or a score JSON's ``region_layer_map``), checked
    against the candidate ``layers`` (unless None). ``complete``: all of V1, V2, V4 and IT must be there (a
    committed map)."""
    if source is None:
        return None
    if isinstance(source, Mapping):
        mapping = dict(source)
    else:
        try:
            data = json.loads(Path(source).read_text())
        except (OSError, ValueError) as exc:
            raise BrainScoreError(f'cannot read the region-layer map {source}: {exc}') from exc
        mapping = data.get('region_layer_map', data) if isinstance(data, dict) else data  # a score JSON works too
    if not isinstance(mapping, dict) or not mapping:
        raise BrainScoreError(f'a region-layer map is a JSON object like {{"V1": "maxpool", "IT": "layer4.0"}}, '
                              f'got {mapping!r}')
    for region, layer in mapping.items():
        if region not in REGIONS:
            raise BrainScoreError(f'region-layer map: unknown region {region!r}; regions are {", ".join(REGIONS)}')
        if layers is not None and layer not in layers:
            raise BrainScoreError(f'region-layer map: {region} -> {layer!r} is not a candidate layer ({", ".join(layers)})')
    absent = [r for r in REGIONS if r not in mapping]
    if complete and absent:
        raise BrainScoreError(
            f'the region-layer map names {", ".join(r for r in REGIONS if r in mapping)} but not {", ".join(absent)}: a '
            'committed map replaces Brain-Score\'s layer selection for every region, so the benchmarks of the '
            f'missing ones would fail. Score {",".join(absent)} too (`bioconv brainscore score --benchmarks '
            f'{",".join(absent)} --region-layer-map <this map>` adds them) or leave the map out.')
    return {r: mapping[r] for r in REGIONS if r in mapping}


def _warn(text: str) -> None:
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
    _check_model_name(model_name)
    keys = _parse_benchmarks(benchmarks)
    _require_brainscore()
    given = _load_region_layer_map(region_layer_map, None) or {}
    to_choose = [k for k in keys if k in REGIONS and k not in given]
    if not download:
        _check_data(keys, selection=to_choose)
    weights_path = _check_weights(weights)
    layers = candidate_layers(model_name)
    mapping = _load_region_layer_map(given or None, layers) or {}
    os.environ.setdefault('BS_INSTALL_DEPENDENCIES', 'no')  # the extra installed what the metrics need; never pip

    import timm
    import torch

    weights_sha1 = _sha1(weights_path) if weights_path else None
    if weights_path is None:
        identifier = f'{plugin_identifier(model_name)}-randominit-seed{seed}'
        _warn(f'WARNING: no --weights given: scoring a RANDOMLY INITIALIZED {model_name} (seed {seed}).\n'
              'These numbers describe an untrained network and cannot be compared with the paper\'s Table 3. '
              'Pass --weights model.safetensors (e.g. from `bioconv train`) to score a trained model.')
    else:
        identifier = f'{plugin_identifier(model_name)}-weights{weights_sha1[:12]}'  # activation caches keyed on content
    torch.manual_seed(seed)
    kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights_path))) if weights_path else {}
    try:
        model = timm.create_model(model_name, **kwargs)
    except RuntimeError as exc:
        if weights_path is None:
            raise
        raise BrainScoreError(f'cannot load {weights_path} into {model_name}: {exc}') from exc
    wrapper = activations_model(model, identifier, batch_size=batch_size)

    import brainscore_vision
    from brainscore_core.benchmarks import score_benchmark

    result = ScoreResult(model=model_name, identifier=identifier, weights=str(weights_path) if weights_path else None,
                         weights_sha1=weights_sha1, random_init=weights_path is None, seed=seed,
                         benchmarks={k: BENCHMARKS[k] for k in keys}, scores={},
                         layer_choice={r: 'given' for r in REGIONS if r in mapping},
                         brainscore_vision_version=_version('brainscore-vision'))
    loaded = {key: brainscore_vision.load_benchmark(BENCHMARKS[key]) for key in keys}
    for region in to_choose:
        start = time.time()
        if progress:
            print(f'[{region}] choosing a layer: {len(layers)} candidate layers on {BENCHMARKS[region]} ...',
                  file=sys.stderr, flush=True)
        per_layer = layer_scores(wrapper, layers, loaded[region], region)
        result.layer_scores[region] = per_layer
        mapping[region] = max(per_layer, key=per_layer.__getitem__)  # the first best, in depth order
        result.layer_choice[region] = 'chosen'
        result.seconds[f'{region} layers'] = round(time.time() - start, 1)
        if progress:
            print(f'[{region}] ' + ', '.join(f'{layer} {v:.3f}' for layer, v in per_layer.items())
                  + f' -> {mapping[region]}', file=sys.stderr, flush=True)
    commitment = model_commitment(identifier, wrapper, layers, {r: mapping[r] for r in REGIONS if r in mapping})
    for key in keys:
        start = time.time()
        if progress:
            print(f'[{key}] {BENCHMARKS[key]} ...', file=sys.stderr, flush=True)
        value = score_benchmark(loaded[key], commitment)
        result.scores[key] = float(value.values)
        result.raw[key] = _attr_float(value, 'raw')
        result.ceilings[key] = _attr_float(value, 'ceiling')
        result.seconds[key] = round(time.time() - start, 1)
        if progress:
            print(f'[{key}] score {result.scores[key]:.3f} ({result.seconds[key]:.0f} s)', file=sys.stderr, flush=True)
    # the given regions (scored or not) and the chosen ones: runs on a few regions at a time add up to a full map
    result.region_layer_map = {r: mapping[r] for r in REGIONS if r in mapping}
    if output_dir is not None:
        result.files = _write_score(result, Path(output_dir))
    return result


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

    suffix = f'-pca_{SELECTION_PCA_COMPONENTS}'
    identifier = wrapper.identifier
    handle = LayerPCA.hook(wrapper, n_components=SELECTION_PCA_COMPONENTS)
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


def format_score_table(results: Sequence[ScoreResult], with_paper: bool = True) -> str:
    """Markdown table shaped like paper Table 3 (average, V1, V2, V4, IT, behavior), with the paper's rows."""
    def cell(v: Optional[float]) -> str:
        return '-' if v is None else f'{v:.3f}'.replace('0.', '.', 1) if 0 <= v < 1 else f'{v:.3f}'

    header = '| model | data | ' + ' | '.join(TABLE_COLUMNS) + ' |'
    lines = [header, '|' + '---|' * (len(TABLE_COLUMNS) + 2)]
    for r in results:
        tag = 'RANDOM INIT, seed %d' % r.seed if r.random_init else f'weights {Path(r.weights).name} ({r.weights_sha1[:8]})'
        row = r.row()
        lines.append(f'| {r.model} ({tag}) | public, local | ' + ' | '.join(cell(row[c]) for c in TABLE_COLUMNS) + ' |')
    if with_paper:
        for name in dict.fromkeys(r.model for r in results):
            paper = PAPER_TABLE3.get(name)
            if paper:
                lines.append(f'| paper Table 3: {paper["label"]} ({paper["link"]}) | private, brain-score.org | '
                             + ' | '.join(cell(v) for v in paper['scores']) + ' |')
    return '\n'.join(lines)


def format_layer_table(result: ScoreResult) -> str:
    """Markdown table of every candidate layer's score per region (rows: layers in depth order; * = chosen)."""
    regions = list(result.layer_scores)
    if not regions:
        return ''
    layers = list(dict.fromkeys(layer for scores in result.layer_scores.values() for layer in scores))
    lines = ['| depth | layer | ' + ' | '.join(regions) + ' |', '|' + '---|' * (len(regions) + 2)]
    for depth, layer in enumerate(layers):
        cells = []
        for region in regions:
            value = result.layer_scores[region].get(layer)
            mark = '*' if result.region_layer_map.get(region) == layer else ''
            cells.append('-' if value is None else f'{value:.3f}{mark}')
        lines.append(f'| {depth} | {layer} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot_layer_scores(result: ScoreResult) -> Any:
    """A matplotlib Figure: each region's layer scores against depth (x = candidate layers in depth order, one
    line per region, the chosen layer ringed). Built without pyplot, so no display or backend is needed."""
    from matplotlib.figure import Figure

    layers = list(dict.fromkeys(layer for scores in result.layer_scores.values() for layer in scores))
    figure = Figure(figsize=(max(6.0, 0.55 * len(layers) + 2), 4.2), layout='constrained')
    ax = figure.add_subplot()
    for region, scores in result.layer_scores.items():
        xs = [layers.index(layer) for layer in scores]
        (line,) = ax.plot(xs, list(scores.values()), marker='o', label=region)
        chosen = result.region_layer_map.get(region)
        if chosen in scores:
            ax.plot([layers.index(chosen)], [scores[chosen]], marker='o', markersize=13, markerfacecolor='none',
                    markeredgecolor=line.get_color(), linestyle='none')
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha='right')
    ax.set_xlabel('layer (depth order)')
    ax.set_ylabel('score (layer selection: ImageNet PCA)')
    tag = 'RANDOM INIT' if result.random_init else f'weights {result.weights_sha1[:8]}'
    ax.set_title(f'{result.model} ({tag}): score of each layer per region; ringed: chosen')
    ax.grid(alpha=0.3)
    if result.layer_scores:
        ax.legend(title='region')
    return figure


def region_layer_map_path(output_dir: PathLike, result: ScoreResult) -> Path:
    """Where ``score`` writes the run's region -> layer map: ``<output_dir>/<run>/region_layer_map/<identifier>.json``,
    the plugin folder's own layout (copy the ``region_layer_map`` folder into ``brainscore_plugin/<identifier>/``)."""
    return Path(output_dir) / _run_stem(result) / 'region_layer_map' / f'{plugin_identifier(result.model)}.json'


def _run_stem(result: ScoreResult) -> str:
    suffix = 'randominit' if result.random_init else f'weights{result.weights_sha1[:8]}'
    return f'brainscore-{result.model}-{suffix}'


def _region_layer_map_text(mapping: Mapping[str, str]) -> str:
    """The JSON Brain-Score reads from ``region_layer_map/<identifier>.json``: {region: layer}."""
    return json.dumps({r: mapping[r] for r in REGIONS if r in mapping}, indent=4) + '\n'


def _write_score(result: ScoreResult, output_dir: Path) -> List[str]:
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = output_dir / _run_stem(result)
    json_path, md_path = stem.with_suffix('.json'), stem.with_suffix('.md')
    files = [json_path, md_path]
    note = ('\n\nLocal scores on Brain-Score\'s *public* benchmarks; the paper\'s Table 3 (and the leaderboard) use '
            'the private halves of the data on brain-score.org, so the numbers are not directly comparable.')
    if result.random_init:
        note += ' **This model was randomly initialized (no weights given).**'
    layers = ', '.join(f'{k}: {v}' for k, v in result.region_layer_map.items())
    text = format_score_table([result]) + note + (f'\n\nRegion -> layer: {layers}.' if layers else '')
    if result.layer_scores:
        text += ('\n\nScore of every candidate layer per region (the layer selection\'s scores: activations '
                 f'of wider layers reduced to {SELECTION_PCA_COMPONENTS} ImageNet principal components; * = chosen):\n\n'
                 + format_layer_table(result))
        csv_path, png_path = Path(f'{stem}-layers.csv'), Path(f'{stem}-layers.png')
        with open(csv_path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=['region', 'depth', 'layer', 'score', 'chosen'])
            writer.writeheader()
            writer.writerows(result.layer_rows())
        plot_layer_scores(result).savefig(png_path, dpi=120)
        files += [csv_path, png_path]
    if result.region_layer_map and not result.random_init:  # a random network's layers are nothing to commit
        map_path = region_layer_map_path(output_dir, result)
        map_path.parent.mkdir(parents=True, exist_ok=True)
        map_path.write_text(_region_layer_map_text(result.region_layer_map))
        files.append(map_path)
    md_path.write_text(text + '\n')
    result.files = [str(f) for f in files]
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + '\n')
    return result.files


# --- plugin template -----------------------------------------------------------------------------

_GENERATED = ('Generated by `bioconv brainscore plugins` from bioconv_timm/brainscore.py (plugin_files); '
              'edit the template there, not this file.')


def _default_hub_repo(model_name: str) -> str:
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(model_name)
    return cfg.hf_hub_id


def plugin_files(model_name: str, region_layer_map: Optional[Mapping[str, str]] = None,
                 hub_repo: Optional[str] = None, requirement: str = DEFAULT_REQUIREMENT) -> Dict[str, str]:
    """The files of one brainscore_vision model plugin folder, {relative path: text}.

    ``model.py`` builds the model with ``timm.create_model('hf-hub:<hub_repo>', pretrained=True)`` (default repo:
    the model's registered tag, ``bioconv-timm/<model>.in1k``), so the weights live on the Hugging Face Hub,
    never in the plugin. ``region_layer_map`` ({region: layer} for all of V1, V2, V4, IT, or a JSON file such as
    the ``region_layer_map/<id>.json`` that ``score`` writes) adds ``region_layer_map/<id>.json``, which
    Brain-Score reads instead of choosing the layers; without it Brain-Score picks each region's layer itself on
    the public benchmarks. ``test.py`` marks the tests that build the model (a Hub download) ``travis_slow``, as
    brainscore_vision's own model plugins do.
    """
    identifier = plugin_identifier(model_name)
    layers = candidate_layers(model_name)
    mapping = _load_region_layer_map(region_layer_map, layers, complete=True)
    hub_repo = hub_repo or _default_hub_repo(model_name)
    if not re.fullmatch(r'[\w.-]+/[\w.-]+', hub_repo):
        raise BrainScoreError(f'hub repo must be ORG/NAME, got {hub_repo!r}')
    if '\n' in requirement or not requirement.strip():
        raise BrainScoreError(f'requirement must be one pip requirement line, got {requirement!r}')
    layer_lines = ''.join(f'    {layer!r},\n' for layer in layers)
    files = {}
    files['__init__.py'] = f'''"""Brain-Score model plugin {identifier}: {model_name} of Pogodin et al. 2021 (bioconv-timm).

{_GENERATED}
"""
from brainscore_vision import model_registry
from brainscore_vision.model_helpers.brain_transformation import ModelCommitment

from .model import BEHAVIORAL_READOUT_LAYER, IDENTIFIER, VISUAL_DEGREES, get_layers, get_model

model_registry['{identifier}'] = lambda: ModelCommitment(
    identifier=IDENTIFIER, activations_model=get_model(IDENTIFIER), layers=get_layers(IDENTIFIER),
    behavioral_readout_layer=BEHAVIORAL_READOUT_LAYER, visual_degrees=VISUAL_DEGREES)
'''
    files['model.py'] = f'''"""{model_name} (Pogodin et al., NeurIPS 2021) as a Brain-Score base model, built with timm.

{_GENERATED}
Weights come from the Hugging Face Hub ({hub_repo}); nothing is stored in this plugin.
Preprocessing follows the model's pretrained cfg: resize to 224x224, ImageNet mean/std.
"""
import timm

import bioconv_timm  # noqa: F401  (registers the bioconv models with timm; timm has no plugin discovery)
from bioconv_timm.brainscore import activations_model

IDENTIFIER = '{identifier}'
MODEL_NAME = '{model_name}'
HF_HUB_REPO = '{hub_repo}'
VISUAL_DEGREES = {VISUAL_DEGREES}
BEHAVIORAL_READOUT_LAYER = {BEHAVIORAL_READOUT_LAYER!r}  # average pool
# stem output, every residual block's output (its last ReLU), average pool
LAYERS = [
{layer_lines}]
BIBTEX = """{BIBTEX}"""


def create_timm_model():
    """The trained network: timm reads the architecture and weights from the Hub repo."""
    return timm.create_model('hf-hub:' + HF_HUB_REPO, pretrained=True)


def get_model_list():
    return [IDENTIFIER]


def get_model(name):
    assert name == IDENTIFIER, name
    return activations_model(create_timm_model(), identifier=IDENTIFIER)


def get_layers(name):
    assert name == IDENTIFIER, name
    return list(LAYERS)


def get_bibtex(name):
    assert name == IDENTIFIER, name
    return BIBTEX


if __name__ == '__main__':
    from brainscore_vision.model_helpers.check_submission import check_models
    check_models.check_base_models(__name__)
'''
    files['test.py'] = f'''"""Plugin tests run by Brain-Score's CI. {_GENERATED}

The tests that build the model download its weights from the Hugging Face Hub: marked travis_slow, as
Brain-Score's own model plugins mark theirs. The first test builds nothing.
"""
import json
from pathlib import Path

import pytest

import brainscore_vision

from .model import BEHAVIORAL_READOUT_LAYER, IDENTIFIER, LAYERS

REGIONS = ('V1', 'V2', 'V4', 'IT')


def test_layers_and_region_layer_map():
    assert LAYERS[0] == {layers[0]!r} and LAYERS[-1] == BEHAVIORAL_READOUT_LAYER == {BEHAVIORAL_READOUT_LAYER!r}
    path = Path(__file__).parent / 'region_layer_map' / f'{{IDENTIFIER}}.json'
    if path.exists():  # a committed map: every region, each on a candidate layer
        mapping = json.loads(path.read_text())
        assert sorted(mapping) == sorted(REGIONS) and all(layer in LAYERS for layer in mapping.values())


@pytest.mark.travis_slow
def test_has_identifier():
    model = brainscore_vision.load_model('{identifier}')
    assert model.identifier == '{identifier}'


@pytest.mark.travis_slow
def test_layers_and_readout():
    model = brainscore_vision.load_model('{identifier}')
    assert model.layers == LAYERS
    assert model.activations_model.image_size == 224
'''
    files['requirements.txt'] = f'{requirement.strip()}\ntimm>=1.0.31\nsafetensors>=0.4\n'
    if mapping:
        files[f'region_layer_map/{identifier}.json'] = _region_layer_map_text(mapping)
    return files


def _plugin_readme(models: Sequence[str]) -> str:
    rows = '\n'.join(f'| `{plugin_identifier(m)}/` | `{m}` | paper Table 3: {PAPER_TABLE3[m]["label"]} |'
                     for m in models if m in PAPER_TABLE3)
    return f'''# Brain-Score plugins

{_GENERATED}

One `brainscore_vision` model plugin folder per model of paper Table 3 (0.5x ResNet18, ImageNet):

| folder | timm model | |
|---|---|---|
{rows}

Each folder is what brain-score.org expects under `models/`: `__init__.py` registers
`model_registry['<identifier>']` as a `ModelCommitment`, `model.py` builds the network with
`timm.create_model('hf-hub:bioconv-timm/<model>.in1k', pretrained=True)` (weights on the Hugging Face Hub),
`test.py` is run by Brain-Score's CI (the tests that download the weights are marked `travis_slow`, as in
Brain-Score's own plugins), `requirements.txt` installs bioconv-timm and timm.

Layers: without `region_layer_map/`, Brain-Score chooses each region's layer on its public benchmarks. To
commit them, copy the `region_layer_map/` folder a `bioconv brainscore score` run writes (all of V1, V2, V4
and IT) into the model's folder here; `bioconv brainscore plugins` keeps it and `bioconv brainscore
submission` puts it in the zip.

Build an upload with `bioconv brainscore submission --model lc_resnet18_half_ws10` (see the top-level README,
"Brain-Score"); the weights must be published on the Hub first.
'''


def committed_region_layer_map(plugin_dir: PathLike, model_name: str) -> Optional[Path]:
    """``<plugin_dir>/<identifier>/region_layer_map/<identifier>.json`` if that file exists, else None."""
    identifier = plugin_identifier(model_name)
    path = Path(plugin_dir) / identifier / 'region_layer_map' / f'{identifier}.json'
    return path if path.is_file() else None


def write_plugins(output_dir: PathLike = 'brainscore_plugin', models: Sequence[str] = PLUGIN_MODELS) -> List[Path]:
    """(Re)write the committed plugin folders (and their README) from ``plugin_files``; returns the files.
    A folder's ``region_layer_map/<identifier>.json`` is kept (checked: all regions, candidate layers)."""
    root = Path(output_dir)
    written = []
    expected = _plugin_tree(models, root)
    for rel, text in expected.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def _plugin_tree(models: Sequence[str] = PLUGIN_MODELS, plugin_dir: Optional[PathLike] = None,
                 problems: Optional[List[str]] = None) -> Dict[str, str]:
    """{path: text} of the plugin folders; with ``plugin_dir``, each folder's committed region-layer map is
    part of it. An invalid map raises, or is listed in ``problems`` (and left out) when that list is given."""
    tree = {'README.md': _plugin_readme(models)}
    for name in models:
        committed = committed_region_layer_map(plugin_dir, name) if plugin_dir is not None else None
        try:
            files = plugin_files(name, region_layer_map=committed)
        except BrainScoreError as exc:
            if problems is None or committed is None:
                raise
            problems.append(f'{committed.relative_to(plugin_dir).as_posix()} (invalid: {exc})')
            files = plugin_files(name)
        for rel, text in files.items():
            tree[f'{plugin_identifier(name)}/{rel}'] = text
    return tree


def stale_plugin_files(plugin_dir: PathLike = 'brainscore_plugin', models: Sequence[str] = PLUGIN_MODELS) -> List[str]:
    """Relative paths under ``plugin_dir`` that differ from the template (missing, changed or extra). A
    committed ``region_layer_map/<identifier>.json`` belongs to the template when it is valid."""
    root = Path(plugin_dir)
    invalid: List[str] = []
    expected = _plugin_tree(models, root, invalid)
    present = {p.relative_to(root).as_posix() for p in root.rglob('*')
               if p.is_file() and '__pycache__' not in p.parts and not p.name.endswith('.pyc')}
    stale = sorted(rel for rel, text in expected.items()
                   if rel not in present or (root / rel).read_text() != text)
    invalid_paths = {problem.split(' ', 1)[0] for problem in invalid}
    return invalid + stale + sorted(present - set(expected) - invalid_paths)


# --- submission zip --------------------------------------------------------------------------------

SUBMISSION_ROOT = 'bioconv_brainscore'


def build_submission(models: Union[str, Sequence[str]], output: Optional[PathLike] = None,
                     region_layer_map: Union[None, PathLike, Mapping[str, str]] = None,
                     hub_repo: Optional[str] = None, requirement: str = DEFAULT_REQUIREMENT,
                     plugin_dir: Optional[PathLike] = 'brainscore_plugin') -> Path:
    """Write the zip brain-score.org's upload form accepts and check it with ``check_submission_zip``.

    Layout: ``bioconv_brainscore/models/<identifier>/{__init__.py, model.py, test.py, requirements.txt}`` (plus
    ``region_layer_map/<identifier>.json``), with explicit directory entries. The map is ``region_layer_map``
    when given (a {region: layer} for all four regions, or a JSON file such as the one ``score`` writes), else
    the one committed in ``plugin_dir/<identifier>/region_layer_map/`` when that file exists; without either,
    Brain-Score chooses the layers. ``hub_repo`` and ``region_layer_map`` apply to a single model only.
    """
    names = [models] if isinstance(models, str) else list(models)
    if not names:
        raise BrainScoreError('no model given')
    if len(names) > 1 and (hub_repo or region_layer_map):
        raise BrainScoreError('--hub-repo and --region-layer-map describe one model; build one zip per model')
    for name in names:
        _check_model_name(name)
    output = Path(output) if output else Path(f'brainscore-submission-{names[0] if len(names) == 1 else "bioconv"}.zip')
    entries: Dict[str, Optional[str]] = {f'{SUBMISSION_ROOT}/': None, f'{SUBMISSION_ROOT}/models/': None}
    for name in names:
        base = f'{SUBMISSION_ROOT}/models/{plugin_identifier(name)}/'
        entries[base] = None
        mapping = region_layer_map
        if mapping is None and plugin_dir is not None:
            mapping = committed_region_layer_map(plugin_dir, name)
        files = plugin_files(name, region_layer_map=mapping, hub_repo=hub_repo, requirement=requirement)
        for rel in sorted(files):
            parts = rel.split('/')
            for i in range(1, len(parts)):
                entries.setdefault(base + '/'.join(parts[:i]) + '/', None)
            entries[base + rel] = files[rel]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + '.tmp')
    with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in entries.items():  # insertion order: root first, parents before children
            info = zipfile.ZipInfo(name, date_time=(2021, 12, 6, 0, 0, 0))
            if text is None:
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b'')
            else:
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, text.encode())
    problems = check_submission_zip(tmp, raise_on_error=False)
    if problems:
        tmp.unlink()
        raise SubmissionError('the generated submission breaks the rules:\n  ' + '\n  '.join(problems), problems)
    os.replace(tmp, output)
    return output


def check_submission_zip(path: PathLike, max_bytes: int = MAX_SUBMISSION_BYTES, raise_on_error: bool = True) -> List[str]:
    """Check a submission zip against brain-score.org's rules; returns the problems (raises if any and asked to).

    The rules: the file is at most 50 MB; the first entry is one root folder holding every other entry; the
    root holds ``models/``; every ``models/<identifier>/`` folder has ``__init__.py`` and ``test.py`` (the
    website's own upload check, which reads the folder entries, so they must be in the zip), plus
    ``model.py`` and ``requirements.txt``; the identifier has no hyphens (letters, digits, '_'), equals the
    folder name and is registered exactly once with ``model_registry['<identifier>']``; no weight files
    (by suffix, or any file over 1 MB): weights are downloaded from elsewhere; a ``region_layer_map`` JSON
    maps each of V1, V2, V4 and IT to a layer. Every entry is a plain file or folder with a relative path inside the root,
    named once: no symbolic links (``unzip`` recreates them, e.g. pointing at ``../../../../root/.ssh``), no
    device or pipe entries, no duplicate names (which copy ``unzip`` keeps is up to the tool), no absolute
    paths, drive letters or ``..``.
    """
    path = Path(path)
    problems: List[str] = []
    size = path.stat().st_size
    if size > max_bytes:
        problems.append(f'the zip is {size / 1e6:.1f} MB, more than the {max_bytes / 1e6:.0f} MB brain-score.org accepts')
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        problems.append(f'not a zip file: {exc}')
        return _report(problems, raise_on_error)
    with archive:
        infos = archive.infolist()
        if not infos:
            problems.append('the zip is empty')
            return _report(problems, raise_on_error)
        names = [i.filename for i in infos]
        root = names[0]
        if not root.endswith('/') or root.count('/') != 1:
            problems.append(f'the first entry must be the root folder (e.g. "{SUBMISSION_ROOT}/"), got {root!r}')
        for name in names:
            p = PurePosixPath(name)
            if name.startswith('/') or '..' in p.parts or '\\' in name or re.match(r'[A-Za-z]:', name):
                problems.append(f'unsafe path in zip: {name!r} (absolute, with a drive letter, a backslash or "..")')
            elif not name.startswith(root):
                problems.append(f'{name!r} is outside the root folder {root!r}')
        for name, count in collections.Counter(names).items():
            if count > 1:
                problems.append(f'duplicate entry in zip: {name!r} appears {count} times (unzip tools disagree on '
                                'which copy wins); write each file once')
        for info in infos:
            kind = stat.S_IFMT(info.external_attr >> 16)  # Unix mode in the high 16 bits; 0 from non-Unix zips
            if kind == stat.S_IFLNK:
                target = archive.read(info).decode('utf-8', 'replace')
                problems.append(f'symbolic link in zip: {info.filename!r} -> {target!r} (unzip would create the '
                                'link); store the file itself')
            elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                problems.append(f'{info.filename!r} is not a regular file or folder (mode {oct(kind)})')
        plugin_types = {n.split('/')[1] for n in names if n.endswith('/') and n.count('/') == 2}
        if 'models' not in plugin_types:
            problems.append(f'no "{root}models/" folder entry (the plugin folders go in models/)')
        plugins = [n.split('/')[2] for n in names if n.endswith('/') and n.count('/') == 3 and n.split('/')[1] == 'models']
        if 'models' in plugin_types and not plugins:
            problems.append('the models/ folder is empty')
        by_name = {i.filename: i for i in infos}
        for plugin in plugins:
            base = f'{root}models/{plugin}/'
            if not re.fullmatch(r'[A-Za-z0-9_]+', plugin):
                problems.append(f'plugin identifier {plugin!r} must contain only letters, digits and "_" (no hyphens)')
            for required in ('__init__.py', 'test.py', 'model.py', 'requirements.txt'):
                if base + required not in by_name:
                    problems.append(f'{base} has no {required}')
            if base + '__init__.py' in by_name:
                init = archive.read(base + '__init__.py').decode('utf-8', 'replace').replace('"', "'")
                registrations = re.findall(r"model_registry\['([^']+)'\]", init)
                if registrations != [plugin]:
                    problems.append(f'{base}__init__.py must register model_registry[\'{plugin}\'] exactly once '
                                    f'(the folder name), found {registrations}')
            for name in names:
                if name.startswith(base + 'region_layer_map/') and not name.endswith('/'):
                    if name != f'{base}region_layer_map/{plugin}.json':
                        problems.append(f'{name}: the region-layer map must be region_layer_map/{plugin}.json')
                    else:
                        try:
                            mapping = json.loads(archive.read(name))
                            assert isinstance(mapping, dict) and set(mapping) == set(REGIONS) \
                                and all(isinstance(v, str) for v in mapping.values())
                        except Exception:
                            problems.append(f'{name} must be a JSON object mapping each of V1, V2, V4 and IT to a '
                                            'layer name (a committed map replaces the layer selection of every region)')
        for info in infos:
            if info.is_dir():
                continue
            if info.filename.lower().endswith(WEIGHT_SUFFIXES):
                problems.append(f'{info.filename}: weight/data files do not belong in a submission (host weights '
                                'elsewhere, e.g. the Hugging Face Hub)')
            elif info.file_size > MAX_PLUGIN_FILE_BYTES:
                problems.append(f'{info.filename} is {info.file_size / 1e6:.1f} MB: plugins hold code only (weights '
                                'and data are downloaded at run time)')
    return _report(problems, raise_on_error)


def _report(problems: List[str], raise_on_error: bool) -> List[str]:
    if problems and raise_on_error:
        raise SubmissionError('the submission zip breaks brain-score.org\'s rules:\n  ' + '\n  '.join(problems), problems)
    return problems
