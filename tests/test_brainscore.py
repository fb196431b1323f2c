"""Brain-Score with brainscore_vision's real machinery, offline: activations, ModelCommitment, PLS + ceiling.

Needs the [brainscore] extra (CI installs it; .ci/run fails if brainscore_vision cannot be imported, so these
tests never skip there). brainscore_vision reads its cache folders when it is imported, so they point at a
temporary folder before the import below.
"""
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec('brainscore_vision') is None:
    pytest.skip('needs the [brainscore] extra: pip install -e ".[dev,brainscore]"', allow_module_level=True)

_HOME = tempfile.mkdtemp(prefix='bioconv-brainscore-test-')
_ENV = dict(RESULTCACHING_HOME=os.path.join(_HOME, 'resultcaching'), BRAINSCORE_HOME=os.path.join(_HOME, 'brainscore'),
            BRAINIO_HOME=os.path.join(_HOME, 'brainio'),
            MT_HOME=os.path.join(_HOME, 'model-tools'),  # the layer selection's ImageNet file (absent unless a test makes one)
            BS_INSTALL_DEPENDENCIES='no',  # never pip-install plugin requirements
            RESULTCACHING_DISABLE='1')     # every call computes: no stale activations between models
_SAVED_ENV = {k: os.environ.get(k) for k in _ENV}
os.environ.update(_ENV)

import brainscore_vision  # noqa: E402  (after the environment: it reads the cache folders on import)
import pandas as pd  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from brainscore_core.benchmarks import score_benchmark  # noqa: E402
from brainscore_core.supported_data_standards.brainio import s3 as brainio_s3  # noqa: E402
from brainscore_core.supported_data_standards.brainio.assemblies import NeuronRecordingAssembly  # noqa: E402
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet  # noqa: E402
from brainscore_vision.benchmark_helpers.neural_common import NeuralBenchmark, average_repetition  # noqa: E402
from brainscore_vision.model_interface import BrainModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from bioconv_timm import brainscore as bs  # noqa: E402
from bioconv_timm.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIME_BIN = (70, 170)


