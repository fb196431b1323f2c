"""``bioconv brainscore score|submission|plugins``."""
from __future__ import annotations

import argparse
import sys
import zipfile

from ..brainscore import (BENCHMARKS, DEFAULT_REQUIREMENT, REGIONS, BrainScoreError, build_submission,
                          format_layer_table, format_score_table, plugin_identifier, region_layer_map_path, score,
                          stale_plugin_files, write_plugins)


def add_brainscore_args(parser: argparse.ArgumentParser) -> None:
    """Subcommands of `bioconv brainscore`: score, submission, plugins."""
    sub = parser.add_subparsers(dest='brainscore_command', required=True)
    p = sub.add_parser('score', help='score a model on the public V1/V2/V4/IT/behavior benchmarks (data in BRAINIO_HOME)',
                       description='Builds the ModelCommitment and runs the public benchmarks on data already in '
                                   'BRAINIO_HOME; checks the data first and stops with the list of missing files.')
    p.add_argument('--model', required=True, help='e.g. lc_resnet18_half_ws10')
    p.add_argument('--weights', default=None, help='a .safetensors file; without it a RANDOM-INIT model is scored')
    p.add_argument('--benchmarks', default=','.join(BENCHMARKS), help=f'comma-separated, default {",".join(BENCHMARKS)}')
    p.add_argument('--output-dir', default='runs/brainscore',
                   help='where the results go: .json, .md, -layers.csv, -layers.png, <run>/region_layer_map/')
    p.add_argument('--seed', type=int, default=0, help='seed of the random init (without --weights)')
    p.add_argument('--region-layer-map', default=None, metavar='JSON',
                   help='{"V1": layer, ...} (or a previous score JSON or region_layer_map file): these regions keep '
                        'their layer; the others are chosen on the benchmarks, with every layer\'s score recorded')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--download', action='store_true',
                   help='let brainscore_vision download missing benchmark data (needs a network)')
    p = sub.add_parser('submission', help='build the zip brain-score.org accepts (<= 50 MB, no weights)')
    p.add_argument('--model', required=True, action='append',
                   help='model name; repeat (or comma-separate) for several plugins in one zip')
    p.add_argument('--output', default=None, help='zip path (default brainscore-submission-<model>.zip)')
    p.add_argument('--hub-repo', default=None, help='Hub repo with the weights (default bioconv-timm/<model>.in1k)')
    p.add_argument('--requirement', default=DEFAULT_REQUIREMENT,
                   help='pip requirement that installs bioconv-timm on Brain-Score\'s side (e.g. a git URL)')
    p.add_argument('--region-layer-map', default=None, metavar='JSON',
                   help='commit all four regions to layers (e.g. the region_layer_map/<identifier>.json of a '
                        '`bioconv brainscore score` run) instead of letting Brain-Score choose; default: the map '
                        'committed in --plugin-dir, if any')
    p.add_argument('--plugin-dir', default='brainscore_plugin',
                   help='plugin folders whose region_layer_map/<identifier>.json is used when present')
    p = sub.add_parser('plugins', help='(re)write the brainscore_plugin/ folders from the template')
    p.add_argument('--output-dir', default='brainscore_plugin')
    p.add_argument('--check', action='store_true', help='only report folders that differ from the template')


def run_cli(args: argparse.Namespace) -> int:
    command = args.brainscore_command
    if command == 'score':
        result = score(args.model, weights=args.weights, benchmarks=args.benchmarks, output_dir=args.output_dir,
                       seed=args.seed, region_layer_map=args.region_layer_map, batch_size=args.batch_size,
                       download=args.download)
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
        map_file = region_layer_map_path(args.output_dir, result)
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
        models = [m.strip() for item in args.model for m in item.split(',') if m.strip()]
        path = build_submission(models, args.output, region_layer_map=args.region_layer_map, hub_repo=args.hub_repo,
                                requirement=args.requirement, plugin_dir=args.plugin_dir)
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
        if args.check:
            stale = stale_plugin_files(args.output_dir)
            for rel in stale:
                print(f'differs from the template: {rel}')
            return 1 if stale else 0
        files = write_plugins(args.output_dir)
        print(f'wrote {len(files)} files under {args.output_dir}/')
        return 0
    raise BrainScoreError(f'unknown brainscore command {command!r}')  # pragma: no cover


def run(args: argparse.Namespace) -> int:
    try:
        return run_cli(args)
    except BrainScoreError as exc:
        print(f'bioconv brainscore {args.brainscore_command}: error: {exc}', file=sys.stderr)
        return 2


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('brainscore', help='Brain-Score: score locally on the public benchmarks, build a '
                                                 'submission zip',
                              description='Needs the [brainscore] extra: pip install "bioconv-timm[brainscore]".')
    add_brainscore_args(p)
    p.set_defaults(func=run)
