"""Brain-Score plugin folders, submission zips and the data check: what needs no brainscore_vision install."""
import json
import re
import shlex
import zipfile
from pathlib import Path

import pytest

from bioconv_timm import brainscore as bs
from bioconv_timm.cli import brainscore as brainscore_cli
from bioconv_timm.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / 'brainscore_plugin'


def test_identifiers_have_no_hyphens_and_name_the_model():
    for name in bs.PLUGIN_MODELS:
        identifier = bs.plugin_identifier(name)
        assert re.fullmatch(r'[a-z0-9_]+', identifier), identifier
        assert bs.model_name_from_identifier(identifier) == name
    assert set(bs.PLUGIN_MODELS) == set(bs.PAPER_TABLE3)  # one plugin per row of paper Table 3
    with pytest.raises(bs.BrainScoreError, match='unknown model'):
        bs.plugin_identifier('resnet18')


def test_candidate_layers_are_block_outputs_and_resolve_to_modules():
    import timm
    import torch

    layers = bs.candidate_layers('lc_resnet18_half_ws10')
    assert layers == ['maxpool'] + [f'layer{s}.{b}' for s in range(1, 5) for b in range(2)] + ['global_pool']
    assert bs.candidate_layers('lc_resnet20')[:2] == ['act1', 'layer1.0']  # CIFAR stem: no max-pool
    with torch.device('meta'):
        model = timm.create_model('conv_resnet18_half')
    modules = dict(model.named_modules())
    assert all(layer in modules for layer in layers)
    assert type(modules['layer2.1']).__name__ == 'BasicBlock'


def test_committed_plugin_folders_equal_the_template():
    assert {p.name for p in PLUGIN_DIR.iterdir() if p.is_dir()} >= {bs.plugin_identifier(m) for m in bs.PLUGIN_MODELS}
    assert bs.stale_plugin_files(PLUGIN_DIR) == [], 'run `bioconv brainscore plugins` to regenerate brainscore_plugin/'