@pytest.fixture(scope='module', autouse=True)
def _cleanup_home():
    yield
    shutil.rmtree(_HOME, ignore_errors=True)
    from brainscore_vision.model_helpers.activations import core  # its preprocessing probe image, left in /tmp
    if core._probe_image_path:
        shutil.rmtree(os.path.dirname(core._probe_image_path), ignore_errors=True)
    for key, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_stimuli(folder: Path, identifier: str, n_objects: int = 6, per_object: int = 10, size: int = 48,
                 tinted: bool = False, seed: int = 0) -> StimulusSet:
    """PNG stimuli written locally: i.i.d. pixel noise (high-dimensional, so random networks differ), optionally
    tinted by object so that the object label is visible to any network."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tints = np.eye(3)[np.arange(n_objects) % 3]  # red, green, blue, red, ...
    rows, paths = [], {}
    for o in range(n_objects):
        for v in range(per_object):
            image = rng.uniform(0, 1, (size, size, 3))
            if tinted:
                image = 0.5 * image + 0.5 * tints[o]
            stimulus_id = f'{identifier}-o{o}-v{v}'
            path = folder / f'{stimulus_id}.png'
            Image.fromarray((image * 255).astype(np.uint8)).save(path)
            rows.append(dict(stimulus_id=stimulus_id, object_name=f'object{o}', image_label=f'object{o}',
                             filename=path.name))
            paths[stimulus_id] = str(path)
    stimuli = StimulusSet(pd.DataFrame(rows))
    stimuli.stimulus_paths = paths
    stimuli.identifier = identifier
    return stimuli


@pytest.fixture(scope='module')
def noise_stimuli():
    return make_stimuli(Path(_HOME) / 'noise', 'bioconv-test-noise')


@pytest.fixture(scope='module')
def tinted_stimuli():
    return make_stimuli(Path(_HOME) / 'tinted', 'bioconv-test-tinted', n_objects=3, per_object=8, tinted=True, seed=1)


def build(model_name: str, seed: int, **kwargs):
    torch.manual_seed(seed)
    model = timm.create_model(model_name, **kwargs)
    return model, bs.activations_model(model, identifier=f'test-{model_name}-seed{seed}')


def synthetic_benchmark(wrapper, layer: str, stimuli: StimulusSet, region: str = 'IT', n_neuroids: int = 40,
                        n_components: int = 10, repetitions: int = 4, noise: float = 0.7, seed: int = 0,
                        splits: int = 10):
    """A NeuralBenchmark whose 'recordings' are a population read out of one model's layer, plus trial noise.

    Each neuroid is a random mixture of the top principal components of the layer's features on the stimuli,
    measured ``repetitions`` times with independent noise, so brainscore's internal-consistency ceiling has
    repetitions to split.
    """
    rng = np.random.default_rng(seed)
    features = wrapper(stimuli, layers=[layer]).transpose('presentation', 'neuroid')
    assert list(features['stimulus_id'].values) == list(stimuli['stimulus_id'])
    x = features.values[:, features.values.std(0) > 1e-8]
    x = (x - x.mean(0)) / x.std(0)
    u, _, _ = np.linalg.svd(x, full_matrices=False)
    signal = u[:, :n_components] @ rng.standard_normal((n_components, n_neuroids))
    signal = (signal - signal.mean(0)) / signal.std(0)
    n = len(stimuli)
    trials = np.concatenate([signal + noise * rng.standard_normal(signal.shape) for _ in range(repetitions)])
    assembly = NeuronRecordingAssembly(trials[:, :, None], coords={
        'stimulus_id': ('presentation', np.tile(stimuli['stimulus_id'].values, repetitions)),
        'object_name': ('presentation', np.tile(stimuli['object_name'].values, repetitions)),
        'repetition': ('presentation', np.repeat(np.arange(repetitions), n)),
        'neuroid_id': ('neuroid', [f'neuroid{i}' for i in range(n_neuroids)]),
        'region': ('neuroid', [region] * n_neuroids),
        'time_bin_start': ('time_bin', [TIME_BIN[0]]), 'time_bin_end': ('time_bin', [TIME_BIN[1]]),
    }, dims=['presentation', 'neuroid', 'time_bin']).squeeze('time_bin')
    assembly.attrs['stimulus_set'] = stimuli
    averaged = average_repetition(assembly)
    averaged.attrs['stimulus_set'] = stimuli
    ceiler = brainscore_vision.load_ceiling('internal_consistency')
    return NeuralBenchmark(
        identifier=f'bioconv-synthetic.{region}-pls', version=1, assembly=averaged, parent=region, bibtex=None,
        similarity_metric=brainscore_vision.load_metric('pls', crossvalidation_kwargs=dict(
            stratification_coord='object_name', splits=splits)),
        ceiling_func=lambda: ceiler(assembly), visual_degrees=bs.VISUAL_DEGREES, number_of_trials=1)


# --- the data the public benchmarks need -----------------------------------------------------------

@pytest.fixture
def record_fetches(monkeypatch, tmp_path):
    """Replace brainio's S3 fetch by a recorder: (file name, sha1) of every file asked for, nothing downloaded."""
    fetched = []

    def fetch_file(location_type, location, sha1=None, version_id=None):
        fetched.append((location.rsplit('/', 1)[-1], sha1))
        return str(tmp_path / 'absent' / str(sha1) / location.rsplit('/', 1)[-1])

    monkeypatch.setattr(brainio_s3, 'fetch_file', fetch_file)
    return fetched


