"""A study is a file: a base run, named cells that override it, a tuning grid and seeds (``studies/*.yaml``).

``run_study(study, jobs)`` tunes each cell's learning rate and weight decay on the validation split (a coordinate
search: the lrs at the first weight decay, then the other weight decays at the best lr), then trains every cell
with its best pair on every seed, a cell at a time, through :func:`~bioconv_timm.train.sweep.sweep` (so finished runs
are skipped and interrupted ones resume). Each finished run leaves a compact record (settings, every
evaluation's metrics, result, wall time) under ``records``, committed with the report, so the study resumes
across machines and its report is rebuilt from the records alone.

A study file (YAML)::

    name: fashion_mnist_shifted           # runs/<name>/ and docs/results/<name>/ by default
    base: {dataset: fashion-mnist-shifted, epochs: 16, ...}   # TrainConfig settings of every run
    cells:                                # name -> label and TrainConfig overrides
      conv: {label: conv, model: conv_resnet20}
      lc_4reps_images: {label: ..., model: lc_resnet20, reps: 4, tune_as: lc_4reps}
    tune: {lr: [1.0e-3, 2.0e-3], weight_decay: [1.0e-4, 1.0e-2], seed: 0, extend: 1, overrides: {eval_every: 4}}
    # or reuse another study's tuning (its cells' best pairs, found at its budget): tune: {from: other.yaml}
    # cells train in file order, each's tuning then its seeds, so that an interrupted study has whole cells
    seeds: [0, 1, 2]
    extra_seeds: {lc: [3, 4]}             # more seeds for cells whose differences are marginal
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..errors import UserValueError
from .config import TrainConfig

__all__ = ['Cell', 'Study', 'StudyRun', 'load_study', 'tuning_runs', 'best_settings', 'main_runs', 'pending_runs',
           'run_study', 'load_records']

TUNED = ('lr', 'weight_decay')


@dataclass(frozen=True)
class Cell:
    """One arm of a study: ``overrides`` of the base run; ``tune_as`` names the cell whose tuning it reuses."""
    name: str
    label: str
    overrides: Dict[str, Any] = field(hash=False, compare=False)
    tune_as: Optional[str] = None
    paper_row: Optional[str] = None   # the row of the paper's Table 1 this cell stands for, e.g. 'LC - ws(10)'


@dataclass
class Study:
    name: str
    base: Dict[str, Any]
    cells: Dict[str, Cell]
    tune_lrs: Tuple[float, ...]
    tune_weight_decays: Tuple[float, ...]
    tune_seed: int = 0
    tune_overrides: Dict[str, Any] = field(default_factory=dict)  # e.g. eval_every: tuning needs the last only
    tune_extend: int = 1     # times a best lr at the grid's edge is followed one octave further out
    seeds: Tuple[int, ...] = (0, 1, 2)
    extra_seeds: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    runs_dir: str = ''
    records: str = ''
    description: str = ''
    tune_source: Optional['Study'] = None  # the study whose tuning this one reuses (``tune: {from: file}``)


@dataclass(frozen=True)
class StudyRun:
    """One training run: its record name, phase (``tune`` or ``main``), cell, seed and settings."""
    name: str
    phase: str
    cell: str
    seed: int
    settings: Dict[str, Any] = field(hash=False, compare=False)

    def config(self, study: Study) -> TrainConfig:
        values = dict(study.base, **self.settings, seed=self.seed, resume=True,
                      output_dir=str(Path(study.runs_dir) / self.name))
        return TrainConfig(**values)


def _problem(path: Path, text: str) -> UserValueError:
    return UserValueError(f'study file {path}: {text}')


def load_study(path: Union[str, Path]) -> Study:
    """Read a study file; every run's settings are checked (as TrainConfig) before anything is trained."""
    import yaml
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserValueError(f'cannot read study file {path}: {exc.strerror or exc}') from None
    except yaml.YAMLError as exc:
        raise _problem(path, f'not YAML ({str(exc).splitlines()[0]})') from None
    if not isinstance(raw, dict):
        raise _problem(path, 'must hold a mapping with name, base, cells, tune and seeds')
    missing = [k for k in ('name', 'base', 'cells', 'tune', 'seeds') if k not in raw]
    if missing:
        raise _problem(path, f'missing {", ".join(missing)}')
    cells = {}
    for name, spec in raw['cells'].items():
        spec = dict(spec)
        label, tune_as, paper_row = spec.pop('label', name), spec.pop('tune_as', None), spec.pop('paper_row', None)
        cells[name] = Cell(name, label, spec, tune_as, paper_row)
    for cell in cells.values():
        if cell.tune_as is not None and cell.tune_as not in cells:
            raise _problem(path, f'cell {cell.name}: tune_as {cell.tune_as!r} is not a cell ({", ".join(cells)})')
    tune, source = raw['tune'], None
    if isinstance(tune, dict) and 'from' in tune:
        source = load_study(path.parent / str(tune['from']))
        lacking = [c.name for c in cells.values() if c.tune_as is None and c.name not in source.cells]
        if lacking:
            raise _problem(path, f'tune from {tune["from"]}: its study has no cell {", ".join(lacking)} '
                                 f'(it has {", ".join(source.cells)})')
        tune = dict(lr=source.tune_lrs, weight_decay=source.tune_weight_decays, seed=source.tune_seed)
    name = str(raw['name'])
    study = Study(name=name, base=dict(raw['base']), cells=cells,
                  tune_lrs=tuple(float(v) for v in tune['lr']),
                  tune_weight_decays=tuple(float(v) for v in tune['weight_decay']),
                  tune_seed=int(tune.get('seed', 0)), tune_extend=int(tune.get('extend', 1)),
                  tune_overrides=dict(tune.get('overrides') or {}), tune_source=source,
                  seeds=tuple(int(s) for s in raw['seeds']),
                  extra_seeds={c: tuple(int(s) for s in v) for c, v in (raw.get('extra_seeds') or {}).items()},
                  runs_dir=raw.get('runs_dir', f'runs/{name}'), records=raw.get('records', f'docs/results/{name}'),
                  description=str(raw.get('description', '')).strip())
    unknown = sorted(set(study.extra_seeds) - set(cells))
    if unknown:
        raise _problem(path, f'extra_seeds names {", ".join(unknown)}, not a cell')
    for cell in cells.values():  # a bad setting is named now, not after an hour of training
        StudyRun('check', 'main', cell.name, 0, dict(cell.overrides, lr=study.tune_lrs[0])).config(study)
    return study


