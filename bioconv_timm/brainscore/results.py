"""A scoring run's result: :class:`ScoreResult` (shaped like paper Table 3, with every candidate layer's
score), its tables and plot, and the files a run writes."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .._atomic import atomic_path, atomic_write_text
from . import data
from .benchmarks import BENCHMARKS, PAPER_TABLE3, TABLE_COLUMNS
from .naming import plugin_identifier
from .region_layers import region_layer_map_text

__all__ = ['ScoreResult', 'format_score_table', 'format_layer_table', 'plot_layer_scores', 'region_layer_map_path']

PathLike = Union[str, 'os.PathLike[str]']


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
        """{column: score} in :data:`TABLE_COLUMNS` order (None where not scored)."""
        return {'average': self.average, **{k: self.scores.get(k) for k in BENCHMARKS}}

    def to_dict(self) -> Dict[str, Any]:
        """Every field and the average: the run's JSON."""
        return {**dataclasses.asdict(self), 'average': self.average}

    def layer_rows(self) -> List[Dict[str, Any]]:
        """One row per (region, candidate layer): region, depth (0 = the stem), layer, score, chosen."""
        return [dict(region=region, depth=depth, layer=layer, score=value,
                     chosen=self.region_layer_map.get(region) == layer)
                for region, scores in self.layer_scores.items()
                for depth, (layer, value) in enumerate(scores.items())]


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



def write_score(result: ScoreResult, output_dir: Path) -> List[str]:
    """Write a run's files (see :func:`score`) under ``output_dir``, each atomically; returns their paths, which
    are also ``result.files``."""
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
                 f'of wider layers reduced to {data.SELECTION_PCA_COMPONENTS} ImageNet principal components; '
                 '* = chosen):\n\n' + format_layer_table(result))
        csv_path, png_path = Path(f'{stem}-layers.csv'), Path(f'{stem}-layers.png')
        with atomic_path(csv_path) as tmp, open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=['region', 'depth', 'layer', 'score', 'chosen'])
            writer.writeheader()
            writer.writerows(result.layer_rows())
        with atomic_path(png_path) as tmp:
            plot_layer_scores(result).savefig(tmp, dpi=120, format='png')  # the temporary name ends in .tmp
        files += [csv_path, png_path]
    if result.region_layer_map and not result.random_init:  # a random network's layers are nothing to commit
        map_path = region_layer_map_path(output_dir, result)
        map_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(map_path, region_layer_map_text(result.region_layer_map))
        files.append(map_path)
    atomic_write_text(md_path, text + '\n')
    result.files = [str(f) for f in files]
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2) + '\n')
    return result.files
