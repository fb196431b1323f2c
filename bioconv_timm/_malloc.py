"""glibc malloc settings for CPU training of LC models, and what allocator this process runs under.

With its defaults, glibc's malloc serves every block above a threshold (128 KiB, raised dynamically up to
32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, and trims freed memory at the top of the heap back
to the OS. An LC model allocates weight gradients of tens to hundreds of MiB every training step, so each
step maps them, page-faults and zero-fills them, and unmaps them again. Keeping large blocks in the heap
and never trimming it (:data:`MALLOPT`) lets the next step reuse the same memory.

``bioconv`` commands apply this themselves (``bioconv_timm.cli.main`` calls :func:`tune_this_process`): where
the C library is glibc, ``GLIBC_TUNABLES`` sets no ``glibc.malloc.*`` tunable, ``LD_PRELOAD`` names no other
allocator and ``BIOCONV_MALLOC_TUNING`` is not ``0``, they call ``mallopt`` before building anything
(:func:`tuning_plan` is that decision). ``mallopt`` acts on the running process, so nothing is re-executed.
Your own scripts get the same by starting Python with :data:`GLIBC_TUNABLES_LINE` in the environment::

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295 python train.py

The price: the process keeps its peak heap until it exits (nothing is handed back to the OS in between).
"""
from __future__ import annotations

import ctypes
import os
import re
from typing import Dict, Mapping, Optional

__all__ = ['OPT_OUT', 'MALLOPT', 'GLIBC_TUNABLES_LINE', 'glibc_version', 'preloaded_allocator',
           'tuning_plan', 'tune_this_process', 'describe']

OPT_OUT = 'BIOCONV_MALLOC_TUNING'   # '0' (or off/no/false): bioconv commands leave malloc as it is
GLIBC_TUNABLES_LINE = 'glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295'

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
INT_MAX = 2 ** 31 - 1
# What bioconv commands set: no mmap'd chunks (every block comes from the heap and is reused after free), and
# a trim threshold of 2 GiB (mallopt takes an int), so freed heap memory is not handed back to the OS.
MALLOPT: Dict[str, int] = {'M_MMAP_MAX': 0, 'M_TRIM_THRESHOLD': INT_MAX}
_PARAMS = {'M_MMAP_MAX': M_MMAP_MAX, 'M_TRIM_THRESHOLD': M_TRIM_THRESHOLD}

_ALLOCATOR = re.compile(r'(tcmalloc|jemalloc|mimalloc|snmalloc|tbbmalloc|hoard|malloc)', re.I)
_OFF = ('0', 'off', 'no', 'false')
_PROBE_BYTES = 64 << 20   # above glibc's largest dynamic mmap threshold (32 MiB)

_applied: Optional[Dict[str, int]] = None   # what tune_this_process set in this process


def glibc_version() -> Optional[str]:
    """This process's glibc version (``'2.36'``), or None where the C library is not glibc (musl, macOS)."""
    try:
        text = os.confstr('CS_GNU_LIBC_VERSION') or ''
    except (AttributeError, ValueError, OSError):
        return None
    name, _, version = text.partition(' ')
    return version if name == 'glibc' and version else None


def preloaded_allocator(ld_preload: str) -> Optional[str]:
    """The file name of an allocator library in an ``LD_PRELOAD`` value (tcmalloc, jemalloc, ...), else None."""
    for entry in re.split(r'[\s:]+', ld_preload or ''):
        name = os.path.basename(entry)
        if name and _ALLOCATOR.search(name):
            return name
    return None


def _user_malloc_tunables(environ: Mapping[str, str]) -> bool:
    return 'glibc.malloc.' in environ.get('GLIBC_TUNABLES', '')


def tuning_plan(environ: Mapping[str, str], glibc: Optional[str]) -> Optional[Dict[str, int]]:
    """The ``mallopt`` settings a ``bioconv`` command applies in a process with environment ``environ`` and
    glibc version ``glibc`` (None: not glibc), or None to leave malloc alone: not glibc, the user's
    ``GLIBC_TUNABLES`` sets malloc tunables, ``LD_PRELOAD`` loads another allocator, or ``BIOCONV_MALLOC_TUNING``
    is ``0``/``off``/``no``/``false``."""
    if not glibc:
        return None
    if environ.get(OPT_OUT, '').strip().lower() in _OFF:
        return None
    if _user_malloc_tunables(environ) or preloaded_allocator(environ.get('LD_PRELOAD', '')):
        return None
    return dict(MALLOPT)