def test_data_table_matches_installed_brainscore(record_fetches):
    for name in bs.data._ASSEMBLIES:
        record_fetches.clear()
        with pytest.raises(Exception):  # the recorder hands back missing files; loading stops after the last fetch
            brainscore_vision.load_dataset(name)
        assert set(record_fetches) == {(f.filename, f.sha1) for f in bs.data._assembly_files(name)}, name
    for key, identifier in bs.BENCHMARKS.items():
        record_fetches.clear()
        try:
            benchmark = brainscore_vision.load_benchmark(identifier)
            benchmark._assembly.stimulus_set  # the FreemanZiemba2013 benchmarks load lazily
        except Exception:
            pass
        expected = {(f.filename, f.sha1) for f in bs.benchmark_data_files(key)}
        assert record_fetches and set(record_fetches) <= expected, (key, record_fetches)


def test_score_offline_fails_fast_naming_the_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('BRAINIO_HOME', str(tmp_path / 'brainio'))
    monkeypatch.setenv('MT_IMAGENET_PATH', str(tmp_path / 'imagenet2012.hdf5'))

    def no_model(*args, **kwargs):
        raise AssertionError('the model must not be built when benchmark data is missing')

    monkeypatch.setattr(timm, 'create_model', no_model)
    start = time.time()
    code = main(['brainscore', 'score', '--model', 'lc_resnet18_half_ws10', '--benchmarks', 'V1,V2,V4,IT,behavior'])
    err = capsys.readouterr().err
    assert code == 2 and time.time() - start < 30
    assert err.startswith('bioconv brainscore score: error: Brain-Score benchmark data is missing from BRAINIO_HOME=')
    for text in ('FreemanZiemba2013.public', 'assy_movshon_FreemanZiemba2013_public.nc', 'hvm-public',
                 'stimulus_hvm-public.zip', 'Rajalingham2018.public', 'objectome.public', 'MajajHong2015public.IT-pls',
                 'Rajalingham2018public-i2n', 'model was not built',
                 f'{tmp_path / "imagenet2012.hdf5"}  [needed to choose the layer of V1, V2, V4, IT]'):
        assert text in err, text

    # with the MajajHong2015 files present, V4/IT pass the check and only V1's data is reported
    for f in bs.benchmark_data_files('IT'):
        f.path(tmp_path / 'brainio').parent.mkdir(parents=True, exist_ok=True)
        f.path(tmp_path / 'brainio').write_bytes(b'')
    with pytest.raises(bs.MissingBenchmarkData) as info:
        bs.score('lc_resnet18_half_ws10', benchmarks='V1,IT', output_dir=None)
    assert {f.name for f in info.value.missing} == {'FreemanZiemba2013.public', 'FreemanZiemba2013.aperture-public'}
    assert 'hvm-public' not in str(info.value) and info.value.missing_selection == tmp_path / 'imagenet2012.hdf5'
    # with every layer given, nothing is chosen and the ImageNet file is not needed; IT's data alone is complete
    with pytest.raises(bs.MissingBenchmarkData) as info:
        bs.score('lc_resnet18_half_ws10', benchmarks='V1,IT', output_dir=None,
                 region_layer_map={'V1': 'maxpool', 'IT': 'layer4.0'})
    assert info.value.missing_selection is None and 'ImageNet' not in str(info.value)
    with pytest.raises(bs.MissingBenchmarkData, match=r'^Brain-Score data is missing .*\n  - ImageNet') as info:
        bs.score('lc_resnet18_half_ws10', benchmarks='IT', output_dir=None)
    assert info.value.missing == []
    with pytest.raises(bs.BrainScoreError, match='does not exist'):  # a bad weights path also fails before any work
        bs.score('lc_resnet18_half_ws10', benchmarks='IT', weights=tmp_path / 'nope.safetensors', output_dir=None,
                 region_layer_map={'IT': 'layer4.0'})


# --- brainscore_vision's machinery on our models --------------------------------------------------