def test_stale_check_and_cli_regenerate(tmp_path, capsys):
    assert main(['brainscore', 'plugins', '--output-dir', str(tmp_path)]) == 0
    assert bs.stale_plugin_files(tmp_path) == []
    model_py = tmp_path / 'bioconv_lc_resnet18_half' / 'model.py'
    model_py.write_text(model_py.read_text().replace("'layer4.1',", ''))
    (tmp_path / 'bioconv_lc_resnet18_half' / 'weights.pth').write_bytes(b'x')
    capsys.readouterr()
    assert main(['brainscore', 'plugins', '--check', '--output-dir', str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert 'bioconv_lc_resnet18_half/model.py' in out and 'bioconv_lc_resnet18_half/weights.pth' in out


def test_plugin_files_follow_brainscore_layout():
    files = bs.plugin_files('lc_resnet18_half_ws10')
    # no map unless one is known
    assert set(files) == {'__init__.py', 'model.py', 'test.py', 'requirements.txt', 'metadata.yml'}
    init = files['__init__.py']
    assert init.count("model_registry['bioconv_lc_resnet18_half_ws10']") == 1
    assert 'ModelCommitment(' in init and "behavioral_readout_layer='global_pool'" in init
    model_py = files['model.py']
    assert "timm.create_model('hf-hub:' + HF_HUB_REPO, pretrained=True)" in model_py
    assert "HF_HUB_REPO = 'bioconv-timm/lc_resnet18_half_ws10.in1k'" in model_py
    namespace = {}
    exec(compile(model_py.split('def create_timm_model')[0].replace('import timm', '').replace(
        'import bioconv_timm', '').replace('from bioconv_timm.brainscore import activations_model', ''),
        'model.py', 'exec'), namespace)  # the constants as Python sees them
    assert namespace['LAYERS'] == bs.candidate_layers('lc_resnet18_half_ws10')
    assert namespace['VISUAL_DEGREES'] == 8 and namespace['BEHAVIORAL_READOUT_LAYER'] == 'global_pool'
    assert 'bioconv-timm' in files['requirements.txt'] and 'timm>=1.0.31' in files['requirements.txt']

    full = {'V1': 'maxpool', 'V2': 'layer1.1', 'V4': 'layer2.1', 'IT': 'layer4.0'}
    mapped = bs.plugin_files('lc_resnet18_half_ws10', region_layer_map=full)
    assert json.loads(mapped['region_layer_map/bioconv_lc_resnet18_half_ws10.json']) == full
    with pytest.raises(bs.BrainScoreError, match='not a candidate layer'):
        bs.plugin_files('lc_resnet18_half_ws10', region_layer_map={**full, 'V1': 'fc'})
    with pytest.raises(bs.BrainScoreError, match='unknown region'):
        bs.plugin_files('lc_resnet18_half_ws10', region_layer_map={**full, 'V5': 'maxpool'})
    # Brain-Score uses a committed map for every region: one that leaves regions out would fail their benchmarks
    with pytest.raises(bs.BrainScoreError, match='names V1, IT but not V2, V4.*--benchmarks V2,V4'):
        bs.plugin_files('lc_resnet18_half_ws10', region_layer_map={'V1': 'maxpool', 'IT': 'layer4.0'})


def _decorators(source):
    """{test function: [decorator source]} of a test.py."""
    import ast
    tree = ast.parse(source)
    return {node.name: [ast.unparse(d) for d in node.decorator_list]
            for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith('test')}


def test_plugin_tests_that_build_the_model_are_marked_travis_slow():
    """As in brainscore_vision's own model plugins: a test that loads the model (here a Hub download of up to
    2 GB of weights) carries @pytest.mark.travis_slow; the committed folders carry the same test.py."""
    for name in bs.PLUGIN_MODELS:
        source = (PLUGIN_DIR / bs.plugin_identifier(name) / 'test.py').read_text()
        decorators = _decorators(source)
        assert decorators == {'test_layers_and_region_layer_map': [], 'test_has_identifier': ['pytest.mark.travis_slow'],
                              'test_layers_and_readout': ['pytest.mark.travis_slow']}, (name, decorators)
        assert source.count('load_model(') == 2 and 'import pytest' in source


# --- the plugin folder as Brain-Score's current timm plugins write it (issue 26 part 5; docs/brainscore.md) ------

def _committed(name):
    return PLUGIN_DIR / bs.plugin_identifier(name)


def test_registry_entry_is_written_out_with_its_behavioral_readout():
    """Upstream (brain-score/vision models/seresnext50_32x4d, regnety_032) writes the registry entry out:
    ``ModelCommitment(identifier='<id>', activations_model=get_model('<id>'), layers=get_layers('<id>'),
    behavioral_readout_layer='<layer>')``, literals a reader (and Brain-Score's regex) sees in __init__.py."""
    import ast
    for name in bs.PLUGIN_MODELS:
        identifier = bs.plugin_identifier(name)
        tree = ast.parse((_committed(name) / '__init__.py').read_text())
        [assign] = [n for n in tree.body if isinstance(n, ast.Assign)]
        [target] = assign.targets
        assert ast.unparse(target) == f"model_registry['{identifier}']"
        assert isinstance(assign.value, ast.Lambda) and ast.unparse(assign.value.body.func) == 'ModelCommitment'
        call = assign.value.body
        assert not call.args
        kwargs = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert kwargs == {'identifier': repr(identifier), 'activations_model': f'get_model({identifier!r})',
                          'layers': f'get_layers({identifier!r})',
                          'behavioral_readout_layer': repr(bs.candidate_layers(name)[-1]), 'visual_degrees': '8'}
        assert bs.candidate_layers(name)[-1] == bs.BEHAVIORAL_READOUT_LAYER == 'global_pool'


def test_registry_entry_builds_the_commitment_it_names(monkeypatch):
    """The committed __init__.py run against stand-ins for brainscore_vision: the lambda hands ModelCommitment
    the identifier, the model's wrapper, the candidate layers, the average pool as readout and 8 degrees."""
    import sys
    import types
    registry, made = {}, []
    fake = types.ModuleType('brainscore_vision')
    fake.model_registry = registry
    transformation = types.ModuleType('brainscore_vision.model_helpers.brain_transformation')
    transformation.ModelCommitment = lambda **kwargs: made.append(kwargs) or kwargs
    for module_name, module in (('brainscore_vision', fake),
                                ('brainscore_vision.model_helpers', types.ModuleType('brainscore_vision.model_helpers')),
                                ('brainscore_vision.model_helpers.brain_transformation', transformation)):
        monkeypatch.setitem(sys.modules, module_name, module)
    name = 'lc_resnet18_half_ws10'
    identifier = bs.plugin_identifier(name)
    package = f'_bsplugin_init_{identifier}'
    import importlib.util
    spec = importlib.util.spec_from_file_location(package, _committed(name) / '__init__.py',
                                                  submodule_search_locations=[str(_committed(name))])
    plugin = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, package, plugin)
    try:
        spec.loader.exec_module(plugin)
    finally:
        sys.modules.pop(package + '.model', None)
    assert list(registry) == [identifier]
    monkeypatch.setattr(plugin, 'get_model', lambda model_identifier: ('wrapper of', model_identifier))  # no Hub
    commitment = registry[identifier]()
    assert commitment == dict(identifier=identifier, activations_model=('wrapper of', identifier),
                              layers=bs.candidate_layers(name), behavioral_readout_layer='global_pool',
                              visual_degrees=bs.VISUAL_DEGREES)


def test_model_py_get_layers_get_bibtex_and_check_models_entry_points():
    """model.py's functions, imported as Brain-Score imports them: get_bibtex(model_identifier) returns the
    paper's BibTeX whatever identifier brainscore_vision passes (as upstream's plugins do: an error there only
    loses the citation); get_layers is the candidate list; get_model_list stays, as check_models reads it."""
    import importlib.util
    for name in ('conv_resnet18_half', 'lc_resnet18_half_ws10'):
        identifier = bs.plugin_identifier(name)
        spec = importlib.util.spec_from_file_location(f'_bsplugin_model_{identifier}', _committed(name) / 'model.py')
        model = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(model)  # imports timm and bioconv_timm only: no brainscore_vision, no download
        assert model.get_bibtex(identifier) == model.get_bibtex('brainscore_vision passes another name') \
            == bs.plugin.BIBTEX
        assert model.get_layers(identifier) == bs.candidate_layers(name) and model.get_model_list() == [identifier]
        assert model.HF_HUB_REPO == f'bioconv-timm/{name}.in1k'
        with pytest.raises(AssertionError):
            model.get_layers('other')


def _meta_counts(name):
    import timm
    import torch
    with torch.device('meta'):
        model = timm.create_model(name)
    params = list(model.parameters())
    return dict(total_parameter_count=sum(p.numel() for p in params),
                trainable_parameter_count=sum(p.numel() for p in params),
                total_layers=len(list(model.modules())), trainable_layers=sum(p.dim() > 1 for p in params),
                model_size_mb=round(4 * sum(p.numel() for p in params) / 1e6, 2))


def test_every_plugin_ships_metadata_with_its_hub_link():
    """metadata.yml, as Brain-Score's generator writes it (the legacy schema's 13 fields, in its order), with the
    counts it computes and the Hub repo model.py loads as huggingface_link (its own generator would write
    null: it looks for huggingface.co/<identifier>)."""
    import yaml
    fields = ['architecture', 'model_family', 'total_parameter_count', 'trainable_parameter_count', 'total_layers',
              'trainable_layers', 'model_size_mb', 'training_dataset', 'task_specialization', 'brainscore_link',
              'huggingface_link', 'extra_notes', 'runnable']
    assert list(bs.metadata.MODEL_METADATA_FIELDS) == fields
    for name in bs.PLUGIN_MODELS:
        identifier = bs.plugin_identifier(name)
        folder = _committed(name)
        assert not (folder / 'metadata.yaml').exists()  # one file: Brain-Score refuses a plugin with both
        data = yaml.safe_load((folder / 'metadata.yml').read_text())
        assert list(data) == ['models'] and list(data['models']) == [identifier]
        entry = data['models'][identifier]
        assert list(entry) == fields
        hub_repo = re.search(r"HF_HUB_REPO = '([^']+)'", (folder / 'model.py').read_text()).group(1)
        assert entry['huggingface_link'] == f'https://huggingface.co/{hub_repo}' == \
            f'https://huggingface.co/bioconv-timm/{name}.in1k'
        assert entry['brainscore_link'] == \
            f'https://github.com/brain-score/vision/tree/master/brainscore_vision/models/{identifier}'
        assert {k: entry[k] for k in _meta_counts(name)} == _meta_counts(name)
        assert (entry['architecture'], entry['model_family'], entry['training_dataset'], entry['runnable']) == \
            ('DCNN', 'resnet', 'imagenet-1k', True)
        assert bs.PAPER_TABLE3[name]['label'] in entry['extra_notes'] and hub_repo in entry['extra_notes']
    lc = yaml.safe_load((_committed('lc_resnet18_half_ws10') / 'metadata.yml').read_text())
    assert lc['models']['bioconv_lc_resnet18_half_ws10']['total_parameter_count'] > 4e8  # LC: ~483M parameters
    # another repo (--hub-repo) is the link; a repo without a known tag names no training data
    files = bs.plugin_files('lc_resnet18_half_ws10', hub_repo='someone/my-ws10')
    entry = yaml.safe_load(files['metadata.yml'])['models']['bioconv_lc_resnet18_half_ws10']
    assert entry['huggingface_link'] == 'https://huggingface.co/someone/my-ws10' and entry['training_dataset'] is None
    other = yaml.safe_load(bs.plugin_files('lc_mobilenetv3_small_050_ws10')['metadata.yml'])
    assert other['models']['bioconv_lc_mobilenetv3_small_050_ws10']['model_family'] == 'mobilenet'


def test_brainscores_own_tools_read_the_plugin_as_generated():
    """brainscore_core's metadata check accepts each metadata.yml; brainscore_vision's generator finds the
    registered identifier and computes the same fields (but huggingface_link, training data and notes, which it
    leaves empty)."""
    handle_metadata = pytest.importorskip('brainscore_core.plugin_management.handle_metadata')
    vision = pytest.importorskip('brainscore_vision.plugin_management.vision_domain_plugin')
    import timm
    import torch
    import yaml
    plugin = vision.VisionDomainPlugin()
    plugin.get_huggingface_link = lambda model_name: None  # it asks huggingface.co; nothing here needs the network
    for name in bs.PLUGIN_MODELS:
        identifier = bs.plugin_identifier(name)
        folder = _committed(name)
        errors, _ = handle_metadata.validate_metadata_file(str(folder / 'metadata.yml'))
        assert errors == []
        assert plugin.find_registered_models(str(folder)) == [identifier]
        with torch.device('meta'):
            model = timm.create_model(name)
        theirs = plugin.create_model_metadata(model, identifier, identifier)
        ours = yaml.safe_load((folder / 'metadata.yml').read_text())['models'][identifier]
        assert list(theirs) == list(ours)
        assert {k for k in theirs if theirs[k] != ours[k]} == {'huggingface_link', 'training_dataset', 'extra_notes'}


def _website_accepts(path):
    """brain-score.org's upload check as its form applies it: folder entries at fixed depths."""
    with zipfile.ZipFile(path) as archive:
        names = [i.filename for i in archive.infolist()]
    plugin_types = {n.split('/')[1] for n in names if n.endswith('/') and n.count('/') == 2}
    instances = [n.split('/')[2] for n in names if n.endswith('/') and n.count('/') == 3 and n.split('/')[1] == 'models']
    return 'models' in plugin_types and instances and all(
        {'__init__.py', 'test.py'} <= {n.split('/')[-1] for n in names if n.split('/')[-2] == i} for i in instances)


def test_submission_zip_passes_the_rules(tmp_path, capsys):
    out = tmp_path / 'sub.zip'
    assert main(['brainscore', 'submission', '--model', 'lc_resnet18_half_ws10', '--output', str(out)]) == 0
    assert 'bioconv_brainscore/models/bioconv_lc_resnet18_half_ws10/model.py' in capsys.readouterr().out
    assert bs.check_submission_zip(out) == []
    assert out.stat().st_size <= bs.MAX_SUBMISSION_BYTES
    assert _website_accepts(out)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert names[0] == 'bioconv_brainscore/'
        base = 'bioconv_brainscore/models/bioconv_lc_resnet18_half_ws10/'
        for rel in ('model.py', 'metadata.yml'):
            assert archive.read(base + rel).decode() == (PLUGIN_DIR / 'bioconv_lc_resnet18_half_ws10' / rel).read_text()
    assert not any(n.endswith(bs.WEIGHT_SUFFIXES) for n in names)

    # several models in one zip, and a region-layer map taken from a score JSON
    score_json = tmp_path / 'score.json'
    full = {'V1': 'layer1.0', 'V2': 'layer1.1', 'V4': 'layer3.0', 'IT': 'layer4.1'}
    score_json.write_text(json.dumps({'model': 'conv_resnet18_half', 'region_layer_map': full}))
    single = bs.build_submission('conv_resnet18_half', tmp_path / 'one.zip', region_layer_map=score_json)
    with zipfile.ZipFile(single) as archive:
        mapping = json.loads(archive.read('bioconv_brainscore/models/bioconv_conv_resnet18_half/region_layer_map/'
                                          'bioconv_conv_resnet18_half.json'))
    assert mapping == full
    both = bs.build_submission(list(bs.PLUGIN_MODELS), tmp_path / 'all.zip')
    assert bs.check_submission_zip(both) == [] and _website_accepts(both)
    with pytest.raises(bs.BrainScoreError, match='one model'):
        bs.build_submission(['conv_resnet18_half', 'lc_resnet18_half'], tmp_path / 'x.zip', hub_repo='me/x')


def test_a_submission_that_fails_its_check_leaves_the_previous_zip(tmp_path, monkeypatch):
    out = tmp_path / 'sub.zip'
    out.write_bytes(b'the previous zip')
    monkeypatch.setattr(bs.submission, 'check_submission_zip', lambda path, raise_on_error=False: ['broken'])
    with pytest.raises(bs.SubmissionError, match='broken'):
        bs.build_submission('lc_resnet18_half_ws10', out, plugin_dir=None)
    # written to a temporary file and checked there: the old zip stays, no temporary file is left
    assert out.read_bytes() == b'the previous zip' and [p.name for p in tmp_path.iterdir()] == ['sub.zip']
    monkeypatch.undo()
    assert bs.build_submission('lc_resnet18_half_ws10', out, plugin_dir=None) == out
    assert zipfile.is_zipfile(out) and [p.name for p in tmp_path.iterdir()] == ['sub.zip']


def _zip(path, entries):
    with zipfile.ZipFile(path, 'w') as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


GOOD_INIT = "model_registry['bioconv_x'] = lambda: None\n"


def _entries(plugin='bioconv_x', init=GOOD_INIT, extra=(), drop=()):
    base = f'root/models/{plugin}/'
    entries = [('root/', ''), ('root/models/', ''), (base, ''), (base + '__init__.py', init), (base + 'model.py', ''),
               (base + 'test.py', ''), (base + 'requirements.txt', 'bioconv-timm\n')]
    return [e for e in entries if e[0].rsplit('/', 1)[-1] not in drop] + list(extra)


def test_check_submission_zip_rejects_broken_submissions(tmp_path):
    assert bs.check_submission_zip(_zip(tmp_path / 'ok.zip', _entries())) == []
    cases = {
        'weights': (_entries(extra=[('root/models/bioconv_x/model.safetensors', b'0' * 10)]), 'weight'),
        'big file': (_entries(extra=[('root/models/bioconv_x/blob.txt', b'0' * (bs.MAX_PLUGIN_FILE_BYTES + 1))]), 'code only'),
        'no test': (_entries(drop=('test.py',)), 'has no test.py'),
        'no init': (_entries(drop=('__init__.py',)), 'has no __init__.py'),
        'hyphen': (_entries(plugin='bioconv-x', init="model_registry['bioconv-x'] = 1\n"), 'no hyphens'),
        'registry mismatch': (_entries(init="model_registry['other'] = 1\n"), 'exactly once'),
        'no root folder': ([e for e in _entries() if e[0] != 'root/'], 'root folder'),
        'no models folder': ([('root/', ''), ('root/x.py', '')], 'models/'),
        'bad map': (_entries(extra=[('root/models/bioconv_x/region_layer_map/bioconv_x.json', '{"V9": 1}')]), 'JSON object'),
        'partial map': (_entries(extra=[('root/models/bioconv_x/region_layer_map/bioconv_x.json', '{"IT": "a"}')]),
                        'each of V1, V2, V4 and IT'),
        'escape': (_entries(extra=[('root/../evil.py', '')]), 'unsafe path'),
    }
    for label, (entries, message) in cases.items():
        problems = bs.check_submission_zip(_zip(tmp_path / f'{label}.zip', entries), raise_on_error=False)
        assert any(message in p for p in problems), (label, problems)
    too_big = _zip(tmp_path / 'big.zip', _entries())
    with pytest.raises(bs.SubmissionError, match='MB, more than'):
        bs.check_submission_zip(too_big, max_bytes=too_big.stat().st_size - 1)
    (tmp_path / 'junk.zip').write_bytes(b'not a zip')
    assert any('not a zip' in p for p in bs.check_submission_zip(tmp_path / 'junk.zip', raise_on_error=False))


def test_check_submission_zip_reads_metadata_as_brainscore_does(tmp_path):
    """A plugin's metadata file in a zip: accepted as metadata.yml or metadata.yaml (Brain-Score reads both;
    upstream's plugins have both names), refused where Brain-Score's metadata check or its database would
    refuse it, and refused for a model the plugin does not register."""
    base = 'root/models/bioconv_x/'
    good = "models:\n    bioconv_x:\n        architecture: DCNN\n        huggingface_link: https://huggingface.co/o/r\n"
    for name in ('metadata.yml', 'metadata.yaml'):
        assert bs.check_submission_zip(_zip(tmp_path / f'{name}.zip', _entries(extra=[(base + name, good)]))) == []
    v2 = "schema_version: '2.0'\nmodels:\n    bioconv_x: {}\n"  # left to brainscore_core's own schema-2.0 check
    assert bs.check_submission_zip(_zip(tmp_path / 'v2.zip', _entries(extra=[(base + 'metadata.yml', v2)]))) == []
    cases = {
        'both names': ([(base + 'metadata.yml', good), (base + 'metadata.yaml', good)], 'has both metadata.yml and'),
        'not yaml': ([(base + 'metadata.yml', 'models: [unclosed')], 'not YAML'),
        'no models': ([(base + 'metadata.yml', 'benchmarks: {}\n')], 'needs a models: section'),
        'other top level': ([(base + 'metadata.yml', good + 'extra: 1\n')], "top-level key 'extra' is not allowed"),
        'unknown field': ([(base + 'metadata.yml', good + '        weights_url: x\n')],
                          "has keys Brain-Score does not allow: weights_url"),
        'not registered': ([(base + 'metadata.yml', good.replace('bioconv_x', 'bioconv_y'))],
                           "names 'bioconv_y', which the plugin does not register (it registers bioconv_x)"),
        'too long': ([(base + 'metadata.yml', good + '        training_dataset: ' + 'x' * 101 + '\n')],
                     'training_dataset is 101 characters, more than the 100 Brain-Score stores'),
    }
    for label, (extra, message) in cases.items():
        problems = bs.check_submission_zip(_zip(tmp_path / f'{label}.zip', _entries(extra=extra)), raise_on_error=False)
        assert any(message in p for p in problems), (label, problems)


def test_missing_benchmark_data_names_every_file(tmp_path):
    missing = bs.missing_benchmark_data(bs.BENCHMARKS, home=tmp_path)
    assert list(missing) == list(bs.BENCHMARKS)
    assert [f.filename for f in missing['IT']] == ['assy_dicarlo_MajajHong2015_public.nc', 'stimulus_hvm-public.csv',
                                                   'stimulus_hvm-public.zip']
    assert missing['V1'][0].path(tmp_path) == tmp_path / '761c08f796db4e342555cdb60eef23a4f19ead43' / \
        'assy_movshon_FreemanZiemba2013_public.nc'
    assert {f.name for f in missing['behavior']} == {'Rajalingham2018.public', 'objectome.public'}
    for f in missing['V4']:  # put the MajajHong2015 files in place: V4 and IT are complete, the others not
        f.path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
        f.path(tmp_path).write_bytes(b'')
    assert list(bs.missing_benchmark_data(bs.BENCHMARKS, home=tmp_path)) == ['V1', 'V2', 'behavior']
    with pytest.raises(bs.BrainScoreError, match='unknown benchmark'):
        bs.scoring._parse_benchmarks('V1,MT')
    assert bs.scoring._parse_benchmarks('it, MajajHong2015public.V4-pls,V1') == ['V1', 'V4', 'IT']


def test_score_table_has_table3_shape():
    result = bs.ScoreResult(model='lc_resnet18_half_ws10', identifier='x', weights=None, weights_sha1=None,
                            random_init=True, seed=0, benchmarks={}, scores={'V1': 0.5, 'V2': 0.25, 'V4': 0.5, 'IT': 0.25})
    assert result.average is None  # the paper's average needs all five
    result.scores['behavior'] = 0.5
    assert result.average == pytest.approx(0.4)
    table = bs.format_score_table([result]).splitlines()
    assert table[0] == '| model | data | average | V1 | V2 | V4 | IT | behavior |'
    assert 'RANDOM INIT' in table[2] and '| .400 | .500 | .250 | .500 | .250 | .500 |' in table[2]
    assert table[3].startswith('| paper Table 3: LC, ws 10') and '| .385 | .508 | .322 | .478 | .399 | .216 |' in table[3]


def test_readme_brainscore_commands_parse():
    readme = (REPO / 'README.md').read_text()
    commands = [line.split('#')[0].strip() for block in re.findall(r'```bash\n(.*?)```', readme, flags=re.S)
                for line in block.splitlines() if line.strip().startswith('bioconv brainscore')]
    assert {c.split()[2] for c in commands} == {'score', 'submission'}
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.func is brainscore_cli.run
    assert 'pip install -e ".[dev,brainscore]"' in readme


def _zip_with(path, extra_infos):
    """_entries() plus raw ZipInfo entries (symlinks, special files, duplicates), as a hostile tool writes them."""
    import warnings
    with zipfile.ZipFile(path, 'w') as archive, warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # zipfile warns on a duplicate name, and writes it anyway
        for name, data in _entries():
            archive.writestr(name, data)
        for info, data in extra_infos:
            archive.writestr(info, data)
    return path


def _info(name, mode):
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16  # Unix mode in the high 16 bits, as zip -y writes a link
    return info


def test_check_submission_zip_refuses_links_duplicates_and_unsafe_paths(tmp_path):
    import stat
    base = 'root/models/bioconv_x/'
    link = _zip_with(tmp_path / 'link.zip', [(_info(base + 'keys', stat.S_IFLNK | 0o777), '../../../../root/.ssh')])
    with pytest.raises(bs.SubmissionError, match=r"symbolic link in zip: 'root/models/bioconv_x/keys' -> "
                                                 r"'\.\./\.\./\.\./\.\./root/\.ssh'"):
        bs.check_submission_zip(link)
    fifo = _zip_with(tmp_path / 'fifo.zip', [(_info(base + 'pipe', stat.S_IFIFO | 0o644), '')])
    assert any('not a regular file or folder' in p for p in bs.check_submission_zip(fifo, raise_on_error=False))
    duplicate = _zip_with(tmp_path / 'dup.zip', [(_info(base + 'model.py', stat.S_IFREG | 0o644), 'import os\n')])
    problems = bs.check_submission_zip(duplicate, raise_on_error=False)
    assert f"duplicate entry in zip: '{base}model.py' appears 2 times" in '\n'.join(problems), problems
    for name in ('/etc/cron.d/x', 'root/../../x.py', 'C:/x.py', 'root\\..\\x.py'):
        unsafe = _zip_with(tmp_path / 'unsafe.zip', [(_info(name, stat.S_IFREG | 0o644), '')])
        assert any(p.startswith(f'unsafe path in zip: {name!r}') for p in
                   bs.check_submission_zip(unsafe, raise_on_error=False)), name
    # plain files and folders from build_submission (and mode-less entries from non-Unix tools) still pass
    assert bs.check_submission_zip(_zip_with(tmp_path / 'ok.zip', [(_info(base + 'util.py', 0), '')])) == []


def test_committed_region_layer_map_is_kept_checked_and_submitted(tmp_path, capsys):
    """The region_layer_map/ folder a score run writes, copied into a plugin folder: the template keeps it,
    the submission builder puts it in the zip, and a map that leaves regions out is refused everywhere."""
    plugins = tmp_path / 'brainscore_plugin'
    assert main(['brainscore', 'plugins', '--output-dir', str(plugins)]) == 0
    identifier = 'bioconv_lc_resnet18_half_ws10'
    committed = plugins / identifier / 'region_layer_map' / f'{identifier}.json'
    committed.parent.mkdir()
    full = {'V1': 'maxpool', 'V2': 'layer1.1', 'V4': 'layer3.0', 'IT': 'layer4.0'}
    committed.write_text(json.dumps(full, indent=4) + '\n')
    assert bs.stale_plugin_files(plugins) == [] and bs.committed_region_layer_map(plugins, 'lc_resnet18_half_ws10') == committed
    assert main(['brainscore', 'plugins', '--output-dir', str(plugins)]) == 0 and json.loads(committed.read_text()) == full

    capsys.readouterr()
    out = tmp_path / 'sub.zip'
    assert main(['brainscore', 'submission', '--model', 'lc_resnet18_half_ws10', '--plugin-dir', str(plugins),
                 '--output', str(out)]) == 0
    assert f'layers committed by region_layer_map/ for: {identifier}' in capsys.readouterr().out
    with zipfile.ZipFile(out) as archive:
        assert json.loads(archive.read(f'bioconv_brainscore/models/{identifier}/region_layer_map/{identifier}.json')) == full
    assert bs.check_submission_zip(out) == []
    other = bs.build_submission('lc_resnet18_half_ws1', tmp_path / 'ws1.zip', plugin_dir=plugins)  # it has no map
    with zipfile.ZipFile(other) as archive:
        assert not any('region_layer_map' in n for n in archive.namelist())
    assert main(['brainscore', 'submission', '--model', 'lc_resnet18_half_ws1', '--plugin-dir', str(plugins),
                 '--output', str(tmp_path / 'ws1b.zip')]) == 0
    assert "no region_layer_map/: Brain-Score chooses each region's layer" in capsys.readouterr().out

    committed.write_text(json.dumps({'V4': 'layer3.0', 'IT': 'layer4.0'}))  # scored on V4 and IT only
    assert main(['brainscore', 'plugins', '--check', '--output-dir', str(plugins)]) == 1
    assert f'{identifier}/region_layer_map/{identifier}.json (invalid: the region-layer map names V4, IT but not V1, V2' \
        in capsys.readouterr().out
    assert main(['brainscore', 'submission', '--model', 'lc_resnet18_half_ws10', '--plugin-dir', str(plugins),
                 '--output', str(tmp_path / 'bad.zip')]) == 2
    assert 'but not V1, V2' in capsys.readouterr().err and not (tmp_path / 'bad.zip').exists()


def test_layer_scores_table_rows_and_depth_plot():
    """What `bioconv brainscore score` writes about every candidate layer, from a result with four regions."""
    layers = bs.candidate_layers('lc_resnet18_half_ws10')
    scores = {region: {layer: round(0.1 + 0.05 * ((depth * (i + 1)) % 7), 3) for depth, layer in enumerate(layers)}
              for i, region in enumerate(bs.REGIONS)}
    chosen = {region: max(s, key=s.get) for region, s in scores.items()}
    result = bs.ScoreResult(model='lc_resnet18_half_ws10', identifier='x', weights='m.safetensors', weights_sha1='ab' * 20,
                            random_init=False, seed=0, benchmarks={}, scores={}, region_layer_map=chosen,
                            layer_scores=scores, layer_choice={r: 'chosen' for r in bs.REGIONS})
    rows = result.layer_rows()
    assert len(rows) == 4 * len(layers) and rows[0] == dict(region='V1', depth=0, layer='maxpool',
                                                            score=scores['V1']['maxpool'], chosen=chosen['V1'] == 'maxpool')
    assert [r['region'] for r in rows if r['chosen']] == list(bs.REGIONS)
    table = bs.format_layer_table(result).splitlines()
    assert table[0] == '| depth | layer | V1 | V2 | V4 | IT |' and len(table) == 2 + len(layers)
    assert table[2 + layers.index(chosen['IT'])].endswith(f'| {scores["IT"][chosen["IT"]]:.3f}* |')

    figure = bs.plot_layer_scores(result)
    ax = figure.axes[0]
    lines = [line for line in ax.get_lines() if line.get_label() in bs.REGIONS]  # one line per region
    assert [line.get_label() for line in lines] == list(bs.REGIONS)
    for line, region in zip(lines, bs.REGIONS):
        assert list(line.get_xdata()) == list(range(len(layers)))  # x: depth order
        assert list(line.get_ydata()) == list(scores[region].values())
    assert [t.get_text() for t in ax.get_xticklabels()] == layers
