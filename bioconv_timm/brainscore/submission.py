"""The zip brain-score.org's upload form accepts: :func:`build_submission` writes it from the plugin template,
:func:`check_submission_zip` checks any zip against the website's rules."""
from __future__ import annotations

import collections
import json
import os
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .._atomic import atomic_path
from ..output_paths import check_output_file
from .benchmarks import REGIONS
from .errors import BrainScoreError
from .metadata import METADATA_FILES, metadata_problems
from .naming import check_model_name, plugin_identifier
from .plugin import DEFAULT_REQUIREMENT, plugin_files
from .region_layers import committed_region_layer_map

__all__ = ['SubmissionError', 'MAX_SUBMISSION_BYTES', 'build_submission', 'check_submission_zip']

PathLike = Union[str, 'os.PathLike[str]']

SUBMISSION_ROOT = 'bioconv_brainscore'
MAX_SUBMISSION_BYTES = 50 * 1000 * 1000  # brain-score.org's upload limit (50 MB)
WEIGHT_SUFFIXES = ('.safetensors', '.pth', '.pt', '.ckpt', '.bin', '.h5', '.hdf5', '.npz', '.npy', '.pkl',
                   '.pickle', '.onnx', '.tar', '.mat')
MAX_PLUGIN_FILE_BYTES = 1_000_000  # no code file of a plugin is this big; a bigger file is data or weights
ZIP_DATE = (2021, 12, 6, 0, 0, 0)  # every entry's timestamp: the same models give the same zip


class SubmissionError(BrainScoreError):
    """A submission zip breaks one of brain-score.org's rules (``problems`` lists each)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def build_submission(models: Union[str, Sequence[str]], output: Optional[PathLike] = None,
                     region_layer_map: Union[None, PathLike, Mapping[str, str]] = None,
                     hub_repo: Optional[str] = None, requirement: str = DEFAULT_REQUIREMENT,
                     plugin_dir: Optional[PathLike] = 'brainscore_plugin') -> Path:
    """Write the zip brain-score.org's upload form accepts and check it with ``check_submission_zip``.

    Layout: ``bioconv_brainscore/models/<identifier>/{__init__.py, model.py, test.py, requirements.txt,
    metadata.yml}`` (plus ``region_layer_map/<identifier>.json``), with explicit directory entries. The map is ``region_layer_map``
    when given (a {region: layer} for all four regions, or a JSON file such as the one ``score`` writes), else
    the one committed in ``plugin_dir/<identifier>/region_layer_map/`` when that file exists; without either,
    Brain-Score chooses the layers. ``hub_repo`` and ``region_layer_map`` apply to a single model only.
    ``output`` must be a file name (not an existing folder) in a folder that can be written or created; a bad
    one is a :class:`BrainScoreError` naming it, raised before anything is built.
    """
    names = [models] if isinstance(models, str) else list(models)
    if not names:
        raise BrainScoreError('no model given')
    if len(names) > 1 and (hub_repo or region_layer_map):
        raise BrainScoreError('--hub-repo and --region-layer-map describe one model; build one zip per model')
    for name in names:
        check_model_name(name)
    default_name = f'brainscore-submission-{names[0] if len(names) == 1 else "bioconv"}.zip'
    # a folder, or a place nothing can be written, is refused before the plugins are built
    output = check_output_file(output, BrainScoreError, flag='--output ', example=default_name) if output \
        else Path(default_name)
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
    with atomic_path(output) as tmp:  # replaces ``output`` only once the zip is written and checked
        _write_zip(tmp, entries)
        problems = check_submission_zip(tmp, raise_on_error=False)
        if problems:
            raise SubmissionError('the generated submission breaks the rules:\n  ' + '\n  '.join(problems), problems)
    return output


def _write_zip(path: Path, entries: Mapping[str, Optional[str]]) -> None:
    """A zip of ``entries`` ({name: text}, None for a folder), in their order: root first, parents before
    children; folders 0755 with explicit entries, files 0644, deflated, all dated :data:`ZIP_DATE`."""
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in entries.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            if text is None:
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b'')
            else:
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, text.encode())


def check_submission_zip(path: PathLike, max_bytes: int = MAX_SUBMISSION_BYTES, raise_on_error: bool = True) -> List[str]:
    """Check a submission zip against brain-score.org's rules; returns the problems (raises if any and asked to).

    The rules: the file is at most 50 MB; the first entry is one root folder holding every other entry; the
    root holds ``models/`` and nothing else; ``models/`` holds plugin folders only (no stray files); the plugin
    folders are derived from every entry's path, so a plugin that only its files imply is found too, and each
    needs its own folder entry (the website's upload check reads the folder entries); every
    ``models/<identifier>/`` folder has ``__init__.py`` and ``test.py`` (that upload check), plus
    ``model.py`` and ``requirements.txt``; the identifier has no hyphens (letters, digits, '_'), equals the
    folder name and is registered exactly once with ``model_registry['<identifier>']``; no weight files
    (by suffix, or any file over 1 MB): weights are downloaded from elsewhere; a ``region_layer_map`` JSON
    maps each of V1, V2, V4 and IT to a layer; the optional ``metadata.yml`` (or ``metadata.yaml``, not both) is
    what Brain-Score's metadata check accepts (a ``models:`` section of the allowed fields, strings that fit its
    database) and describes only models the plugin registers. Every entry is a plain file or folder with a relative path inside the root,
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
        problems += _path_problems(names, root)
        problems += _duplicate_problems(names)
        problems += _entry_kind_problems(archive, infos)
        plugins, layout_problems = _plugin_layout(names, root)
        problems += layout_problems
        for plugin in plugins:
            problems += _plugin_problems(archive, names, f'{root}models/{plugin}/', plugin)
        problems += _weight_problems(infos)
    return _report(problems, raise_on_error)


