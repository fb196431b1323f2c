"""A run folder belongs to one run: an OS lock held while a command works in it, and a marker saying we wrote it.

:func:`hold_run_folder` is the lock. ``bioconv train`` holds it on its output folder for its whole life (and
``compare`` / ``publish`` can hold it on theirs), so a second process pointed at the same folder stops at once with
one line naming the holder (pid, host, start time) instead of interleaving its files with the first one's. The lock
is ``flock`` on ``<folder>/.bioconv-lock`` (``filelock.FileLock``; no soft-lock fallback): the kernel drops it
when its process ends, so a lock left by a killed process never blocks anybody.

:func:`mark_run_folder` writes ``<folder>/.bioconv-run``. A folder is a run folder only by that marker (or, for
folders written before it existed, by a run's own files), so a command that finds a non-empty folder without it
knows the files there are someone else's and leaves them alone (:func:`foreign_entries`).
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import inspect
import json
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

import filelock

from ._atomic import is_temp_name, write_json
from .errors import UserRuntimeError, UserValueError

__all__ = ['hold_run_folder', 'RunFolderLock', 'RunFolderBusyError', 'ForeignFolderError', 'read_holder',
           'mark_run_folder', 'is_run_folder', 'foreign_entries', 'remove_stale_temps', 'LOCK_NAME', 'HOLDER_NAME',
           'MARKER_NAME', 'BOOKKEEPING_NAMES']

LOCK_NAME = '.bioconv-lock'          # the flock'ed file
HOLDER_NAME = '.bioconv-lock.json'   # who holds it: pid, host, start time, command
MARKER_NAME = '.bioconv-run'         # "this folder holds a run we wrote"
BOOKKEEPING_NAMES = frozenset({LOCK_NAME, HOLDER_NAME, MARKER_NAME})

PathLike = Union[str, Path]


class RunFolderBusyError(UserRuntimeError):
    """Another process (or another call in this one) holds the folder; ``holder`` says who, when known."""

    def __init__(self, message: str, holder: Optional[Dict[str, Any]]) -> None:
        super().__init__(message)
        self.holder = holder


class ForeignFolderError(UserRuntimeError):
    """A non-empty folder holds files we did not write; nothing in it was touched."""


@dataclass
class RunFolderLock:
    """What :func:`hold_run_folder` yields: the folder, its lock file and what the lock says about us."""
    path: Path
    lock_path: Path
    holder: Dict[str, Any] = field(default_factory=dict)
    locked: bool = True  # False where the file system has no locks (a warning said so)


def _holder_text(holder: Optional[Dict[str, Any]]) -> str:
    if not holder:
        return 'another process (it has not written its pid yet)'
    return (f"{holder.get('command', 'a bioconv command')} (pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}, started {holder.get('started', '?')})")


def read_holder(path: PathLike) -> Optional[Dict[str, Any]]:
    """What the last holder of ``path``'s lock wrote about itself (pid, host, started, command), or None."""
    try:
        holder = json.loads((Path(path) / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _new_lock(lock_path: Path) -> filelock.BaseFileLock:
    """An OS lock (flock on POSIX, msvcrt on Windows: ``filelock.FileLock``), non-blocking."""
    kwargs: Dict[str, Any] = dict(timeout=0)
    # newer filelock versions may fall back to a marker file where flock is missing; such a lock outlives a killed
    # process, which is what this lock must never do
    if 'fallback_to_soft' in inspect.signature(filelock.FileLock.__init__).parameters:
        kwargs['fallback_to_soft'] = False
    return filelock.FileLock(str(lock_path), **kwargs)


def _missing_ancestors(path: Path) -> List[Path]:
    """``path`` and its parents that do not exist yet, deepest first (what mkdir(parents=True) creates)."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


@contextlib.contextmanager
def hold_run_folder(path: PathLike, command: str = 'train', create: bool = True) -> Iterator[RunFolderLock]:
    """Hold ``path`` for one command: ``with hold_run_folder(out, 'train') as held: ...``.

    Creates the folder (and its parents) when ``create`` and it is missing; takes an exclusive, non-blocking OS
    lock on ``path/.bioconv-lock``; writes ``{pid, host, started, command}`` to ``path/.bioconv-lock.json`` so
    that a refused process can name the holder. On leaving, both files are removed and the lock released; a
    folder this call created is removed again if nothing was put in it (so a command refused for a bad setting
    leaves no trace). A killed holder leaves the two files behind; they block nobody. Reentrant use is refused like any other second holder: one run per folder, also within a process.

    Raises:
        RunFolderBusyError: another process (or call) holds the folder; the message names it.
        UserValueError: ``path`` is a file, or cannot be created (``create=False``: does not exist).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserValueError(f'{path} is a file, not a folder: choose a folder (it may not exist yet)')
    created = _missing_ancestors(path)
    if created:
        if not create:
            raise UserValueError(f'{path} does not exist')
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserValueError(f'cannot create the folder {path}: {exc.strerror or exc}; choose a folder '
                                 'you can write to') from exc
    lock_path = path / LOCK_NAME
    holder = dict(command=f'bioconv {command}', pid=os.getpid(), host=socket.gethostname(),
                  started=datetime.datetime.now().astimezone().isoformat(timespec='seconds'))
    lock = _new_lock(lock_path)
    held = RunFolderLock(path=path, lock_path=lock_path, holder=holder)
    try:
        try:
            lock.acquire()
        except filelock.Timeout:  # checked first: it is an OSError (TimeoutError) too
            raise _busy(path) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
                raise UserValueError(f'cannot lock {path} ({exc.strerror or exc}); choose a folder you can '
                                     'write to') from exc
            warnings.warn(f'{path}: this file system has no file locks, so nothing stops a second run from '
                          'writing into this folder at the same time', RuntimeWarning, stacklevel=3)
            held.locked = False
        try:
            write_json(path / HOLDER_NAME, holder)
            yield held
        finally:
            if held.locked:
                # unlinked while still held: a process that opens the name from now on makes a new file and may
                # lock it before our release, but by then we write nothing more here
                for name in (HOLDER_NAME, LOCK_NAME):
                    (path / name).unlink(missing_ok=True)
                lock.release()
    finally:
        _remove_if_empty(created)


def _busy(path: Path) -> RunFolderBusyError:
    holder = read_holder(path)
    return RunFolderBusyError(
        f'{path} is in use by {_holder_text(holder)}; one folder holds one run. Wait for it to finish, or use '
        'another folder (--output-dir)', holder)


def _remove_if_empty(created: List[Path]) -> None:
    """Remove the folders :func:`hold_run_folder` created when nothing was put in them."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): keep it and its parents
            return


def mark_run_folder(path: PathLike, command: str = 'train') -> None:
    """Mark ``path`` as a run folder written by ``bioconv <command>`` (once; an existing marker is kept)."""
    marker = Path(path) / MARKER_NAME
    if not marker.exists():
        write_json(marker, dict(written_by=f'bioconv {command}', created=datetime.datetime.now().astimezone()
                                .isoformat(timespec='seconds')))


def is_run_folder(path: PathLike) -> bool:
    """Whether ``path`` carries the run marker (:func:`mark_run_folder`)."""
    return (Path(path) / MARKER_NAME).is_file()


def foreign_entries(path: PathLike, ours: Iterable[str] = ()) -> List[str]:
    """The names in ``path`` that are neither our bookkeeping (lock, holder, marker, temporary files of
    interrupted writes) nor in ``ours``; [] for a folder that does not exist."""
    path, ours = Path(path), set(ours)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir()
                  if p.name not in BOOKKEEPING_NAMES and p.name not in ours and not is_temp_name(p.name))


def remove_stale_temps(path: PathLike) -> List[str]:
    """Remove the temporary files of writes a killed process left in ``path`` (call it while holding the
    folder: no other writer is then at work there). Returns their names."""
    removed = []
    for p in Path(path).iterdir():
        if is_temp_name(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p.name)
    return removed