def _direct_forward(model, stimuli, layer):
    """Our own preprocessing (resize to the cfg size, cfg mean/std) and a forward hook: the reference."""
    from torchvision import transforms
    cfg = model.pretrained_cfg
    size = cfg['input_size'][-1]
    preprocess = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                     transforms.Normalize(cfg['mean'], cfg['std'])])
    images = torch.stack([preprocess(Image.open(stimuli.get_stimulus(s)).convert('RGB')) for s in stimuli['stimulus_id']])
    captured = {}
    module = model.get_classifier() if layer == 'logits' else dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, i, o: captured.setdefault('out', o.detach().clone()))
    with torch.no_grad():
        model.eval()(images)
    handle.remove()
    return captured['out'].flatten(1).numpy()


def test_pytorch_wrapper_activations_of_lc_model(noise_stimuli):
    model, wrapper = build('lc_resnet20_ws10', seed=0)
    assert type(wrapper).__name__ == 'BioconvPytorchWrapper' and wrapper.image_size == 32
    layers = ['act1', 'layer2.1', 'global_pool', 'logits']
    activations = wrapper(noise_stimuli, layers=layers).transpose('presentation', 'neuroid')
    assert list(activations['stimulus_id'].values) == list(noise_stimuli['stimulus_id'])
    assert list(activations['object_name'].values) == list(noise_stimuli['object_name'])  # stimulus meta attached
    sizes = {'act1': 16 * 32 * 32, 'layer2.1': 32 * 16 * 16, 'global_pool': 64, 'logits': 10}
    for layer in layers:
        values = activations.sel(neuroid=activations['layer'] == layer).values
        assert values.shape == (len(noise_stimuli), sizes[layer]), layer
        np.testing.assert_allclose(values, _direct_forward(model, noise_stimuli, layer), rtol=1e-4, atol=1e-5,
                                   err_msg=layer)


def test_model_commitment_records_regions_and_does_the_probabilities_task(noise_stimuli, tinted_stimuli):
    model, wrapper = build('lc_resnet20', seed=0)
    mapping = {'V1': 'act1', 'V2': 'layer1.2', 'V4': 'layer2.2', 'IT': 'layer3.2'}
    commitment = bs.model_commitment('test-commitment-lc_resnet20', wrapper, bs.candidate_layers(model), mapping)
    assert commitment.visual_degrees() == 8
    sizes = {'V1': 16 * 32 * 32, 'V2': 16 * 32 * 32, 'V4': 32 * 16 * 16, 'IT': 64 * 8 * 8}
    for region, layer in mapping.items():
        commitment.start_task(BrainModel.Task.passive)
        commitment.start_recording(region, time_bins=[TIME_BIN])
        recording = commitment.look_at(noise_stimuli, number_of_trials=1).transpose('presentation', 'neuroid')
        assert set(recording['region'].values) == {region} and set(recording['layer'].values) == {layer}
        assert recording.shape == (len(noise_stimuli), sizes[region])
        np.testing.assert_allclose(recording.values, _direct_forward(model, noise_stimuli, layer), rtol=1e-4, atol=1e-5)

    # behavior: a logistic readout of the average pool, fitted on labelled stimuli (Rajalingham2018's protocol)
    commitment.start_task(BrainModel.Task.probabilities, tinted_stimuli)
    probabilities = commitment.look_at(tinted_stimuli)
    assert probabilities.dims == ('presentation', 'choice')
    assert sorted(probabilities['choice'].values) == sorted(set(tinted_stimuli['image_label']))
    np.testing.assert_allclose(probabilities.values.sum(axis=1), 1, atol=1e-6)
    predicted = probabilities['choice'].values[probabilities.values.argmax(axis=1)]
    assert (predicted == probabilities["image_label"].values).mean() > 0.8  # chance: 1/3; the tint is easy to read


