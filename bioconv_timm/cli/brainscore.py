"""``bioconv brainscore score|submission|plugins``."""
from __future__ import annotations

import argparse
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

from ..brainscore import (BENCHMARKS, DEFAULT_REQUIREMENT, REGIONS, BrainScoreError, build_submission,
                          format_layer_table, format_score_table, plugin_identifier, region_layer_map_path, score,
                          stale_plugin_files, write_plugins)
from .._lazy import lazy_function
from ..settings import one_line_problem, registered_model_problem, setting, validate_settings
from .flags import add_setting_flags, settings_from_args

repo_id_problem = lazy_function('bioconv_timm.hub', 'repo_id_problem')  # hub imports torch: only when checked


def _known_models(names: Tuple[str, ...], config: Any) -> Optional[str]:
    for name in names:
        problem = registered_model_problem(name)
        if problem:
            return f'names {name!r}, which {problem}'
    return None


def _split_commas(value: Any) -> Tuple[str, ...]:
    """'a,b' or ['a', 'b,c'] -> ('a', 'b', 'c')."""
    items = (value,) if isinstance(value, str) else tuple(value)
    return tuple(part.strip() for item in items for part in item.split(',') if part.strip())


def _benchmarks_problem(names: Tuple[str, ...], config: Any) -> Optional[str]:
    bad = [n for n in names if n not in BENCHMARKS and n not in BENCHMARKS.values() and '.' not in n and '-' not in n]
    return (f'names {bad[0]!r}, neither a region column ({", ".join(BENCHMARKS)}) nor a benchmark identifier'
            if bad else None)


def _folder_if_present(path: str, config: Any) -> Optional[str]:
    return 'is a file, not a folder' if Path(path).exists() and not Path(path).is_dir() else None


_MAP_HELP = ('{"V1": layer, ...} (or a previous score JSON or region_layer_map file): these regions keep their layer')


@dataclass
class ScoreConfig:
    """``bioconv brainscore score`` (:func:`bioconv_timm.brainscore.score`); every field declared once."""
    model: str = setting(help='e.g. lc_resnet18_half_ws10', check=registered_model_problem,
                         valid='a name `bioconv list` prints')
    weights: Optional[str] = setting(None, help='a .safetensors file', path='file_in',
                                     default_help='none: a RANDOM-INIT model is scored')
    benchmarks: Tuple[str, ...] = setting(tuple(BENCHMARKS), help='comma-separated regions or benchmark identifiers',
                                          convert=_split_commas, check=_benchmarks_problem)
    output_dir: str = setting('runs/brainscore', help='where the results go: .json, .md, -layers.csv, -layers.png, '
                              '<run>/region_layer_map/', path='dir_out')
    seed: int = setting(0, help='seed of the random init (without --weights)', ge=0, le=2 ** 31 - 1)
    region_layer_map: Optional[str] = setting(None, help=_MAP_HELP + "; the others are chosen on the benchmarks, "
                                              "with every layer's score recorded", path='file_in', metavar='JSON')
    batch_size: int = setting(64, help='images per forward pass', ge=1, le=4096)
    download: bool = setting(False, help='let brainscore_vision download missing benchmark data (needs a network)')

    def __post_init__(self) -> None:
        validate_settings(self)


@dataclass
class SubmissionConfig:
    """``bioconv brainscore submission`` (:func:`bioconv_timm.brainscore.build_submission`)."""
    model: Tuple[str, ...] = setting(help='model names; repeat (or comma-separate) for several plugins in one zip',
                                     convert=_split_commas, check=_known_models, valid='names `bioconv list` prints')
    output: Optional[str] = setting(None, help='zip path', path='file_out', metavar='OUTPUT.zip',
                                    default_help='brainscore-submission-<model>.zip')
    hub_repo: Optional[str] = setting(None, help='Hub repo with the weights', check=repo_id_problem, valid='ORG/NAME',
                                      default_help='bioconv-timm/<model>.in1k')
    requirement: str = setting(DEFAULT_REQUIREMENT, help="pip requirement that installs bioconv-timm on Brain-Score's "
                               'side (e.g. a git URL)', check=one_line_problem, valid='one line')
    region_layer_map: Optional[str] = setting(None, help='commit all four regions to layers (e.g. the '
                                              'region_layer_map/<identifier>.json of a `bioconv brainscore score` run) '
                                              'instead of letting Brain-Score choose', path='file_in', metavar='JSON',
                                              default_help='the map committed in --plugin-dir, if any')
    plugin_dir: str = setting('brainscore_plugin', help='plugin folders whose region_layer_map/<identifier>.json is '
                              'used when present', check=_folder_if_present, valid='a folder (or none there)')

    def __post_init__(self) -> None:
        validate_settings(self)


