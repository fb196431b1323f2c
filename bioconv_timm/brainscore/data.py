"""The benchmark data in ``BRAINIO_HOME``: which files each public benchmark reads, which are missing, and
the ImageNet file brainscore_vision's layer selection reads. Checked before anything expensive is built."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .benchmarks import BENCHMARKS
from .errors import BrainScoreError

__all__ = ['MissingBenchmarkData', 'DataFile', 'benchmark_data_files', 'missing_benchmark_data', 'brainio_home', 'imagenet_pca_file',
           'SELECTION_PCA_COMPONENTS']

PathLike = Union[str, 'os.PathLike[str]']


class MissingBenchmarkData(BrainScoreError):
    """Benchmark data files are not in BRAINIO_HOME, or the layer selection's ImageNet file is missing (raised
    before any model is built)."""

    def __init__(self, message: str, missing: Sequence['DataFile'], missing_selection: Optional[Path] = None) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.missing_selection = missing_selection  # the ImageNet file of the layer selection, if it is missing


@dataclass(frozen=True)
class DataFile:
    """One file brainscore_vision reads from ``BRAINIO_HOME/<sha1>/<filename>`` (downloaded there from S3)."""
    kind: str        # 'assembly' or 'stimulus set'
    name: str        # brainscore_vision registry name, e.g. 'MajajHong2015.public' or 'hvm-public'
    filename: str    # e.g. 'assy_dicarlo_MajajHong2015_public.nc'
    sha1: str

    def path(self, home: Optional[PathLike] = None) -> Path:
        """``<home>/<sha1>/<filename>``, ``home`` defaulting to :func:`brainio_home`."""
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
# Read from this module when used (scoring.layer_scores, results): set it here, as data.SELECTION_PCA_COMPONENTS.
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


def check_data(keys: Sequence[str], selection: Sequence[str] = ()) -> None:
    """Raise MissingBenchmarkData naming every missing file: the benchmarks' data, and the layer selection's
    ImageNet file when a region's layer is to be chosen (``selection``)."""
    home = brainio_home()
    missing = missing_benchmark_data(keys, home)
    selection_file = imagenet_pca_file() if selection and not imagenet_pca_file().is_file() else None
    if missing or selection_file is not None:
        raise MissingBenchmarkData(_missing_data_message(missing, home, selection, selection_file),
                                   sorted({f for files in missing.values() for f in files}, key=lambda f: f.filename),
                                   selection_file)