def test_commitment_of_a_converted_timm_family(noise_stimuli, tinted_stimuli):
    """lc_convnext_atto (a timm family made LC): stage outputs recorded per region, the behavioral readout on its
    average pool, which is ConvNeXt's head.global_pool (the last candidate layer)."""
    model, wrapper = build('lc_convnext_atto_ws10', seed=0, img_size=32, num_classes=10)
    layers = bs.candidate_layers(model)
    assert layers[-1] == 'head.global_pool'
    mapping = {'V1': 'stages.0', 'V2': 'stages.1', 'V4': 'stages.2', 'IT': 'stages.3'}
    commitment = bs.model_commitment('test-commitment-lc_convnext_atto', wrapper, layers, mapping,
                                     readout_layer=layers[-1])
    sizes = {'V1': 40 * 8 * 8, 'V2': 80 * 4 * 4, 'V4': 160 * 2 * 2, 'IT': 320 * 1 * 1}
    for region, layer in mapping.items():
        commitment.start_task(BrainModel.Task.passive)
        commitment.start_recording(region, time_bins=[TIME_BIN])
        recording = commitment.look_at(noise_stimuli, number_of_trials=1).transpose('presentation', 'neuroid')
        assert recording.shape == (len(noise_stimuli), sizes[region])
        np.testing.assert_allclose(recording.values, _direct_forward(model, noise_stimuli, layer), rtol=1e-4, atol=1e-5)
    commitment.start_task(BrainModel.Task.probabilities, tinted_stimuli)
    probabilities = commitment.look_at(tinted_stimuli)
    np.testing.assert_allclose(probabilities.values.sum(axis=1), 1, atol=1e-6)


def test_synthetic_neural_benchmark_ranks_the_generating_model_first(noise_stimuli):
    """brainscore's PLS metric and internal-consistency ceiling on a local NeuronRecordingAssembly."""
    layer = 'layer3.0'
    mapping = {'IT': layer}
    generator_model, generator = build('lc_resnet20', seed=0)
    benchmark = synthetic_benchmark(generator, layer, noise_stimuli)
    ceiling = float(benchmark.ceiling)
    assert 0.8 < ceiling < 0.95  # split-half reliability of 4 repetitions at noise 0.7, Spearman-Brown corrected

    def score_of(model, wrapper):
        commitment = bs.model_commitment(wrapper.identifier, wrapper, bs.candidate_layers(model), mapping)
        return score_benchmark(benchmark, commitment)

    generating = score_of(generator_model, generator)
    unrelated = score_of(*build('lc_resnet20', seed=1))
    assert float(generating.attrs['ceiling']) == pytest.approx(ceiling)
    assert float(generating) == pytest.approx(float(generating.raw) ** 2 / ceiling)  # explained variance / ceiling
    assert float(generating) > 0.6, float(generating)
    assert float(generating) > float(unrelated) + 0.4, (float(generating), float(unrelated))


def test_score_runs_the_benchmarks_with_local_weights(noise_stimuli, tmp_path, monkeypatch, capsys):
    """`bioconv brainscore score` end to end, with the public benchmark swapped for a synthetic one."""
    home = tmp_path / 'brainio'
    monkeypatch.setenv('BRAINIO_HOME', str(home))
    for f in bs.benchmark_data_files('IT'):  # the data check looks for the files only
        f.path(home).parent.mkdir(parents=True, exist_ok=True)
        f.path(home).write_bytes(b'')
    model, generator = build('conv_resnet20', seed=0)
    weights = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    benchmark = synthetic_benchmark(generator, 'layer3.0', noise_stimuli)
    requested = []

    def load_benchmark(identifier):
        requested.append(identifier)
        return benchmark

    monkeypatch.setattr(brainscore_vision, 'load_benchmark', load_benchmark)
    map_file = tmp_path / 'map.json'
    map_file.write_text('{"IT": "layer3.0"}')
    code = main(['brainscore', 'score', '--model', 'conv_resnet20', '--weights', str(weights), '--benchmarks', 'IT',
                 '--region-layer-map', str(map_file), '--output-dir', str(tmp_path / 'out')])
    out, err = capsys.readouterr()
    assert code == 0 and requested == ['MajajHong2015public.IT-pls']
    assert 'RANDOM' not in err and '| conv_resnet20 (weights model.safetensors' in out
    trained = next((tmp_path / 'out').glob('brainscore-conv_resnet20-weights*.json'))
    result = json.loads(trained.read_text())
    assert result['region_layer_map'] == {'IT': 'layer3.0'} and result['average'] is None
    assert result['weights_sha1'] and result['identifier'].endswith(result['weights_sha1'][:12])

    with pytest.raises(bs.BrainScoreError, match='cannot load'):  # weights of another architecture
        bs.score('lc_resnet20', weights=weights, benchmarks='IT', output_dir=None, progress=False,
                 region_layer_map=map_file)
    random_init = bs.score('conv_resnet20', benchmarks='IT', seed=1, region_layer_map={'IT': 'layer3.0'},
                           output_dir=tmp_path / 'out', progress=False)
    err = capsys.readouterr().err
    assert 'RANDOMLY INITIALIZED conv_resnet20' in err and random_init.random_init
    assert result['scores']['IT'] > 0.6 and result['scores']['IT'] > random_init.scores['IT'] + 0.4
    assert (tmp_path / 'out' / 'brainscore-conv_resnet20-randominit.md').read_text().count('RANDOM INIT') == 1
    assert not (tmp_path / 'out' / 'brainscore-conv_resnet20-randominit').exists()  # no layers to commit from it
    assert (tmp_path / 'out' / trained.stem / 'region_layer_map' / 'bioconv_conv_resnet20.json').is_file()