def _libc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def tune_this_process(environ: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, int]]:
    """Apply :func:`tuning_plan` to this process with ``mallopt``; returns what was set (None: nothing).
    Blocks allocated before the call keep their placement; everything allocated after follows the settings."""
    global _applied
    plan = tuning_plan(os.environ if environ is None else environ, glibc_version())
    libc = _libc() if plan else None
    if plan is None or libc is None or not hasattr(libc, 'mallopt'):
        return None
    done = {name: value for name, value in plan.items() if libc.mallopt(_PARAMS[name], value) == 1}
    _applied = done or None
    return _applied


def _loaded_allocator() -> Optional[str]:
    """The file name of a non-glibc allocator library mapped into this process, if any."""
    try:
        with open('/proc/self/maps') as f:
            maps = f.read()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split()
        name = os.path.basename(fields[5]) if len(fields) >= 6 else ''
        if name.startswith('lib') and _ALLOCATOR.search(name):
            return name
    return None


def _large_blocks() -> Optional[str]:
    """Where glibc malloc puts a 64 MiB block right now: ``'mmap'`` (its own mapping, unmapped on free:
    the default) or ``'heap'`` (kept for reuse after free). Allocated and freed untouched, so it costs no
    memory."""
    libc = _libc()
    info = getattr(libc, 'mallinfo2', None) or getattr(libc, 'mallinfo', None)
    if libc is None or info is None:
        return None
    field = ctypes.c_size_t if getattr(libc, 'mallinfo2', None) is not None else ctypes.c_int

    class MallInfo(ctypes.Structure):
        _fields_ = [(n, field) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks',
                                         'uordblks', 'fordblks', 'keepcost')]

    info.restype = MallInfo
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = info().hblks
    block = libc.malloc(_PROBE_BYTES)
    if not block:
        return None
    try:
        return 'mmap' if info().hblks > before else 'heap'
    finally:
        libc.free(block)


def describe(environ: Optional[Mapping[str, str]] = None) -> dict:
    """What allocator this process runs under, for benchmark reports: ``name``, ``setting`` (``'bioconv
    mallopt'``, ``'GLIBC_TUNABLES'``, ``'default'``, ``'opted out'``), the ``GLIBC_TUNABLES`` value, the
    ``mallopt`` values bioconv set, ``large_blocks`` (glibc: ``'mmap'`` or ``'heap'``, probed now) and a one-line
    ``summary``."""
    environ = os.environ if environ is None else environ
    other = _loaded_allocator()
    glibc = glibc_version()
    tunables = environ.get('GLIBC_TUNABLES') or None
    record = dict(name=other or (f'glibc {glibc} malloc' if glibc else 'system malloc'), preloaded=other,
                  glibc_tunables=tunables, mallopt=dict(_applied) if _applied else None, large_blocks=None)
    if other:
        record.update(setting='preloaded', summary=f'{other} (preloaded)')
        return record
    if glibc:
        record['large_blocks'] = _large_blocks()
    kept = {'heap': 'large blocks kept in the heap', 'mmap': 'large blocks mmapped and returned to the OS on free'}
    where = kept.get(record['large_blocks'] or '', 'large-block placement unknown')
    if _applied:
        settings = ', '.join(f'{k}={v}' for k, v in _applied.items())
        record.update(setting='bioconv mallopt', summary=f"{record['name']}, tuned by bioconv (mallopt {settings}): "
                                                         f'{where}')
    elif tunables and _user_malloc_tunables(environ):
        record.update(setting='GLIBC_TUNABLES', summary=f"{record['name']}, GLIBC_TUNABLES={tunables}: {where}")
    elif environ.get(OPT_OUT, '').strip().lower() in _OFF:
        record.update(setting='opted out', summary=f"{record['name']}, default settings ({OPT_OUT}="
                                                   f"{environ[OPT_OUT]}): {where}")
    else:
        record.update(setting='default', summary=f"{record['name']}, default settings: {where}")
    return record
