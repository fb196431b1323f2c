"""Many runs, one runner: ``sweep(configs, jobs)`` trains every run that its folder does not already hold,
``jobs`` at a time, and returns each run's result in the order given.

A comparison (``compare``), a paper table (``paper_runs``) and the study scripts are grids of ``TrainConfig``s;
each builds its grid and hands it here, so skipping finished runs, refusing a folder trained with other
settings, running several at once and reporting progress are written once.
"""
from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .config import ConfigError, TrainConfig, finished_run
from .loop import train

__all__ = ['RunOutcome', 'sweep']


@dataclass
class RunOutcome:
    """One run of a sweep: its config, ``result`` (the run folder's result.json contents: ``final`` top-1 /
    top-5 / loss, ``steps``, ...), whether it was ``reused`` (finished before) and its wall time in seconds
    (0 when reused)."""
    index: int
    config: TrainConfig
    result: Dict[str, Any]
    reused: bool
    seconds: float


def _train_one(config: TrainConfig, threads: Optional[int]) -> Dict[str, Any]:
    """Train ``config`` (in a worker process when ``threads`` is set) and return its result.json, as a reused
    run's outcome holds it."""
    if threads:  # several runs share the machine: one torch thread each, not a thread per core per run
        torch.set_num_threads(threads)
    train(config)
    return json.loads((Path(config.output_dir) / 'result.json').read_text())


def sweep(configs: Sequence[TrainConfig], jobs: int = 1,
          on_done: Optional[Callable[[RunOutcome, int], None]] = None) -> List[RunOutcome]:
    """Train every config whose folder holds no finished run with its settings; return one outcome per config.

    Args:
        configs: the runs, each with its own ``output_dir`` (and usually ``resume=True``, so that an
            interrupted sweep continues each unfinished run from its checkpoint).
        jobs: runs at a time. 1 trains in this process, one after another; more start worker processes with
            one torch thread each (two jobs fill a 2-core machine).
        on_done: called as ``on_done(outcome, remaining)`` after each run finishes or is found finished.

    Raises:
        CheckpointError: a folder holds a finished run with other settings (before anything is trained).
        The first error of a run, after the runs already started have ended.
    """
    folders = [c.output_dir for c in configs]
    repeated = sorted({f for f in folders if f is not None and folders.count(f) > 1})
    if repeated:
        raise ConfigError(f'two runs of one sweep share the folder {repeated[0]}; give each its own output_dir')
    outcomes: List[Optional[RunOutcome]] = [None] * len(configs)
    pending = []
    for index, config in enumerate(configs):
        finished = finished_run(config.output_dir, config) if config.output_dir else None
        if finished is None:
            pending.append(index)
        else:
            outcomes[index] = RunOutcome(index, config, finished, True, 0.0)
    left = len(configs)
    for outcome in outcomes:
        if outcome is not None:
            left -= 1
            if on_done is not None:
                on_done(outcome, left)

    def record(index: int, result: Dict[str, Any], seconds: float) -> None:
        nonlocal left
        left -= 1
        outcomes[index] = RunOutcome(index, configs[index], result, False, seconds)
        if on_done is not None:
            on_done(outcomes[index], left)

    if jobs <= 1:
        for index in pending:
            start = time.perf_counter()
            record(index, _train_one(configs[index], None), time.perf_counter() - start)
    else:
        _in_processes(configs, pending, jobs, record)
    return [o for o in outcomes if o is not None]


def _in_processes(configs: Sequence[TrainConfig], pending: Sequence[int], jobs: int,
                  record: Callable[[int, Dict[str, Any], float], None]) -> None:
    """Run ``pending`` in ``jobs`` worker processes; the first failure is raised once the running ones end."""
    started: Dict[Future, tuple] = {}
    queue = list(pending)
    error: Optional[BaseException] = None
    # spawn, not fork: a forked child of a process whose OpenMP pool has run can hang in its first parallel op
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context('spawn')) as pool:
        while queue or started:
            while queue and len(started) < jobs and error is None:
                index = queue.pop(0)
                started[pool.submit(_train_one, configs[index], 1)] = (index, time.perf_counter())
            if not started:
                break
            done, _ = wait(list(started), return_when=FIRST_COMPLETED)
            for future in done:
                index, start = started.pop(future)
                try:
                    record(index, future.result(), time.perf_counter() - start)
                except Exception as exc:  # stop starting runs; let the others end, then report this one
                    error = error or exc
                    queue.clear()
    if error is not None:
        raise error