def make_imagenet_file(path: Path, n_images: int, size: int = 32, seed: int = 5, images=None) -> Path:
    """The HDF5 file brainscore_vision's layer selection reads its ImageNet images from (``val/images``), here
    pixel noise (or ``images``: n_images uint8 arrays of size x size x 3) at the rows ``_get_imagenet_val(n_images)``
    picks (rows 0, 50, 100, ... for n_images < 1000)."""
    import h5py
    rng = np.random.default_rng(seed)
    rows = [50 * i for i in range(n_images)]
    with h5py.File(path, 'w') as f:
        dataset = f.create_dataset('val/images', shape=(rows[-1] + 1, size, size, 3), dtype='uint8',
                                   chunks=(1, size, size, 3))  # rows never written take no space
        for i, row in enumerate(rows):
            dataset[row] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if images is None else images[i]
    return path


def test_score_chooses_each_layer_and_writes_every_layer_score(noise_stimuli, tmp_path, monkeypatch, capsys):
    """`bioconv brainscore score` without a region-layer map: every candidate layer scored on the region's
    benchmark as brainscore_vision's layer selection does (ImageNet PCA), the best committed, and all of it written."""
    home = tmp_path / 'brainio'
    monkeypatch.setenv('BRAINIO_HOME', str(home))
    for f in bs.benchmark_data_files('IT'):
        f.path(home).parent.mkdir(parents=True, exist_ok=True)
        f.path(home).write_bytes(b'')
    # Brain-Score's 1000 ImageNet images, scaled down to the benchmark's own 60 stimuli: 60 components on them keep
    # all of each layer's variance on the stimuli, so the layers are ranked by the fit the final score makes
    # (layer3.0 ~0.82, layer3.1 ~0.66, layer3.2 ~0.55). With 40 noise images, 39 components held ~5% of layer3.0's
    # variance on the stimuli: every layer scored 0.00-0.09 and the winner (layer3.1) turned on BLAS rounding.
    ids = list(noise_stimuli['stimulus_id'])
    monkeypatch.setattr(bs.data, 'SELECTION_PCA_COMPONENTS', len(ids))
    imagenet = make_imagenet_file(tmp_path / 'imagenet2012.hdf5', len(ids), size=48, images=[
        np.asarray(Image.open(noise_stimuli.stimulus_paths[i]).convert('RGB')) for i in ids])
    monkeypatch.setenv('MT_IMAGENET_PATH', str(imagenet))
    model, generator = build('conv_resnet20', seed=0)
    weights = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    benchmark = synthetic_benchmark(generator, 'layer3.0', noise_stimuli, splits=3)  # 3 PLS fits per layer, not 10
    monkeypatch.setattr(brainscore_vision, 'load_benchmark', lambda identifier: benchmark)
    out_dir = tmp_path / 'out'

    assert main(['brainscore', 'score', '--model', 'conv_resnet20', '--weights', str(weights), '--benchmarks', 'IT',
                 '--output-dir', str(out_dir)]) == 0
    out = capsys.readouterr().out
    layers = bs.candidate_layers('conv_resnet20')
    result = json.loads(next(out_dir.glob('brainscore-conv_resnet20-weights*.json')).read_text())
    per_layer = result['layer_scores']['IT']
    assert list(per_layer) == layers  # every candidate layer, in depth order
    assert len(set(per_layer.values())) == len(layers) and all(-1 < v <= 1.5 for v in per_layer.values())
    chosen = result['region_layer_map']['IT']
    assert chosen == max(per_layer, key=per_layer.get) == 'layer3.0'  # the layer the recordings came from
    runner_up = max(v for layer, v in per_layer.items() if layer != 'layer3.0')
    assert per_layer['layer3.0'] - runner_up > 0.08  # a clear win (~0.16 over layer3.1), not a rounding flip
    assert len(list(Path(f'{imagenet}-files').glob('*.png'))) == len(ids)  # the selection did read its ImageNet file
    assert result['layer_choice'] == {'IT': 'chosen'} and result['scores']['IT'] > 0.6

    stem = out_dir / f'brainscore-conv_resnet20-weights{result["weights_sha1"][:8]}'
    import csv
    with open(f'{stem}-layers.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['region'], int(r['depth']), r['layer']) for r in rows] == [('IT', d, layer) for d, layer in enumerate(layers)]
    assert [r['layer'] for r in rows if r['chosen'] == 'True'] == ['layer3.0']
    assert [float(r['score']) for r in rows] == pytest.approx(list(per_layer.values()))
    with Image.open(f'{stem}-layers.png') as png:
        assert png.format == 'PNG' and png.size[0] > 600
    map_file = stem / 'region_layer_map' / 'bioconv_conv_resnet20.json'
    assert json.loads(map_file.read_text()) == {'IT': 'layer3.0'} and str(map_file) in result['files']
    assert '| 7 | layer3.0 |' in out and f'{per_layer["layer3.0"]:.3f}* |' in out
    assert f'{map_file} names no layer for V1, V2, V4' in out  # a map to commit needs all four regions
    assert 'layer3.0' in Path(f'{stem}.md').read_text().split('Score of every candidate layer')[1]
    assert 'reduced to 60 ImageNet principal components' in Path(f'{stem}.md').read_text()  # the patched value
    assert not list(out_dir.rglob('*.tmp'))  # every file written atomically, no temporary file left

    # the written map fixes the layer next time: no sweep, so no ImageNet file needed
    imagenet.unlink()
    again = bs.score('conv_resnet20', weights=weights, benchmarks='IT', region_layer_map=map_file,
                     output_dir=tmp_path / 'again', progress=False)
    assert again.layer_choice == {'IT': 'given'} and again.layer_scores == {} and again.scores['IT'] == result['scores']['IT']
    assert not list((tmp_path / 'again').glob('*-layers.*'))


def test_brainscore_fails_the_regions_a_committed_map_leaves_out(noise_stimuli):
    """Why a committed region_layer_map must name all four regions: brainscore_vision then uses it for every
    region instead of choosing layers, and a region it leaves out cannot be recorded."""
    model, wrapper = build('conv_resnet20', seed=0)
    commitment = bs.model_commitment('test-partial-map', wrapper, bs.candidate_layers(model), {'IT': 'layer3.0'})
    commitment.start_task(BrainModel.Task.passive)
    commitment.start_recording('V1', time_bins=[TIME_BIN])
    with pytest.raises(KeyError, match='V1'):
        commitment.look_at(noise_stimuli)


def test_plugin_tests_use_brainscores_markers_and_run_fast_without_them(tmp_path):
    """Our plugins' test.py marks what brainscore_vision's own model plugins mark, and run the way Brain-Score's
    CI runs plugin tests (brainscore_core's test_plugin.sh marker filter) it builds no model (no Hub download)
    and checks a committed region_layer_map."""
    import re
    import subprocess
    import brainscore_core
    script = (Path(brainscore_core.__file__).parent / 'plugin_management' / 'test_plugin.sh').read_text()
    ci_filter = re.search(r'TRAVIS_PYTEST_SETTINGS=\$\{PYTEST_SETTINGS:-"([^"]+)"\}', script).group(1)
    assert 'not travis_slow' in ci_filter
    installed = Path(brainscore_vision.__file__).parent / 'models'
    theirs = {m for path in installed.glob('*/test.py') for m in re.findall(r'@pytest\.mark\.(\w+)', path.read_text())}
    identifier = 'bioconv_lc_resnet18_half_ws10'
    source = (REPO / 'brainscore_plugin' / identifier / 'test.py').read_text()
    ours = set(re.findall(r'@pytest\.mark\.(\w+)', source))
    assert ours == {'travis_slow'} and ours <= theirs

    maps = {identifier: {'V1': 'maxpool', 'V2': 'layer1.1', 'V4': 'layer3.0', 'IT': 'layer4.0'},
            'bioconv_lc_resnet18_half_ws1': {'V1': 'maxpool', 'V2': 'layer1.1', 'V4': 'layer3.0', 'IT': 'no.such.layer'}}
    tests = []
    for name, mapping in maps.items():
        plugin = tmp_path / 'models' / name
        shutil.copytree(REPO / 'brainscore_plugin' / name, plugin)
        (plugin / 'region_layer_map').mkdir()
        (plugin / 'region_layer_map' / f'{name}.json').write_text(json.dumps(mapping))
        tests.append(str(plugin / 'test.py'))
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--rootdir', str(tmp_path),
                          '-m', ci_filter, *tests],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert '1 failed, 1 passed, 4 deselected' in run.stdout, run.stdout + run.stderr  # the bad layer name is caught
    assert 'FAILED models/bioconv_lc_resnet18_half_ws1/test.py::test_layers_and_region_layer_map' in run.stdout