def _path_problems(names: Sequence[str], root: str) -> List[str]:
    """Entries whose path could land outside the folder unzip writes to, or outside the root folder."""
    problems = []
    for name in names:
        p = PurePosixPath(name)
        if name.startswith('/') or '..' in p.parts or '\\' in name or re.match(r'[A-Za-z]:', name):
            problems.append(f'unsafe path in zip: {name!r} (absolute, with a drive letter, a backslash or "..")')
        elif not name.startswith(root):
            problems.append(f'{name!r} is outside the root folder {root!r}')
    return problems


def _duplicate_problems(names: Sequence[str]) -> List[str]:
    """Names written more than once (which copy unzip keeps is up to the tool)."""
    return [f'duplicate entry in zip: {name!r} appears {count} times (unzip tools disagree on which copy wins); '
            'write each file once' for name, count in collections.Counter(names).items() if count > 1]


def _entry_kind_problems(archive: zipfile.ZipFile, infos: Sequence[zipfile.ZipInfo]) -> List[str]:
    """Entries that are not a plain file or folder: symbolic links (unzip recreates them), devices, pipes."""
    problems = []
    for info in infos:
        kind = stat.S_IFMT(info.external_attr >> 16)  # Unix mode in the high 16 bits; 0 from non-Unix zips
        if kind == stat.S_IFLNK:
            target = archive.read(info).decode('utf-8', 'replace')
            problems.append(f'symbolic link in zip: {info.filename!r} -> {target!r} (unzip would create the '
                            'link); store the file itself')
        elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            problems.append(f'{info.filename!r} is not a regular file or folder (mode {oct(kind)})')
    return problems


def _plugin_layout(names: Sequence[str], root: str) -> Tuple[List[str], List[str]]:
    """(the plugin identifiers under ``<root>models/``, in order of appearance; the layout's problems).

    The layout is derived from every entry's path, files included: a plugin folder that only its files imply
    (no folder entry of its own) is still a plugin, and is checked like the others."""
    problems: List[str] = []
    plugins: List[str] = []
    has_models = False
    for name in names[1:]:
        if not name.startswith(root):
            continue  # reported by _path_problems
        parts = name[len(root):].rstrip('/').split('/')
        is_dir = name.endswith('/')
        if any(part in ('', '.') for part in parts):
            problems.append(f'{name!r}: empty or "." path component')
        elif parts[0] != 'models':
            problems.append(f'{name!r}: the root folder holds only models/ (a bioconv submission is model '
                            'plugins); remove it')
        elif len(parts) == 1:
            has_models = has_models or is_dir
            if not is_dir:
                problems.append(f'{name!r}: models must be a folder')
        elif len(parts) == 2 and not is_dir:
            problems.append(f'{name!r}: a file directly in models/ belongs to no plugin; put it in a '
                            'models/<identifier>/ folder or remove it')
        elif parts[1] not in plugins:
            plugins.append(parts[1])
    if not has_models:
        problems.append(f'no "{root}models/" folder entry (the plugin folders go in models/)')
    elif not plugins:
        problems.append('the models/ folder is empty')
    present = set(names)
    problems += [f'{root}models/{plugin}/ has no folder entry of its own (the website\'s upload check reads the '
                 'folder entries, so it would not see this plugin)'
                 for plugin in plugins if f'{root}models/{plugin}/' not in present]
    return plugins, problems


