"""The one writer of the package's files: a reader (or a crash) sees the old file or the new one, never half of one.

Every file the package writes that someone may read while it is written, or that a crash must not truncate
(checkpoints, run metrics, result tables, submission zips, compiled kernels), goes through :func:`atomic_path` or
one of the helpers built on it. A write goes to a unique temporary name in the target's folder, is flushed and
fsynced, then ``os.replace``-d over the old file (which is never unlinked first), and the folder is fsynced so the
rename itself survives a power cut.

A full disk (``ENOSPC``, or a quota: ``EDQUOT``) is an ordinary error here: the partial temporary file is removed,
the old file is left as it was, and :class:`DiskFullError` (a :class:`~bioconv_timm.errors.BioconvError`) names
the file, the free space and about how much the write needs.

JSON is written with ``allow_nan=False`` (:func:`write_json`): NaN and infinity are not JSON, and a file with them
cannot be read by most tools.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator, List, Optional, Union

from .errors import UserRuntimeError, UserValueError

__all__ = ['atomic_path', 'atomic_open', 'atomic_write_text', 'write_json', 'save_torch', 'replace_file',
           'duplicate_file', 'fsync_dir', 'DiskFullError', 'NonFiniteJSONError', 'format_bytes', 'is_temp_name',
           'TEMP_SUFFIX']

PathLike = Union[str, Path]
TEMP_SUFFIX = '.tmp'  # temporary files are '.<target name>.<random>.tmp' in the target's folder
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(UserRuntimeError):
    """No space (or no quota) left while writing ``path``; nothing was written and the old file is unchanged.

    ``needed`` is about how many bytes the write needs, ``free`` how many the device had left."""

    def __init__(self, message: str, path: Path, needed: int, free: Optional[int]) -> None:
        super().__init__(message)
        self.path, self.needed, self.free = path, needed, free


class NonFiniteJSONError(UserValueError):
    """A value that JSON cannot hold (NaN or infinity) was about to be written; nothing was written."""


def format_bytes(n: Optional[int]) -> str:
    """``10.7 MB``-style size (decimal units, as ``df -H``); ``?`` for an unknown size."""
    if n is None:
        return '?'
    for unit in ('B', 'kB', 'MB', 'GB', 'TB'):
        if abs(n) < 1000 or unit == 'TB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1000
    return f'{n} B'  # unreachable


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of this module's temporary files (a write a killed process left behind)."""
    return name.startswith('.') and name.endswith(TEMP_SUFFIX) and name.count('.') >= 3


def _no_space_error(exc: BaseException) -> Optional[OSError]:
    """The ENOSPC/EDQUOT OSError behind ``exc``, if any (torch.save, for one, wraps it in a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _free_bytes(folder: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(path: Path, needed: int) -> DiskFullError:
    free = _free_bytes(path.parent)
    kept = (f'the previous {path.name} is unchanged' if path.exists() else f'no {path.name} was written')
    return DiskFullError(
        f'no space left on the device writing {path} (it needs about {format_bytes(needed)}, '
        f'{format_bytes(free)} free): the partial file was removed and {kept}. Free some space (or write '
        'elsewhere) and run the command again.', path, needed, free)


def fsync_dir(folder: PathLike) -> None:
    """Make a rename (or a new name) in ``folder`` durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync folders; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(src: PathLike, dst: PathLike) -> None:
    """``os.replace(src, dst)`` (atomic: ``dst`` is never missing) and fsync of ``dst``'s folder."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


@contextlib.contextmanager
def atomic_path(path: PathLike, mode: int = 0o644, size_hint: Optional[int] = None) -> Iterator[Path]:
    """Yield a fresh temporary path in ``path``'s folder; write the file there. When the block ends without an
    error the file is fsynced and replaces ``path`` in one ``os.replace``, and the folder is fsynced; on an error
    it is removed and ``path`` is left as it was. The file gets ``mode`` (``mkstemp`` would leave it 0600).

    Raises:
        DiskFullError: the device (or quota) was full; ``size_hint`` (bytes) is what the message says the write
            needs, else the larger of what was written and the old file's size.
    """
    path = Path(path)
    tmp: Optional[Path] = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, mode)
        replace_file(tmp, path)
    except BaseException as exc:
        no_space = _no_space_error(exc)
        if no_space is None:
            raise
        written = tmp.stat().st_size if tmp is not None and tmp.exists() else 0
        old = path.stat().st_size if path.exists() else 0
        raise _disk_full(path, size_hint or max(written, old)) from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = 'w', size_hint: Optional[int] = None,
                **open_kwargs: Any) -> Iterator[io.IOBase]:
    """``open(path, mode)`` whose content replaces ``path`` only when the block ends without an error
    (:func:`atomic_path`); the file is flushed and fsynced before the rename."""
    if mode not in ('w', 'wb'):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path, size_hint=size_hint) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
        f.flush()


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_open(path, 'w') as f:
        f.write(text)


def _non_finite_paths(obj: Any, where: str = '') -> List[str]:
    """Where (``a.b[2]``) ``obj`` holds a NaN or an infinity."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [where or '(the value)']
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _non_finite_paths(v, f'{where}.{k}' if where else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _non_finite_paths(v, f'{where}[{i}]')]
    return []


def write_json(path: PathLike, obj: Any, indent: Optional[int] = 2) -> None:
    """``obj`` as JSON (strict: no NaN or infinity) in ``path``, atomically, with a final newline.

    Raises:
        NonFiniteJSONError: ``obj`` holds NaN or an infinity (named by key); nothing was written.
    """
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError as exc:
        bad = _non_finite_paths(obj)
        if not bad:
            raise
        raise NonFiniteJSONError(
            f'{path} was not written: {", ".join(bad[:5])} is not a finite number, which JSON cannot hold. '
            'The run diverged (a lower learning rate usually helps) or a setting is NaN/infinite.') from exc
    atomic_write_text(path, text + '\n')


class _CountingWriter(io.RawIOBase):
    """A write-only file that remembers the OSError its writes raised (torch.save wraps it in a RuntimeError
    that loses the errno) and counts the bytes written."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self.f, self.written, self.error = f, 0, None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            n = self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.written += n if n is not None else len(data)
        return n

    def flush(self) -> None:
        self.f.flush()


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in a nested dict/list (what ``torch.save`` of it will take, roughly)."""
    import torch
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    if isinstance(obj, (str, bytes)):
        return len(obj)
    return 8


def save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_open`).

    Raises:
        DiskFullError: the device filled up; the message says about how much the file needs.
    """
    import torch
    with atomic_open(path, 'wb', size_hint=tensor_bytes(obj) + 4096) as f:
        writer = _CountingWriter(f)
        try:
            torch.save(obj, writer)
        except RuntimeError as exc:
            if writer.error is not None and exc.__context__ is not writer.error:
                raise writer.error from exc  # keep the errno for atomic_path
            raise
        writer.flush()


def duplicate_file(src: PathLike, dst: PathLike) -> None:
    """``dst`` becomes a copy of ``src`` in one ``os.replace`` (a hard link where the file system allows, else
    a copy): ``dst`` is never missing, as it would be with unlink-then-link."""
    src, dst = Path(src), Path(dst)
    tmp_name = dst.parent / f'.{dst.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}'
    try:
        os.link(src, tmp_name)
    except OSError as exc:
        if _no_space_error(exc):
            raise _disk_full(dst, src.stat().st_size) from exc
        with atomic_open(dst, 'wb', size_hint=src.stat().st_size) as out, open(src, 'rb') as inp:
            shutil.copyfileobj(inp, out)
        return
    try:
        replace_file(tmp_name, dst)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