def test_committed_plugin_builds_a_model_commitment(tinted_stimuli, tmp_path, monkeypatch):
    """The committed plugin package as brainscore_vision imports it, with local weights instead of the Hub."""
    identifier = 'bioconv_conv_resnet18_half'
    folder = REPO / 'brainscore_plugin' / identifier
    package = f'bioconv_plugin_under_test_{identifier}'
    spec = importlib.util.spec_from_file_location(package, folder / '__init__.py', submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, package, module)
    spec.loader.exec_module(module)
    plugin_model = sys.modules[f'{package}.model']
    try:
        torch.manual_seed(3)
        reference = timm.create_model('conv_resnet18_half')
        weights = tmp_path / 'model.safetensors'
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
        monkeypatch.setattr(plugin_model, 'create_timm_model', lambda: timm.create_model(
            plugin_model.MODEL_NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights))))
        commitment = brainscore_vision.model_registry[identifier]()
        assert commitment.identifier == identifier and commitment.layers == bs.candidate_layers('conv_resnet18_half')
        wrapper = commitment.activations_model
        assert wrapper.image_size == 224
        torch.testing.assert_close(wrapper._model.conv1.weight, reference.conv1.weight)
        logits = wrapper(tinted_stimuli, layers=['logits'])
        assert logits.sizes['neuroid'] == 1000  # ImageNet head, as the label benchmarks require
        commitment.start_task(BrainModel.Task.probabilities, tinted_stimuli)
        probabilities = commitment.look_at(tinted_stimuli)
        np.testing.assert_allclose(probabilities.values.sum(axis=1), 1, atol=1e-6)
    finally:
        brainscore_vision.model_registry.pop(identifier, None)
        sys.modules.pop(f'{package}.model', None)
