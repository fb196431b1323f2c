"""check_submission_zip accepts exactly the valid layouts (drawn at random), and the Brain-Score writers refuse a bad
output path before any work, naming it (issue 23, L6 and L1's `brainscore submission --output` / `plugins
--output-dir`)."""
import re
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bioconv_timm import brainscore as bs
from bioconv_timm.cli import main

REQUIRED = ('__init__.py', 'model.py', 'test.py', 'requirements.txt')


def _write(path, names):
    """A zip of ``names`` in order: folders (ending in '/') empty, files with the content a plugin needs."""
    with zipfile.ZipFile(path, 'w') as archive:
        for name in names:
            if name.endswith('/'):
                archive.writestr(name, '')
            elif name.endswith('/__init__.py'):
                plugin = name.split('/')[-2]
                archive.writestr(name, f"model_registry['{plugin}'] = lambda: None\n")
            else:
                archive.writestr(name, 'x = 1\n')
    return path


def _expected_valid(names):
    """The layout rules, stated independently of the checker: one root folder first, holding only models/ (with
    its own folder entry), which holds only plugin folders; a plugin is any models/<id>/ that some entry's path
    goes through, and each has its own folder entry, an identifier of letters, digits and '_', and the four
    required files."""
    root = names[0]
    if not re.fullmatch(r'[^/]+/', root) or len(set(names)) != len(names):
        return False
    if not all(n.startswith(root) for n in names):
        return False
    rel = [n[len(root):] for n in names[1:]]
    if 'models/' not in rel:
        return False
    plugins = set()
    for r in rel:
        parts = r.rstrip('/').split('/')
        if parts[0] != 'models':
            return False
        if len(parts) == 1 and not r.endswith('/'):
            return False
        if len(parts) == 2 and not r.endswith('/'):
            return False  # a stray file directly in models/
        if len(parts) >= 2:
            plugins.add(parts[1])
    if not plugins:
        return False
    for p in plugins:
        if not re.fullmatch(r'[A-Za-z0-9_]+', p) or f'models/{p}/' not in rel:
            return False
        if not all(f'models/{p}/{f}' in rel for f in REQUIRED):
            return False
    return True


PLUGINS = st.lists(st.sampled_from(['bioconv_a', 'bioconv_b', 'bioconv_c']), min_size=1, max_size=3, unique=True)
EXTRA_FILES = st.lists(st.sampled_from(['util.py', 'sub/helper.py', 'sub/', 'README.md']), unique=True, max_size=2)
# ways to break a valid layout; each is applied to a random plugin or place
MUTATIONS = ('drop_plugin_folder_entry', 'drop_models_entry', 'drop_required_file', 'hyphen_plugin',
             'stray_in_models', 'stray_in_root', 'other_folder_in_root', 'file_outside_root', 'nested_root',
             'implied_plugin')


@st.composite
def layouts(draw):
    """A valid submission layout (plugins with their folder entry, the four files and maybe more), broken by zero
    to two drawn mutations, the entries after the root in a drawn order: about half the draws are valid."""
    root = draw(st.sampled_from(['bioconv_brainscore/', 'other/']))
    entries = {'models/': None}
    for plugin in draw(PLUGINS):
        entries[f'models/{plugin}/'] = plugin
        for f in REQUIRED + tuple(draw(EXTRA_FILES)):
            entries[f'models/{plugin}/{f}'] = plugin
    rel = list(entries)
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2, unique=True)):
        plugins = sorted({r.split('/')[1] for r in rel if r.count('/') >= 2})
        victim = draw(st.sampled_from(plugins)) if plugins else 'bioconv_a'
        if mutation == 'drop_plugin_folder_entry':
            rel = [r for r in rel if r != f'models/{victim}/']
        elif mutation == 'drop_models_entry':
            rel = [r for r in rel if r != 'models/']
        elif mutation == 'drop_required_file':
            missing = draw(st.sampled_from(REQUIRED))
            rel = [r for r in rel if r != f'models/{victim}/{missing}']
        elif mutation == 'hyphen_plugin':
            rel = [r.replace(f'models/{victim}/', 'models/evil-plugin/') for r in rel]
        elif mutation == 'stray_in_models':
            rel.append(draw(st.sampled_from(['models/run_me.py', 'models/README.md'])))
        elif mutation == 'stray_in_root':
            rel.append(draw(st.sampled_from(['setup.py', 'README.md'])))
        elif mutation == 'other_folder_in_root':
            rel.append(draw(st.sampled_from(['benchmarks/', 'data/x.py'])))
        elif mutation == 'file_outside_root':
            rel.append('../elsewhere.py')
        elif mutation == 'nested_root':
            root = 'a/b/'
        elif mutation == 'implied_plugin':  # the case: a plugin only its file implies
            rel.append('models/evil_plugin/model.py')
    rel = draw(st.permutations(rel))
    return [root] + [root + r if not r.startswith('../') else r[3:] for r in rel]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=layouts())
