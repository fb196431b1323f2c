"""Region -> layer maps: read and checked (a mapping, a JSON file, or a score JSON), written in the format
Brain-Score reads from a plugin's ``region_layer_map/<identifier>.json``, and found in a plugin folder."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

from .benchmarks import REGIONS
from .errors import BrainScoreError
from .naming import plugin_identifier

__all__ = ['committed_region_layer_map']

PathLike = Union[str, 'os.PathLike[str]']


def load_region_layer_map(source: Union[None, PathLike, Mapping[str, str]], layers: Optional[Sequence[str]],
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


def region_layer_map_text(mapping: Mapping[str, str]) -> str:
    """The JSON Brain-Score reads from ``region_layer_map/<identifier>.json``: {region: layer}."""
    return json.dumps({r: mapping[r] for r in REGIONS if r in mapping}, indent=4) + '\n'


def committed_region_layer_map(plugin_dir: PathLike, model_name: str) -> Optional[Path]:
    """``<plugin_dir>/<identifier>/region_layer_map/<identifier>.json`` if that file exists, else None."""
    identifier = plugin_identifier(model_name)
    path = Path(plugin_dir) / identifier / 'region_layer_map' / f'{identifier}.json'
    return path if path.is_file() else None