# --- records ----------------------------------------------------------------------------------------------------

def record_path(study: Study, name: str) -> Path:
    return Path(study.records) / f'{name}.json'


def load_records(study: Study) -> Dict[str, Dict[str, Any]]:
    """Every record of the study, by run name."""
    folder = Path(study.records)
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob('*.json'))} if folder.is_dir() else {}


def _write_record(study: Study, run: StudyRun, config: TrainConfig, result: Dict[str, Any], seconds: float) -> None:
    from .._atomic import write_json
    from .run_log import read_history  # torch: loaded when a run has finished, not for a report
    history = read_history(Path(config.output_dir))
    evaluated = [h for h in history if h.get('eval_top1') is not None]
    record = dict(name=run.name, phase=run.phase, cell=run.cell, seed=run.seed, settings=run.settings,
                  config=asdict(config), seconds=seconds, history=history, final=result.get('final'),
                  top1_last_step=evaluated[-1]['eval_top1'], train_top1_last_epoch=history[-1]['train_top1'],
                  steps=int(history[-1]['step']))
    path = record_path(study, run.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


# --- the grid ---------------------------------------------------------------------------------------------------

def _tune_name(cell: str, lr: float, wd: float) -> str:
    return f'tune-{cell}-lr{lr:g}-wd{wd:g}'


def _tuned_cells(study: Study) -> List[str]:
    return [c.name for c in study.cells.values() if c.tune_as is None]


def _tune_run(study: Study, cell: str, lr: float, wd: float) -> StudyRun:
    settings = dict(study.cells[cell].overrides, **study.tune_overrides, lr=lr, weight_decay=wd, split='val')
    return StudyRun(_tune_name(cell, lr, wd), 'tune', cell, study.tune_seed, settings)


def _cell_lrs(study: Study, cell: str, records: Dict[str, Dict[str, Any]]) -> List[float]:
    """The grid's lrs at the first weight decay, followed one octave further while the best is at an edge."""
    lrs = sorted(study.tune_lrs)
    wd = study.tune_weight_decays[0]
    for _ in range(study.tune_extend):
        recs = {lr: records.get(_tune_name(cell, lr, wd)) for lr in lrs}
        if not all(recs.values()):
            return lrs
        best = max(lrs, key=lambda lr: recs[lr]['top1_last_step'])
        if best == lrs[-1]:
            lrs.append(lrs[-1] * 2)
        elif best == lrs[0]:
            lrs.insert(0, lrs[0] / 2)
        else:
            break
    return lrs


def _cell_tuning(study: Study, cell: str, records: Dict[str, Dict[str, Any]]) -> Tuple[List[StudyRun], bool]:
    """A cell's tuning runs known so far and whether they are all that it will need. A coordinate search:
    the lrs at the first weight decay, then the other weight decays at the best of those lrs."""
    wd0 = study.tune_weight_decays[0]
    runs = [_tune_run(study, cell, lr, wd0) for lr in _cell_lrs(study, cell, records)]
    lr_stage_done = all(r.name in records for r in runs) and _cell_lrs(study, cell, records) == [
        r.settings['lr'] for r in runs]
    if not lr_stage_done:
        return runs, False
    lr_best = max(runs, key=lambda r: records[r.name]['top1_last_step']).settings['lr']
    runs += [_tune_run(study, cell, lr_best, wd) for wd in study.tune_weight_decays[1:]]
    return runs, all(r.name in records for r in runs)


def tuning_runs(study: Study, records: Dict[str, Dict[str, Any]]) -> List[StudyRun]:
    """The tuning runs known so far (an edge extension or the weight-decay stage appears once the runs it
    depends on are finished); none for a study that reuses another's tuning."""
    if study.tune_source is not None:
        return []
    return [run for cell in _tuned_cells(study) for run in _cell_tuning(study, cell, records)[0]]


def best_settings(study: Study, records: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """``{cell: {'lr': .., 'weight_decay': ..}}`` of the best validation top-1, for cells whose tuning is done."""
    out = {}
    if study.tune_source is not None:  # the source study's best pairs, read from its own records
        found = best_settings(study.tune_source, load_records(study.tune_source))
        out = {cell: found[cell] for cell in _tuned_cells(study) if cell in found}
    else:
        for cell in _tuned_cells(study):
            runs, done = _cell_tuning(study, cell, records)
            if done:
                best = max(runs, key=lambda r: records[r.name]['top1_last_step'])
                out[cell] = {k: best.settings[k] for k in TUNED}
    for cell in study.cells.values():
        if cell.tune_as is not None and cell.tune_as in out:
            out[cell.name] = out[cell.tune_as]
    return out


def main_runs(study: Study, best: Dict[str, Dict[str, float]]) -> List[StudyRun]:
    """The test-split runs of every cell whose tuning is done: the seeds, then the extra seeds."""
    runs = []
    for seeds in (study.seeds, None):
        for cell in study.cells.values():
            if cell.name not in best:
                continue
            for seed in (seeds if seeds is not None else study.extra_seeds.get(cell.name, ())):
                runs.append(StudyRun(f'main-{cell.name}-seed{seed}', 'main', cell.name, seed,
                                     dict(cell.overrides, **best[cell.name], split='test')))
    return runs


def pending_runs(study: Study, records: Dict[str, Dict[str, Any]],
                 phases: Tuple[str, ...] = ('tune', 'main')) -> List[StudyRun]:
    """The runs the records lack that can start now, in the study's cell order (a cell's tuning, then its
    seeds), so that an interrupted study has whole cells rather than a little of each; extra seeds last."""
    order = {name: i for i, name in enumerate(study.cells)}
    tune = [r for r in tuning_runs(study, records) if 'tune' in phases and r.name not in records]
    main = [r for r in main_runs(study, best_settings(study, records)) if 'main' in phases and r.name not in records]
    extra = {(c, s) for c, seeds in study.extra_seeds.items() for s in seeds if s not in study.seeds}
    key = lambda r: ((r.cell, r.seed) in extra, order[study.cells[r.cell].tune_as or r.cell], r.phase != 'tune',  # noqa: E731
                     order[r.cell])
    return sorted(tune + main, key=key)


def run_study(study: Study, jobs: int = 2, phases: Tuple[str, ...] = ('tune', 'main'),
              log: Callable[[str], None] = print, cells: Optional[Tuple[str, ...]] = None) -> Dict[str, Dict[str, Any]]:
    """Train what the records lack, ``jobs`` runs at a time in the order of :func:`pending_runs` (only the runs
    of ``cells``, when given: the tuning they reuse included); returns the records. Resumable: run it again."""
    from .sweep import sweep
    unknown = sorted(set(cells or ()) - set(study.cells))
    if unknown:
        raise UserValueError(f'study {study.name} has no cell {", ".join(unknown)}; its cells: {", ".join(study.cells)}')
    reused = set() if cells is None else {study.cells[c].tune_as for c in cells} - {None}
    asked = lambda r: cells is None or r.cell in cells or (r.phase == 'tune' and r.cell in reused)  # noqa: E731
    while True:
        records = load_records(study)
        pending = [r for r in pending_runs(study, records, phases) if asked(r)]
        # while tuning is pending, ``jobs`` at a time and then look again (tuning unlocks runs); after, all at once,
        # so that a worker whose run ends starts the next instead of waiting for the slowest of its batch
        todo = pending[:max(1, jobs)] if any(r.phase == 'tune' for r in pending) else pending
        if not todo:
            return records
        log(f'training {", ".join(r.name for r in todo)}')

        def done(outcome, left: int) -> None:
            run = todo[outcome.index]
            if not record_path(study, run.name).exists():
                _write_record(study, run, outcome.config, outcome.result, outcome.seconds)
            log(f'done {run.name}: top-1 {outcome.result["final"]["top1"]:.2f} in {outcome.seconds / 60:.1f} min')

        sweep([r.config(study) for r in todo], jobs=jobs, on_done=done)