def test_checker_accepts_exactly_the_valid_layouts(tmp_path, names):
    problems = bs.check_submission_zip(_write(tmp_path / 'sub.zip', names), raise_on_error=False)
    assert (problems == []) == _expected_valid(names), (names, problems)


def test_a_plugin_without_its_folder_entry_and_stray_files_are_refused(tmp_path):
    """The two layouts the issue found passing: a plugin that only its files imply, and a file in models/."""
    good = ['bioconv_brainscore/', 'bioconv_brainscore/models/', 'bioconv_brainscore/models/bioconv_a/'] + \
        [f'bioconv_brainscore/models/bioconv_a/{f}' for f in REQUIRED]
    assert bs.check_submission_zip(_write(tmp_path / 'good.zip', good)) == []
    evil = good + ['bioconv_brainscore/models/evil-plugin/model.py']
    with pytest.raises(bs.SubmissionError) as info:
        bs.check_submission_zip(_write(tmp_path / 'evil.zip', evil))
    problems = '\n'.join(info.value.problems)
    assert "plugin identifier 'evil-plugin' must contain only letters" in problems
    assert 'bioconv_brainscore/models/evil-plugin/ has no folder entry of its own' in problems
    assert 'bioconv_brainscore/models/evil-plugin/ has no __init__.py' in problems
    stray = good + ['bioconv_brainscore/models/run_me.py']
    problems = bs.check_submission_zip(_write(tmp_path / 'stray.zip', stray), raise_on_error=False)
    assert problems == ["'bioconv_brainscore/models/run_me.py': a file directly in models/ belongs to no plugin; put "
                        'it in a models/<identifier>/ folder or remove it']
    beside = good + ['bioconv_brainscore/setup.py']
    problems = bs.check_submission_zip(_write(tmp_path / 'beside.zip', beside), raise_on_error=False)
    assert problems == ["'bioconv_brainscore/setup.py': the root folder holds only models/ (a bioconv submission is "
                        'model plugins); remove it']


# --- output paths: refused before any work, naming the path and the fix --------------------------------------

def test_build_submission_refuses_a_folder_or_an_unwritable_output(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bs.submission, 'plugin_files', lambda *a, **k: calls.append(a) or {})
    folder = tmp_path / 'out'
    folder.mkdir()
    with pytest.raises(bs.BrainScoreError, match=re.escape(
            f'--output {folder} is a folder: pass the name of the file to write, e.g. '
            f'{folder}/brainscore-submission-lc_resnet18_half_ws10.zip')):
        bs.build_submission('lc_resnet18_half_ws10', folder)
    with pytest.raises(bs.BrainScoreError, match=r'--output /proc/sub\.zip: cannot write in /proc \(.*\); pass a '
                                                 r'path in a folder you can write to\.'):
        bs.build_submission('lc_resnet18_half_ws10', '/proc/sub.zip')
    a_file = tmp_path / 'a_file'
    a_file.write_text('mine')
    with pytest.raises(bs.BrainScoreError, match=re.escape(
            f'--output {a_file}/x/sub.zip: {a_file} is a file, not a folder')):
        bs.build_submission('lc_resnet18_half_ws10', a_file / 'x' / 'sub.zip')
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ['a_file', 'out'] and not any(folder.iterdir())
    assert a_file.read_text() == 'mine'


def test_write_plugins_refuses_a_file_or_an_unwritable_output_dir(tmp_path):
    a_file = tmp_path / 'plugins'
    a_file.write_text('mine')
    with pytest.raises(bs.BrainScoreError, match=re.escape(
            f'--output-dir {a_file} is a file, not a folder: pass a new or existing folder to write into.')):
        bs.write_plugins(a_file)
    with pytest.raises(bs.BrainScoreError, match=r'--output-dir /proc/plugins: cannot write in /proc'):
        bs.write_plugins('/proc/plugins')
    assert a_file.read_text() == 'mine' and [p.name for p in tmp_path.iterdir()] == ['plugins']


def test_cli_paths_are_one_line_errors(tmp_path, capsys):
    """From the command line: exit 2 and one line naming the path and what is wrong, no traceback, nothing
    written."""
    folder = tmp_path / 'out'
    folder.mkdir()
    assert main(['brainscore', 'submission', '--model', 'lc_resnet18_half_ws10', '--output', str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('bioconv brainscore submission: error: ') and err.count('\n') == 1, err
    assert f'{folder} is a folder: pass the name of the file to write' in err
    a_file = tmp_path / 'f'
    a_file.write_text('')
    assert main(['brainscore', 'plugins', '--output-dir', str(a_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('bioconv brainscore plugins: error: ') and err.count('\n') == 1, err
    assert f'{a_file} is a file, not a folder' in err
    assert main(['brainscore', 'submission', '--model', 'lc_resnet18_half_ws10', '--output', '/proc/x.zip']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and '/proc/x.zip' in err and 'cannot write in /proc' in err, err
    assert not any(folder.iterdir()) and a_file.read_text() == ''