@dataclass
class PluginsConfig:
    """``bioconv brainscore plugins`` (:func:`bioconv_timm.brainscore.write_plugins`)."""
    output_dir: str = setting('brainscore_plugin', help='the plugin folders', path='dir_out')
    check: bool = setting(False, help='only report folders that differ from the template')

    def __post_init__(self) -> None:
        validate_settings(self)


SETTINGS = {'brainscore score': ScoreConfig, 'brainscore submission': SubmissionConfig,
            'brainscore plugins': PluginsConfig}  # the settings class of each command (docs/flags.md, tests)


def add_brainscore_args(parser: argparse.ArgumentParser) -> None:
    """Subcommands of `bioconv brainscore`: score, submission, plugins (flags from their settings classes)."""
    sub = parser.add_subparsers(dest='brainscore_command', required=True)
    p = sub.add_parser('score', help='score a model on the public V1/V2/V4/IT/behavior benchmarks (data in BRAINIO_HOME)',
                       description='Builds the ModelCommitment and runs the public benchmarks on data already in '
                                   'BRAINIO_HOME; checks the data first and stops with the list of missing files.')
    add_setting_flags(p, ScoreConfig)
    p = sub.add_parser('submission', help='build the zip brain-score.org accepts (<= 50 MB, no weights)')
    add_setting_flags(p, SubmissionConfig)
    p = sub.add_parser('plugins', help='(re)write the brainscore_plugin/ folders from the template')
    add_setting_flags(p, PluginsConfig)


def run_cli(args: argparse.Namespace) -> int:
    command = args.brainscore_command
    cfg = settings_from_args(args, SETTINGS[f'brainscore {command}'])
    if command == 'score':
        result = score(cfg.model, weights=cfg.weights, benchmarks=list(cfg.benchmarks), output_dir=cfg.output_dir,
                       seed=cfg.seed, region_layer_map=cfg.region_layer_map, batch_size=cfg.batch_size,
                       download=cfg.download)
        print(format_score_table([result]))
        print('\nLocal scores on the public benchmarks; the paper (and the leaderboard) used brain-score.org\'s '
              'private data, so they differ.' + (' RANDOM-INIT MODEL: no weights were given.' if result.random_init else ''))
        if result.layer_scores:
            print('\nScore of every candidate layer per region (layer selection, ImageNet PCA; * = chosen):')
            print(format_layer_table(result))
        if result.region_layer_map:
            print('region -> layer: ' + ', '.join(f'{k}: {v} ({result.layer_choice.get(k, "given")})'
                                                  for k, v in result.region_layer_map.items()))
        print('written: ' + ', '.join(result.files))
        map_file = region_layer_map_path(cfg.output_dir, result)
        if str(map_file) in result.files:
            identifier = plugin_identifier(result.model)
            absent = [r for r in REGIONS if r not in result.region_layer_map]
            if absent:
                print(f'{map_file} names no layer for {", ".join(absent)}; to commit the layers, add them: '
                      f'--benchmarks {",".join(absent)} --region-layer-map {map_file}')
            else:
                print(f'To commit these layers in the submission: cp -r {map_file.parent} brainscore_plugin/{identifier}/ '
                      f'(or pass --region-layer-map {map_file} to `bioconv brainscore submission`)')
        return 0
    if command == 'submission':
        path = build_submission(list(cfg.model), cfg.output, region_layer_map=cfg.region_layer_map,
                                hub_repo=cfg.hub_repo, requirement=cfg.requirement, plugin_dir=cfg.plugin_dir)
        with zipfile.ZipFile(path) as archive:
            listing = [i.filename for i in archive.infolist() if not i.is_dir()]
        print(f'wrote {path} ({path.stat().st_size / 1e3:.1f} kB, checked: layout, identifiers, no weights, <= 50 MB):')
        for name in listing:
            print(f'  {name}')
        committed = [n.split('/')[2] for n in listing if '/region_layer_map/' in n]
        print('layers committed by region_layer_map/ for: ' + ', '.join(committed) if committed else
              'no region_layer_map/: Brain-Score chooses each region\'s layer on its public benchmarks')
        print('Upload it at brain-score.org (profile -> submit a vision plugin). The plugins download their weights '
              'from the Hugging Face Hub and pip-install the requirement line: publish both first.')
        return 0
    if command == 'plugins':
        if cfg.check:
            stale = stale_plugin_files(cfg.output_dir)
            for rel in stale:
                print(f'differs from the template: {rel}')
            return 1 if stale else 0
        files = write_plugins(cfg.output_dir)
        print(f'wrote {len(files)} files under {cfg.output_dir}/')
        return 0
    raise BrainScoreError(f'unknown brainscore command {command!r}')  # pragma: no cover


def run(args: argparse.Namespace) -> int:
    return run_cli(args)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('brainscore', help='Brain-Score: score locally on the public benchmarks, build a '
                                                 'submission zip',
                              description='Needs the [brainscore] extra: pip install "bioconv-timm[brainscore]".')
    add_brainscore_args(p)
    p.set_defaults(func=run)
