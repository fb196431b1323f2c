"""Checks of a path the user names for us to write, made before any work starts.

A bad output path (a file where a folder is wanted, a folder where a file is wanted, a folder that cannot be
written, such as one under ``/proc``) should cost the user one line, not a traceback after minutes of work. These
checks *try* the write: they create and remove a temporary entry in the nearest folder that exists, because
permission bits do not tell (``root`` passes ``os.access`` on ``/proc``, where nothing can be created). Nothing is
left behind: a check never creates the path itself or its missing parent folders.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Type, Union

from .errors import BioconvError

__all__ = ['check_output_folder', 'check_output_file']

PathLike = Union[str, 'os.PathLike[str]']


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``.`` for a relative path whose parents are all new)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path('.')


def _probe_writable(folder: Path, target: Path, error: Type[BioconvError], flag: str) -> None:
    """Raise ``error`` unless a file can be created (and is then removed) in the existing ``folder``."""
    try:
        fd, name = tempfile.mkstemp(prefix='.bioconv-write-check-', dir=folder)
    except OSError as exc:
        raise error(f'{flag}{target}: cannot write in {folder} ({exc.strerror or exc}); pass a path in a folder '
                    'you can write to.') from exc
    os.close(fd)
    os.unlink(name)


def _check_ancestors(path: Path, error: Type[BioconvError], flag: str) -> Path:
    """The nearest existing ancestor of ``path``'s missing part, which must be a writable folder."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise error(f'{flag}{path}: {base} is a file, not a folder, so nothing can be created under it; pass a '
                    'path whose parent is a folder (or can be created).')
    _probe_writable(base, path, error, flag)
    return base


def check_output_folder(path: PathLike, error: Type[BioconvError], flag: str = '',
                        must_be_empty: bool = False) -> Path:
    """Check that ``path`` can be used as an output folder: it is a folder, or does not exist and can be created
    (its nearest existing ancestor is a writable folder); with ``must_be_empty``, an existing folder holds nothing.

    ``error`` is the :class:`~bioconv_timm.errors.BioconvError` subclass to raise, ``flag`` the option that named
    the path (e.g. ``'--output-dir '``), quoted at the start of the message. Returns ``Path(path)``.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise error(f'{flag}{out} is a file, not a folder: pass a new or existing folder to write into.')
    if out.is_dir():
        if must_be_empty:
            present = sorted(p.name for p in out.iterdir())
            if present:
                shown = ', '.join(present[:5]) + (f' (+{len(present) - 5} more)' if len(present) > 5 else '')
                raise error(f'{flag}{out} is not empty ({shown}): pass an empty or new folder.')
        _probe_writable(out, out, error, flag)
    else:
        _check_ancestors(out, error, flag)
    return out


def check_output_file(path: PathLike, error: Type[BioconvError], flag: str = '', example: str = 'out.zip') -> Path:
    """Check that the file ``path`` can be written: it is not a folder, and its folder exists and is writable
    or can be created. ``example`` is a file name the message suggests when ``path`` is a folder."""
    out = Path(path)
    if out.is_dir():
        raise error(f'{flag}{out} is a folder: pass the name of the file to write, e.g. {out / example}.')
    _check_ancestors(out, error, flag)
    return out