def _plugin_problems(archive: zipfile.ZipFile, names: Sequence[str], base: str, plugin: str) -> List[str]:
    """One plugin folder ``base`` (``<root>models/<plugin>/``): its identifier, required files, registration,
    metadata and region-layer map."""
    present = set(names)
    problems = []
    if not re.fullmatch(r'[A-Za-z0-9_]+', plugin):
        problems.append(f'plugin identifier {plugin!r} must contain only letters, digits and "_" (no hyphens)')
    problems += [f'{base} has no {required}' for required in ('__init__.py', 'test.py', 'model.py', 'requirements.txt')
                 if base + required not in present]
    registrations: List[str] = []
    if base + '__init__.py' in present:
        init = archive.read(base + '__init__.py').decode('utf-8', 'replace').replace('"', "'")
        registrations = re.findall(r"model_registry\['([^']+)'\]", init)
        if registrations != [plugin]:
            problems.append(f'{base}__init__.py must register model_registry[\'{plugin}\'] exactly once '
                            f'(the folder name), found {registrations}')
    metadata = [base + name for name in METADATA_FILES if base + name in present]
    if len(metadata) > 1:
        problems.append(f'{base} has both {" and ".join(METADATA_FILES)}: Brain-Score\'s metadata check stops '
                        'on that; keep one')
    for name in metadata:
        problems.extend(metadata_problems(archive.read(name).decode('utf-8', 'replace'), name, registrations))
    for name in names:
        if name.startswith(base + 'region_layer_map/') and not name.endswith('/'):
            problems += _region_layer_map_problems(archive, name, base, plugin)
    return problems


def _region_layer_map_problems(archive: zipfile.ZipFile, name: str, base: str, plugin: str) -> List[str]:
    """A file in a plugin's region_layer_map/: it must be ``<plugin>.json``, mapping each region to a layer."""
    if name != f'{base}region_layer_map/{plugin}.json':
        return [f'{name}: the region-layer map must be region_layer_map/{plugin}.json']
    try:
        mapping = json.loads(archive.read(name))
    except Exception:  # not JSON, or not UTF-8: the same problem as a wrong shape
        mapping = None
    if not (isinstance(mapping, dict) and set(mapping) == set(REGIONS)
            and all(isinstance(v, str) for v in mapping.values())):
        return [f'{name} must be a JSON object mapping each of V1, V2, V4 and IT to a '
                'layer name (a committed map replaces the layer selection of every region)']
    return []


def _weight_problems(infos: Sequence[zipfile.ZipInfo]) -> List[str]:
    """Weight or data files (by suffix, or any file over 1 MB): a plugin downloads those at run time."""
    problems = []
    for info in infos:
        if info.is_dir():
            continue
        if info.filename.lower().endswith(WEIGHT_SUFFIXES):
            problems.append(f'{info.filename}: weight/data files do not belong in a submission (host weights '
                            'elsewhere, e.g. the Hugging Face Hub)')
        elif info.file_size > MAX_PLUGIN_FILE_BYTES:
            problems.append(f'{info.filename} is {info.file_size / 1e6:.1f} MB: plugins hold code only (weights '
                            'and data are downloaded at run time)')
    return problems


def _report(problems: List[str], raise_on_error: bool) -> List[str]:
    """``problems``, or a :class:`SubmissionError` listing them when there are any and ``raise_on_error``."""
    if problems and raise_on_error:
        raise SubmissionError('the submission zip breaks brain-score.org\'s rules:\n  ' + '\n  '.join(problems), problems)
    return problems
