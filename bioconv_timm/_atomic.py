"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every file the package writes that someone may read while it is written, or that a crash must not truncate
(checkpoints, run metrics, result tables, submission zips, compiled kernels), goes through :func:`atomic_path`.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

__all__ = ['atomic_path', 'atomic_write_text']


@contextlib.contextmanager
def atomic_path(path: Union[str, Path], mode: int = 0o644) -> Iterator[Path]:
    """Yield a fresh temporary path in ``path``'s folder; write the file there. When the block ends without an
    error the temporary file replaces ``path`` in one ``os.replace``; on an error it is removed and ``path`` is
    left as it was. The file gets ``mode`` (``mkstemp`` would leave it 0600)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
