"""Regenerate the committed ``.digits`` model cards (``model_cards/<tag>.md``) and their run records.

The five cards are ``bioconv publish --dry-run`` of the digits runs of ``bioconv compare``'s digits preset (10
epochs, batch 64, seed 0). Each run's ``config.json`` and ``result.json`` are kept in
``model_cards/records/<tag>/`` so that a test (tests/test_model_cards.py) can rebuild every card from them with the
current code, without the weights (a card depends on the architecture, not on the weight values)::

    python model_cards/regenerate.py --train          # train the missing runs (~6 min on 2 cores), then write
    python model_cards/regenerate.py                  # rewrite the cards and records from runs that exist

Runs go to ``--runs-dir`` (default ``runs/compare-digits``, the folder ``bioconv compare`` uses, so its finished
runs are reused).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
RECORD_FILES = ('config.json', 'result.json')
# {tag: the `bioconv compare` cell (slug) that trained it}
CARD_CELLS: Dict[str, str] = {
    'conv_resnet20.digits': 'conv',
    'lc_resnet20.digits': 'lc',
    'lc_resnet20_ws1.digits': 'lc_ws1',
    'lc_resnet20_ws10.digits': 'lc_ws10',
    'lc_resnet20_ws100.digits': 'lc_ws100',
}


def _train_missing(runs_dir: Path) -> None:
    from bioconv_timm.train import train
    from bioconv_timm.train.compare import DEFAULT_CELLS, cell_config, preset_config

    config = preset_config('digits', output_dir=str(runs_dir))
    cells = {c.slug: c for c in DEFAULT_CELLS}
    for slug in CARD_CELLS.values():
        tc = cell_config(config, cells[slug], 0)
        if (Path(tc.output_dir) / 'result.json').exists():
            continue
        print(f'== training {tc.model} ({slug}) into {tc.output_dir}', flush=True)
        train(tc)


def regenerate(runs_dir: Path, out_dir: Path = HERE) -> List[Path]:
    """Publish (dry run) every card's run, copy its README.md to ``out_dir/<tag>.md`` and its config.json /
    result.json to ``out_dir/records/<tag>/``; returns the files written."""
    from bioconv_timm.hub import publish

    written = []
    for tag, slug in CARD_CELLS.items():
        run = runs_dir / f'{slug}-seed0'
        with tempfile.TemporaryDirectory() as tmp:
            publish(run, f'bioconv-timm/{tag}', dry_run_dir=Path(tmp) / 'out')
            card = out_dir / f'{tag}.md'
            shutil.copyfile(Path(tmp) / 'out' / 'README.md', card)
            written.append(card)
        record = out_dir / 'records' / tag
        record.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            # re-serialized so that the records are stable text (sorted keys are not used: the run's order is kept)
            data = json.loads((run / name).read_text())
            (record / name).write_text(json.dumps(data, indent=2) + '\n')
            written.append(record / name)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs-dir', default='runs/compare-digits', type=Path)
    parser.add_argument('--train', action='store_true', help='train the runs that are missing first')
    args = parser.parse_args(argv)
    if args.train:
        _train_missing(args.runs_dir)
    for path in regenerate(args.runs_dir):
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
